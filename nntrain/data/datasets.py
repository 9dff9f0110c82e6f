"""Datasets: where the arrays come from and how they are split.

Shapes: N samples, D features per sample (images are flattened row by row, and
``input_shape`` keeps their (height, width) for plots). Labels are ``int64`` in
``[0, C)`` for C classes.

Splits:
- test: the official test split where the dataset has one (Fashion-MNIST, MNIST, an
  npz with ``X_test``); for ``digits`` a fixed rule that never depends on ``seed``:
  every fifth image (index % 5 == 0, 360 images) is a test image.
- validation: an npz's ``X_val`` when given, otherwise ``data.validation`` samples
  (a count, or a fraction) drawn from the training split with the run's seed.
"""

import os
import unicodedata
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from nntrain.data.idx import load_idx_pair, same_data
from nntrain.data.npfile import load_numpy_file
from nntrain.errors import DataError, DataLocationError, DataWarning
from nntrain.random import SPLIT_STREAM, generator

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(digit) for digit in range(10))

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Where a system package installs datasets (Debian's dataset-fashion-mnist).
SYSTEM_DATA = Path("/usr/share/datasets")

# Every fifth digits image is a test image: fixed, documented, independent of seed.
DIGITS_TEST_EVERY = 5


@dataclass
class Dataset:
    """Train, validation and test splits of one dataset, not yet preprocessed.

    X_*: (N, D) arrays as stored (uint8 pixels, or the npz's own dtype);
    y_*: (N,) int64 labels; ``class_names``: C names; ``input_shape``: the shape of
    one sample before flattening, for example (28, 28).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    source: str = ""  # where the arrays were read, for messages

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    def release_features(self) -> None:
        """Replace the raw feature arrays by empty (0, D) ones, keeping the labels,
        the shapes and the class names: for when only preprocessed copies are
        needed."""
        for name in ("X_train", "X_val", "X_test"):
            X = getattr(self, name)
            setattr(self, name, X[:0].copy())

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The (X, y) pair of split ``name``: train, val or test."""
        return {
            "train": (self.X_train, self.y_train),
            "val": (self.X_val, self.y_val),
            "test": (self.X_test, self.y_test),
        }[name]


def load_dataset(data_config: dict, seed: int, dtype=None,
                 given_as: str | None = "data.path",
                 spec: dict | None = None, training: bool = False) -> Dataset:
    """Load the dataset a config's ``data`` section names, with its three splits.

    ``dtype``: the float type training will cast the features to (train.dtype);
    features beyond its range are refused. None skips that check.
    ``given_as``: how data.path was given now, for errors ("data.path", "--data",
    "--set data.path"); None when it is the place a checkpoint's run found its
    data, given by no one now (see find_idx_folder). ``spec``: the data spec
    of the checkpoint the data is loaded for; data with another number of training
    samples is refused before data.validation is drawn from it. ``training``: a
    new run will train on the training split, which must then hold 2 classes
    (eval, a resumed run and the checks use data that was accepted before, or
    need no 2 classes).
    """
    name = data_config["name"]
    recorded = spec.get("path") if spec else None
    if name == "digits":
        if data_config["path"]:
            raise DataError("the digits data is bundled with nntrain: data.path (and"
                            " --data) apply to fashion-mnist, mnist and npz only;"
                            " remove it")
        parts = _load_digits()
    elif name == "npz":
        parts = _load_npz(data_config["path"], dtype,
                          spec.get("class_names") if spec else None)
    else:
        parts = _load_idx_dataset(name, data_config["path"], given_as, recorded)

    # An npz without X_test gives the fixed test rows out of its training rows.
    test_drawn = parts.get("X_test") is None
    if test_drawn:
        parts.update(_npz_fixed_test_split(parts))
    if spec is not None:
        _check_before_split(parts, spec)
    validation = None
    if parts.get("X_val") is None:
        validation = data_config["validation"]
        parts.update(_hold_out(parts, validation, seed, test_drawn))
    if training:
        _check_classes_left(parts, test_drawn, validation)
    return Dataset(**parts)


def check_location(data_config: dict) -> None:
    """Raise the error ``load_dataset`` would give when the data cannot be found
    where the config says (no data.path for digits, a readable npz file of the
    arrays it needs, a folder of IDX files), without reading IDX images."""
    name, path = data_config["name"], data_config["path"]
    if name == "digits":
        if path:
            load_dataset(data_config, 0)  # its own refusal of data.path
    elif name == "npz":
        _load_npz(path)  # an npz is read whole: this is its loader's own check
    else:
        find_idx_folder(name, path)


# The fix for data that is not the data a checkpoint was trained on.
OTHER_DATA_FIX = "point --data at the dataset it was trained on"


def _check_before_split(parts: dict, spec: dict) -> None:
    """Refuse data other than the checkpoint's by its shape, then by the size of the
    training split it drew its validation split from: data.validation, which the
    user of a checkpoint cannot change, may not even fit in other data.
    (prepare.prepare_data compares each split's samples once they are drawn.)"""
    fix = OTHER_DATA_FIX
    found = (parts["X_train"].shape[1], len(parts["class_names"]))
    if found != (spec["num_features"], spec["num_classes"]):
        raise DataLocationError(
            f"the data has {found[0]} features and {found[1]} classes, the checkpoint"
            f" was trained on {spec['num_features']} and"
            f" {spec['num_classes']}", fix, missing=False)
    if parts.get("X_val") is not None:
        return  # an npz's own validation split: no split to draw
    sizes = spec["sizes"]
    expected, found = sizes["train"] + sizes["val"], len(parts["y_train"])
    if found == sizes["train"]:
        # As many as the checkpoint's training split alone: most likely a file
        # that lacks the X_val and y_val the run was given (the checkpoint does
        # not record whether its run drew the validation split or was given it).
        raise DataLocationError(
            f"the data in {parts['source']} holds {found} training samples, the"
            f" checkpoint's training split alone, and no X_val (its run also had"
            f" {sizes['val']} validation samples: an X_val and y_val this file"
            " lacks?)", fix, missing=False)
    if found != expected:
        raise DataLocationError(
            f"the data in {parts['source']} is not the data the checkpoint was"
            f" trained on (it holds {found} training samples, the checkpoint's"
            f" {expected})", fix, missing=False)


def _load_digits() -> dict:
    """The UCI handwritten digits (1,797 8x8 images, pixels 0..16) in the package."""
    with resources.files("nntrain.data").joinpath("digits.npz").open("rb") as file:
        with np.load(file, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    X = images.reshape(len(images), -1)
    y = labels.astype(np.int64)
    is_test = np.arange(len(X)) % DIGITS_TEST_EVERY == 0
    return {
        "X_train": X[~is_test], "y_train": y[~is_test],
        "X_test": X[is_test], "y_test": y[is_test],
        "class_names": DIGIT_CLASSES, "input_shape": images.shape[1:],
        "source": "the bundled digits",
    }


def search_paths(name: str, path: str | None) -> list[Path]:
    """Folders searched, in order, for the IDX files of dataset ``name``: ``path``
    (data.path), $NNTRAIN_DATA/<name> (when set), ~/.cache/nntrain/<name>,
    /usr/share/datasets/<name>. A data.path given now is the only place looked
    at (find_idx_folder)."""
    places = [Path(path).expanduser()] if path else []
    if os.environ.get("NNTRAIN_DATA"):
        places.append(Path(os.environ["NNTRAIN_DATA"]).expanduser() / name)
    places.append(Path.home() / ".cache" / "nntrain" / name)
    places.append(SYSTEM_DATA / name)
    return list(dict.fromkeys(places))


def find_idx_folder(name: str, path: str | None, given_as: str | None = "data.path",
                    recorded: str | None = None) -> Path:
    """The folder whose four IDX files (gzipped or not) are read.

    A ``path`` given now (``given_as`` names how: "data.path", "--data") must hold
    them: a place the user names is never swapped for another copy. ``given_as``
    None: ``path`` is where a checkpoint's run found the data, which may have moved
    since; the other places are searched then, with a warning. ``recorded``, that
    place when ``path`` overrides it, is where the error's hint looks first.
    """
    if path and given_as:
        folder = Path(path).expanduser()
        if not _holds_idx_files(folder):
            raise _not_an_idx_folder(name, folder, given_as, recorded)
        return folder
    places = search_paths(name, path)
    folder = _first_idx_folder(places)
    if folder is None:
        searched = ", ".join(str(place) for place in places)
        download = f"run `nntrain data download {name}`"
        raise DataLocationError(
            f"{name} not found (searched: {searched})", f"{download}, or set"
            " data.path to the folder holding its four IDX files", also=download
        )
    if path and folder != places[0]:
        warnings.warn(DataWarning(
            f"{name}: {places[0]}, where the run found its data, no longer holds"
            f" the four IDX files; using the copy in {folder}"), stacklevel=2)
    else:
        # A download cut short, or files moved by hand, in a folder searched
        # first: the user would expect that copy to be the one read.
        for place in places[:places.index(folder)]:
            missing = [stem for stem in _idx_stems() if not _idx_file(place, stem)]
            if place.is_dir() and len(missing) < len(_idx_stems()):
                warnings.warn(DataWarning(
                    f"{name}: {place} lacks {', '.join(missing)} (or .gz); using the"
                    f" copy in {folder} (`nntrain data download {name} --dir"
                    f" {place}` completes it)"), stacklevel=2)
    return folder


def _first_idx_folder(places) -> Path | None:
    return next((folder for folder in places if _holds_idx_files(folder)), None)


def _idx_stems() -> list[str]:
    return [stem for pair in IDX_FILES.values() for stem in pair]


def _holds_idx_files(folder: Path) -> bool:
    return all(_idx_file(folder, stem) for stem in _idx_stems())


def _not_an_idx_folder(name: str, folder: Path, given_as: str,
                       recorded: str | None) -> DataError:
    """The error for a folder the user gave that does not hold the IDX files: what
    is wrong with it, the files wanted, and where a copy is if there is one."""
    missing = [stem for stem in _idx_stems() if not _idx_file(folder, stem)]
    if not folder.exists():
        problem = "does not exist"
    elif not folder.is_dir():
        problem = "is a file, not a folder"
    elif len(missing) == len(_idx_stems()):
        problem = "holds none of the IDX files"
    else:
        problem = f"lacks {', '.join(missing)} (or .gz)"
    # A folder or a pipe at a file's name is no file, but "lacks" alone would
    # leave the user looking at its name in a listing.
    in_the_way = [candidate.name for stem in missing
                  for candidate in (folder / f"{stem}.gz", folder / stem)
                  if candidate.exists() and not candidate.is_file()]
    if folder.is_dir() and in_the_way:
        problem += (f" ({', '.join(in_the_way)} there"
                    f" {'is' if len(in_the_way) == 1 else 'are'} not a regular file:"
                    " a folder, pipe or device)")
    copy = _first_idx_folder(search_paths(name, recorded))
    if copy is not None:
        other = f"drop {given_as} to use the copy in {copy}"
    else:
        other = f"run `nntrain data download {name}` and drop {given_as}"
    given = f"{given_as}={folder}" if given_as.startswith("--set") else (
        f"{given_as} {folder}")
    return DataError(
        f"{name}: {given} {problem}; point it at the folder holding the four IDX"
        f" files ({', '.join(_idx_stems())}, each may be gzipped), or {other}"
    )


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _chosen_idx_file(folder: Path, stem: str) -> Path:
    """The file read for ``stem``: the .gz when both it and the plain file exist.

    Both are there after `gunzip -k`, harmlessly, or when one was replaced or edited
    by hand. Then the folder holds two datasets under one name, and training on the
    one the user did not mean would spoil the run with nothing to show for it: a
    warning scrolls by unread, so differing copies are refused, equal ones used.
    """
    gzipped, plain = folder / f"{stem}.gz", folder / stem
    if gzipped.is_file() and plain.is_file() and not same_data(gzipped, plain):
        raise DataError(
            f"{plain} and {gzipped} hold different data (nntrain reads the .gz"
            " when both are there); remove or rename the one you do not mean to"
            " train on"
        )
    return _idx_file(folder, stem)


def _load_idx_dataset(name: str, path: str | None, given_as: str | None,
                      recorded: str | None) -> dict:
    folder = find_idx_folder(name, path, given_as, recorded)
    parts, shapes = {}, {}
    for split, (images_stem, labels_stem) in IDX_FILES.items():
        images_file = _chosen_idx_file(folder, images_stem)
        images, labels = load_idx_pair(images_file,
                                       _chosen_idx_file(folder, labels_stem))
        parts[f"X_{split}"] = images.reshape(len(images), -1)
        parts[f"y_{split}"] = labels.astype(np.int64)
        shapes[images_file] = images.shape[1:]
    _check_same_image_shape(shapes)
    input_shape = next(iter(shapes.values()))
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    _check_labels(parts, len(classes), folder)
    _check_two_classes(parts["y_train"], folder)
    source = str(folder) if path and given_as else _described(folder, name)
    return {**parts, "class_names": classes, "input_shape": input_shape,
            "source": source}


def _described(folder: Path, name: str) -> str:
    """The folder the search found, saying so when $NNTRAIN_DATA led to it: a user
    who set it long ago may not think of it when the data there is not the data
    expected."""
    variable = os.environ.get("NNTRAIN_DATA")
    if variable and folder == Path(variable).expanduser() / name:
        return f"{folder} (found through NNTRAIN_DATA)"
    return str(folder)


def _check_same_image_shape(shapes: dict) -> None:
    """Refuse train and test images of different sizes: the model takes one input
    width, and evaluating it on the test split would fail after training."""
    (train, train_shape), (test, test_shape) = shapes.items()
    if train_shape != test_shape:
        raise DataError(
            f"{train} holds images of {train_shape[0]}x{train_shape[1]} pixels but"
            f" {test} holds {test_shape[0]}x{test_shape[1]}; use the train and test"
            " files of one dataset"
        )


NPZ_KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "class_names")


def _load_npz(path: str | None, dtype=None, recorded_names=None) -> dict:
    """A user's arrays: X_train, y_train and optionally the val and test pairs
    (load_dataset draws the test split of an npz without X_test).
    ``recorded_names``: the class names a checkpoint the data is loaded for
    recorded, or None (see _npz_class_names)."""
    if not path:
        raise DataError("data.name is npz but data.path is not set; set it to the"
                        " .npz file in the config, or --set data.path=FILE")
    file = Path(path).expanduser()
    arrays = _read_npz_arrays(file)
    missing = [key for key in ("X_train", "y_train") if key not in arrays]
    if missing:
        raise DataError(f"{file} lacks {', '.join(missing)}; save them with np.savez")
    unknown = sorted(set(arrays) - set(NPZ_KEYS))
    if unknown:
        raise DataError(
            f"{file} holds unknown arrays {unknown}; expected names:"
            f" {', '.join(NPZ_KEYS)}"
        )

    parts = {}
    for split in ("train", "val", "test"):
        parts.update(_npz_pair(arrays, split, file))
    input_shape = parts["X_train"].shape[1:]
    for key in ("X_train", "X_val", "X_test"):
        if parts.get(key) is not None:
            parts[key] = _flat_features(parts[key], input_shape, key, file)
            _check_fits_dtype(parts[key], dtype, key, file)

    # The classes are those of y_train as given, counted before the fixed test rows
    # move out of it; a val or test label beyond them is refused below.
    class_names = _npz_class_names(arrays.get("class_names"), parts["y_train"], file,
                                   recorded_names)
    _check_two_classes(parts["y_train"], file)
    _check_labels(parts, len(class_names), file)
    # Cast only now: a uint64 label past int64's range would wrap to a negative one.
    for key in ("y_train", "y_val", "y_test"):
        if parts.get(key) is not None:
            parts[key] = parts[key].astype(np.int64)
    return {**parts, "class_names": class_names, "input_shape": input_shape,
            "source": str(file)}


# Unicode categories of characters no class name may hold: control characters (a
# newline, a tab, ESC) and line and paragraph separators.
CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


def _npz_class_names(names, y_train: np.ndarray, file: Path,
                     recorded=None) -> tuple[str, ...]:
    """The npz's class_names, or "0".."C-1" for C = the largest training label + 1.

    Bytes names (np.array([b"cat", ...])) are decoded from UTF-8. Names exactly
    as a checkpoint ``recorded`` them, flattened, pass as they are: checkpoints
    from before nntrain refused 2-D, repeated or blank names, or decoded bytes
    names (it recorded b'cat'), were trained on such data, and must still
    evaluate and resume on it. Other names are checked (and then refused as
    other data by prepare_data)."""
    if names is not None:
        kept = _as_recorded(names, recorded)
        if kept:
            return kept
        if names.ndim != 1:
            raise DataError(f"{file}: class_names has shape {names.shape}; save a"
                            " 1-D array of names, one per class")
        names = tuple(_name_text(name, index, file) for index, name in enumerate(names))
        if not names:
            raise DataError(f"{file}: class_names is empty; save one name per class,"
                            " or leave it out to number the classes 0..C-1")
        first = {}  # name -> the index it first appears at
        for index, name in enumerate(names):
            _check_class_name(name, index, first.setdefault(name, index), file)
        # Declared classes stand even when few have samples: the user said so.
        return names
    num_classes = _inferred_class_count(y_train, file)
    if recorded is None:  # data for a new run: a checkpoint's classes are settled
        _warn_of_empty_classes(y_train, num_classes, file)
    return tuple(str(label) for label in range(num_classes))


def _warn_of_empty_classes(y: np.ndarray, num_classes: int, file: Path) -> None:
    """A DataWarning when some of the classes 0..C-1 that the labels make have no
    training sample: the network still learns C classes, and eval shows the empty
    ones; labels numbered from 1 leave class 0 so."""
    empty = np.setdiff1d(np.arange(num_classes), y)
    if not empty.size:
        return
    shown = ", ".join(map(str, empty[:5])) + (", ..." if empty.size > 5 else "")
    which = (f"class {shown} has" if empty.size == 1 else
             f"{empty.size} classes ({shown}) have")
    fix = ("if the labels are numbered from 1, subtract 1" if empty.tolist() == [0]
           else "number the classes 0..C-1 without gaps")
    warnings.warn(DataWarning(
        f"{file}: {which} no training sample of the {num_classes} that y_train's"
        f" labels make (0..{num_classes - 1}); {fix}, or save class_names to"
        " declare every class"), stacklevel=4)


def _as_recorded(names: np.ndarray, recorded) -> tuple[str, ...] | None:
    """``names`` flattened, as text, when a checkpoint ``recorded`` them so (bytes
    decoded, or shown as b'cat' as nntrain once did); else None."""
    if recorded is None:
        return None
    flat = names.reshape(-1)
    forms = [tuple(str(name) for name in flat)]
    if names.dtype.kind == "S":
        try:
            forms.append(tuple(name.decode("utf-8") for name in flat))
        except UnicodeDecodeError:
            pass  # not UTF-8: no checkpoint could have recorded them decoded
    return next((form for form in forms if list(form) == list(recorded)), None)


def _name_text(name, index: int, file: Path) -> str:
    """Class ``name`` as text: bytes are decoded from UTF-8, numbers written out."""
    if not isinstance(name, bytes):
        return str(name)
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{file}: class_names[{index}] is {bytes(name)!r}, bytes"
                        " that are not UTF-8 text; save the names as strings"
                        " (np.array(['cat', 'dog', ...]))") from None


