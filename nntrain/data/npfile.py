"""Reading a user's .npy / .npz file safely: no pickle, and one clear error for every
way the file can be wrong."""

from pathlib import Path

import numpy as np

from nntrain.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def load_numpy_file(path, what="input file", kinds=".npy/.npz") -> np.ndarray | dict:
    """The array of a .npy file, or {name: array} of an .npz; a DataError otherwise.

    ``what`` and ``kinds`` word the errors: "npz file not found: ...".
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; give an .npy or .npz file") from None
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror})") from None
    if not (magic.startswith(NPY_MAGIC) or magic.startswith(ZIP_MAGIC)):
        raise DataError(f"{path} is not a readable {kinds} file (it is neither .npy"
                        " nor .npz); save arrays with np.save or np.savez")

    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except ValueError as error:
        if "pickle" in str(error):
            raise DataError(f"{path} holds object arrays, which nntrain refuses to"
                            " load (they could run code); save numeric arrays") \
                from None
        raise DataError(f"{path} is not a readable {kinds} file ({error})") from None
    except Exception as error:  # a damaged zip fails in many ways; all mean the same
        raise DataError(f"{path} is not a readable {kinds} file ({error}); it may be"
                        " truncated or corrupt") from None
