"""Checks of the Python API's arguments, made before any work: a TypeError for a
value of the wrong type (a truthy "no" for a flag, None for a path), and a
BadInputError for a path that can name no file (empty, or holding a NUL), which
the command line cannot be given."""

import os

import numpy as np

from nntrain.errors import BadInputError
from nntrain.fileio import expand_home


def check_path_argument(name: str, value, give: str) -> None:
    """A TypeError unless ``value`` is a path (a str or os.PathLike), and a
    BadInputError for an empty one, which would mean the current folder, or one
    holding a NUL; ``give`` says what to give instead."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} is {type(value).__name__}; give {give}")
    if str(value) == "":
        raise BadInputError(f"{name} is empty; give {give}")
    if "\x00" in str(value):
        raise BadInputError(f"{name} {str(value)!r} holds a NUL character (\\x00),"
                            f" which no path can; give {give}")


def path_argument(name: str, value, give: str) -> str:
    """``value`` checked as check_path_argument does, with a leading ``~`` or
    ``~user`` expanded as the shell expands it for the command line."""
    check_path_argument(name, value, give)
    return expand_home(os.fspath(value))


def check_flag(name: str, value) -> None:
    """A TypeError unless ``value`` is a bool: a truthy "no" must not pass."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} is {value!r}; give True or False")