def _check_class_name(name: str, index: int, first: int, file: Path) -> None:
    """Refuse class ``name``, at ``index`` and first found at ``first``, when the
    tables eval prints and predict's CSV header (a column p_<name> per class)
    could not show it or tell it apart, or train.log could not hold it."""
    where = f"{file}: class_names[{index}] is {name!r}"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (U+D800 to U+DFFF): NumPy stores it, no UTF-8 file can.
        raise DataError(f"{where}, which holds a lone surrogate, a code point that"
                        " is no character: train.log and predict's CSV could not"
                        " hold it; save the names as valid text") from None
    if any(unicodedata.category(char) in CONTROL_CATEGORIES for char in name):
        raise DataError(f"{where}, which holds a line break or another control"
                        " character that would break the tables eval prints; save"
                        " the names without them")
    if not name.strip():
        raise DataError(f"{where}, which is blank: eval's tables and predict's"
                        " columns would not say which class it is; give every"
                        " class a name")
    if first < index:
        raise DataError(f"{where}, as is class_names[{first}]: eval's tables and"
                        " predict's columns could not tell the classes apart; give"
                        " each class its own name")


def _inferred_class_count(y: np.ndarray, file: Path) -> int:
    """C = the largest label + 1, refused when it leaves most classes without a
    training sample: one stray label 99999 among 0..9 would make a 100,000-class
    model that runs out of memory, and 2999 would silently train 3,000 classes.
    A rare class, or labels 0 and 2 without 1, still passes."""
    largest = int(y.max())
    if largest < 0:
        return 1  # every label is negative, which _check_labels refuses
    num_classes = largest + 1
    empty = num_classes - len(np.unique(y[y >= 0]))
    if empty > num_classes / 2:
        raise DataError(
            f"{file}: y_train's largest label {largest} makes {num_classes} classes,"
            f" {empty} of them without a training sample (a stray label?); number"
            " the classes 0..C-1, or save class_names to declare all C classes"
        )
    return num_classes


