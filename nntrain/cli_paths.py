"""The path type of every command-line argument and option that names a file or
folder: a leading ``~`` is expanded as a shell expands it, also where the shell
does not (``--out=~/runs/x``, a quoted ``'~/data'``), as the config's path keys
are (config_checks.path_text): both through fileio.expand_home."""

import os

import click

from nntrain.errors import BadInputError
from nntrain.fileio import expand_home

# What to give where a folder was given for a config file.
CONFIG_FILE_FIX = "give the path of a YAML config file"


class UserPath(click.Path):
    """click.Path with ``~`` and ``~user`` expanded first; an unknown user's is
    refused as a usage error naming the option (exit 2), as the config refuses
    it, rather than taken as a folder named ``~user``. ``folder_fix`` says what
    to give instead of a file where a folder is wanted, and ``file_fix`` instead
    of a folder where a file is (Click's own messages name the path only)."""

    def __init__(self, *args, folder_fix: str | None = None,
                 file_fix: str = "give the path of a file", **kwargs):
        super().__init__(*args, **kwargs)
        self.folder_fix, self.file_fix = folder_fix, file_fix

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                value = expand_home(value)
            except BadInputError as error:
                self.fail(str(error), param, ctx)
        if (self.folder_fix and not self.file_okay and isinstance(value, str)
                and os.path.isfile(value)):
            self.fail(f"{value} is a file, not a folder; {self.folder_fix}", param,
                      ctx)
        if not self.dir_okay and isinstance(value, str) and os.path.isdir(value):
            self.fail(f"{value} is a folder, not a file; {self.file_fix}", param, ctx)
        separators = tuple(filter(None, (os.sep, os.altsep)))
        if not self.dir_okay and isinstance(value, str) and value.endswith(separators):
            # A folder's mark, which pathlib drops (Path("o.npz/") is o.npz): the
            # file would be written where a folder was meant.
            self.fail(f"{value} ends with '{value[-1]}', which names a folder;"
                      f" {self.file_fix}", param, ctx)
        return super().convert(value, param, ctx)
