"""The path type of every command-line argument and option that names a file or
folder: a leading ``~`` is expanded as a shell expands it, also where the shell
does not (``--out=~/runs/x``, a quoted ``'~/data'``), as the config's path keys
are (config_checks.path_text): both through fileio.expand_home."""

import os

import click

from nntrain.errors import BadInputError
from nntrain.fileio import expand_home


class UserPath(click.Path):
    """click.Path with ``~`` and ``~user`` expanded first; an unknown user's is
    refused as a usage error naming the option (exit 2), as the config refuses
    it, rather than taken as a folder named ``~user``. ``folder_fix`` says what
    to give instead of a file where a folder is wanted (Click's own message
    names the file only)."""

    def __init__(self, *args, folder_fix: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.folder_fix = folder_fix

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
        return super().convert(value, param, ctx)