def _check_two_classes(y_train: np.ndarray, source) -> None:
    """Refuse training labels that are all one class: the model would learn to
    give that class every time, with a loss of 0."""
    if (y_train == y_train[0]).all():
        raise DataError(
            f"{source}: all {len(y_train)} training labels are {y_train[0]}; a"
            " classifier needs samples of at least 2 classes"
        )


def _read_npz_arrays(file: Path) -> dict:
    loaded = load_numpy_file(file, what="npz file", kinds=".npz")
    if not isinstance(loaded, dict):
        raise DataError(f"{file} is a .npy array; save X_train, y_train, ... together"
                        " in one .npz file with np.savez")
    return loaded


def _npz_pair(arrays: dict, split: str, file: Path) -> dict:
    X, y = arrays.get(f"X_{split}"), arrays.get(f"y_{split}")
    if (X is None) != (y is None):
        raise DataError(f"{file} has only one of X_{split} and y_{split}; give both")
    if X is None:
        return {}
    # Before any len(X): a 0-d array has none.
    if X.ndim < 2:
        raise DataError(f"{file}: X_{split} must have shape (N, D...), one row per"
                        f" sample (got shape {X.shape})")
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(
            f"{file}: y_{split} must be a 1-d array with one label per row of"
            f" X_{split} (got shapes {X.shape} and {y.shape})"
        )
    # By kind: NumPy counts a timedelta as an integer (np.issubdtype).
    if y.dtype.kind not in "iu":
        raise DataError(f"{file}: y_{split} must hold integer labels, not {y.dtype};"
                        " save them as an integer array")
    if X.dtype.kind not in "fiu":
        raise DataError(f"{file}: X_{split} must be real numbers, not {X.dtype};"
                        " save it as a float or integer array")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        raise DataError(f"{file}: X_{split} holds NaN or infinite values; clean them")
    return {f"X_{split}": X, f"y_{split}": y}


