"""The path type of every command-line argument and option that names a file or
folder: a leading ``~`` is expanded as a shell expands it, also where the shell
does not (``--out=~/runs/x``, a quoted ``'~/data'``), as the config's path keys
are (config.path_text)."""

import os

import click


class UserPath(click.Path):
    """click.Path with ``~`` and ``~user`` expanded first (an unknown user's is
    left as written, as the shell leaves it)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            value = os.path.expanduser(value)
        return super().convert(value, param, ctx)