def _flat_features(X, input_shape, key, file) -> np.ndarray:
    """X: (N, D...) as _npz_pair checked it, flattened to (N, D)."""
    if len(X) == 0:
        drop = "" if key == "X_train" else f", or leave out {key} and y_{key[2:]}"
        raise DataError(f"{file}: {key} holds no samples (shape {X.shape}); save at"
                        f" least one{drop}")
    # Samples of no features leave nothing to learn and break the weights' scaling.
    if X.size == 0:
        raise DataError(f"{file}: {key} has samples of shape {X.shape[1:]}, which"
                        " hold no features; save at least one value per sample")
    if X.shape[1:] != input_shape:
        raise DataError(
            f"{file}: {key} has samples of shape {X.shape[1:]}, X_train {input_shape}"
        )
    return X.reshape(len(X), -1)


def beyond_dtype(X: np.ndarray, dtype) -> str | None:
    """When float X holds values past the range of float ``dtype``, a phrase for
    the error, "values up to 1e+39 in magnitude, beyond float32's range (±3.4e+38)";
    None when every value fits. The cast to ``dtype`` would make them infinite with
    no more than a NumPy warning."""
    limit = np.finfo(dtype).max
    if X.dtype.kind != "f" or np.finfo(X.dtype).max <= limit or X.size == 0:
        return None
    largest = max(-X.min(), X.max())  # no temporary abs(X) the size of X
    if largest <= limit:
        return None
    # Formatted by NumPy: a Python float would print a longdouble's 1e400 as inf.
    shown = np.format_float_scientific(largest, precision=2, trim="-")
    return (f"values up to {shown} in magnitude, beyond"
            f" {np.dtype(dtype).name}'s range (±{limit:.3g})")


def _check_fits_dtype(X: np.ndarray, dtype, key: str, file: Path) -> None:
    """Refuse features the cast to the training dtype would make infinite: the
    run would stop on a NaN loss blamed on the learning rate."""
    problem = dtype is not None and beyond_dtype(X, dtype)
    if problem:
        raise DataError(f"{file}: {key} holds {problem}; rescale the features, or"
                        " set train.dtype: float64")


def _npz_fixed_test_split(parts: dict) -> dict:
    """An npz without X_test gives every fifth training row to the test split."""
    is_test = np.arange(len(parts["X_train"])) % DIGITS_TEST_EVERY == 0
    X, y = parts["X_train"], parts["y_train"]
    if is_test.all() or not is_test.any():
        raise DataError("an npz without X_test needs at least 2 training samples")
    return {
        "X_train": X[~is_test], "y_train": y[~is_test],
        "X_test": X[is_test], "y_test": y[is_test],
    }


def _check_labels(parts: dict, num_classes: int, source) -> None:
    for split in ("train", "val", "test"):
        y = parts.get(f"y_{split}")
        if y is None or len(y) == 0:
            continue
        # Python ints: a uint64 label compared with int64 bounds could wrap.
        low, high = int(y.min()), int(y.max())
        if low < 0:
            raise DataError(f"{source}: y_{split} has negative labels (the lowest is"
                            f" {low}); labels must be 0..C-1: number the classes"
                            " from 0")
        if high >= num_classes:
            raise DataError(
                f"{source}: y_{split} has labels outside [0, {num_classes - 1}]"
                f" (found {low}..{high}); labels must be 0..C-1"
            )


def _hold_out(parts: dict, validation, seed: int, test_drawn: bool = False) -> dict:
    """Move ``validation`` training samples, drawn with ``seed``, to the val split.
    ``test_drawn``: the fixed test rows have left the training split already."""
    X, y = parts["X_train"], parts["y_train"]
    count = validation if isinstance(validation, int) else round(validation * len(X))
    if not 1 <= count < len(X):
        raise DataError(_validation_misfit(validation, count, len(X), test_drawn,
                                           parts["source"]))
    order = generator(seed, SPLIT_STREAM).permutation(len(X))
    val_rows, train_rows = np.sort(order[:count]), np.sort(order[count:])
    return {
        "X_train": X[train_rows], "y_train": y[train_rows],
        "X_val": X[val_rows], "y_val": y[val_rows],
    }


def _validation_misfit(validation, count: int, total: int, test_drawn: bool,
                       source: str) -> str:
    """Why data.validation, ``count`` of ``total`` training samples, leaves no
    samples for validation or for training, and the fix for that case."""
    said = f"data.validation={validation}"
    if total < 2:
        # No value fits: validation and training need a sample each.
        after = (" once every fifth row went to the test split (it has no X_test)"
                 if test_drawn else "")
        return (f"{said} cannot be met: the training split of {source} holds"
                f" {total} sample{after}, and validation and training need at"
                " least 1 each; add training samples")
    if isinstance(validation, int):
        asked = f"it asks for {count} of the {total} training samples"
    else:
        asked = f"{validation} of {total} training samples rounds to {count}"
    if count < 1:
        return (f"{said} holds out no samples for validation ({asked}); choose a"
                f" larger value: a fraction of at least {1 / total:.3g}, or a count")
    return (f"{said} leaves no samples for training ({asked}); choose a smaller"
            f" value: a count of at most {total - 1}, or a smaller fraction")


def _check_classes_left(parts: dict, test_drawn: bool, validation) -> None:
    """Refuse a training split that holds one class once the test split (of an npz
    without X_test) and the validation split (``validation``, None when given) are
    drawn from the training rows, which _check_two_classes saw all of. A class
    missing from the validation or test split is fine."""
    y = parts["y_train"]
    if (y != y[0]).any():
        return
    before_validation = y if validation is None else np.concatenate(
        [y, parts["y_val"]])
    if test_drawn and (before_validation == y[0]).all():
        y = before_validation  # what the test split left
        drawn = ("every fifth training row (index % 5 == 0) goes to the test split,"
                 " as it has no X_test")
        fix = "save X_test and y_test, or add training samples of other classes"
    else:
        held = len(parts["y_val"])
        drawn = (f"data.validation={validation} holds out {held}"
                 f" sample{'s' if held > 1 else ''} for validation")
        fix = ("choose a smaller data.validation or another seed (which draws"
               " other samples), or add training samples of other classes")
    name = parts["class_names"][y[0]]
    left = (f"1 training sample, of class {name}" if len(y) == 1 else
            f"{len(y)} training samples, all of class {name}")
    raise DataError(f"{parts['source']}: {drawn}, which leaves {left}; a classifier"
                    f" needs samples of at least 2 classes to train on: {fix}")
