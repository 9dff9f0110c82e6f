"""Data preparation: a config's dataset loaded and preprocessed, and the
fingerprints that tie a checkpoint to the data it was trained on.

Apart from the fit run (pipeline.py) because eval, gradcheck, plots and notebooks
prepare data too, without training; checking data against a checkpoint's record
(sizes, CRC32 fingerprints, the type its features were saved in) belongs with
the loading, not with the run.
"""

import sys
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from nntrain.config import resolve_config
from nntrain.data.datasets import OTHER_DATA_FIX, Dataset, load_dataset
from nntrain.data.preprocess import Preprocessor
from nntrain.errors import DataLocationError, DataWarning


@dataclass
class Prepared:
    """A dataset with its fitted preprocessing, and the splits already transformed."""

    dataset: Dataset
    preprocessor: Preprocessor
    splits: dict  # name -> (X float (N, D), y (N,))
    fingerprints: dict  # name -> CRC32 of the split as loaded (data_fingerprints)


SPLITS = ("train", "val", "test")

# How to point a resumed run, or eval, at the data when it is not where the run
# found it: (when it is missing, when it is other data).
RESUME_DATA_FIX = ("if the data moved, pass its new place with --set data.path=NEW",
                   "resume with --set data.path=NEW pointing at the data the run"
                   " was trained on")
EVAL_DATA_FIX = ("if the data moved, pass its new place with --data PATH",
                 "point --data at the data the checkpoint was trained on")


def data_fix(fixes: tuple[str, str], given_as: str | None) -> tuple[str, str]:
    """``fixes`` (RESUME_DATA_FIX, EVAL_DATA_FIX), unless the place was given now
    with ``given_as`` ("--data", "--set data.path"): then data missing there is
    a path to check, not data that moved."""
    if given_as is None:
        return fixes
    return f"check the path given with {given_as}", fixes[1]


def prepare_data(config: dict, preprocessor: Preprocessor | None = None,
                 splits=("train", "val", "test"), spec: dict | None = None,
                 keep_raw: bool = True,
                 given_as: str | None = "data.path",
                 training: bool = False) -> Prepared:
    """Load the config's dataset and preprocess it; fit the preprocessing on the
    training split unless a fitted ``preprocessor`` is given (from a checkpoint).
    ``spec``, a checkpoint's data spec, is checked against the data first.
    ``keep_raw=False`` drops the raw feature arrays once the preprocessed copies
    exist (training needs only those: 47 MB less for Fashion-MNIST).
    ``given_as``: how data.path was given now, or None for the path ``spec``
    recorded (see datasets.find_idx_folder). ``training``: for a new run, whose
    training split must hold samples of 2 classes once the others are drawn."""
    if not isinstance(config, dict):
        raise TypeError(f"config is {type(config).__name__}; give a config dict, as"
                        " nntrain.load_config(path) returns")
    unknown = [split for split in splits if split not in SPLITS]
    if isinstance(splits, str) or unknown:
        raise ValueError(f"splits is {splits!r}; give a tuple of some of"
                         f" {', '.join(SPLITS)}")
    if preprocessor is not None and not isinstance(preprocessor, Preprocessor):
        raise TypeError(f"preprocessor is {type(preprocessor).__name__}; give a"
                        " fitted Preprocessor (a restored checkpoint's), or None")
    config = resolve_config(config)  # a hand-made dict gets checked, and defaults
    dtype = np.dtype(config["train"]["dtype"])
    dataset = load_dataset(config["data"], config["seed"], dtype, given_as, spec,
                           training)
    fingerprints = data_fingerprints(dataset)
    if spec is not None:
        _check_data_matches(dataset, spec, fingerprints, splits)
    transformed = {}
    if preprocessor is None:
        _warn_if_every_feature_is_constant(dataset)
        preprocessor, X_train = Preprocessor.fit_transform(
            config["data"]["preprocess"], dataset.X_train, dtype, dataset.input_shape)
        if "train" in splits:
            transformed["train"] = (X_train, dataset.y_train)
        del X_train
    for name in splits:
        if name not in transformed:
            X, y = dataset.split(name)
            transformed[name] = (preprocessor.transform(X, dtype,
                                                        f"the {name} split"), y)
    if not keep_raw:
        dataset.release_features()
    return Prepared(dataset, preprocessor, transformed, fingerprints)


def _warn_if_every_feature_is_constant(dataset: Dataset) -> None:
    """A DataWarning when no feature varies over the training split: a network can
    then learn the class frequencies alone, and a sanity check that fails would
    seem to blame the learning rate."""
    X = dataset.X_train.reshape(len(dataset.X_train), -1)  # (N, D)
    if len(X) > 1 and np.array_equal(X.min(axis=0), X.max(axis=0)):
        warnings.warn(f"every one of the {X.shape[1]:,} features is constant over"
                      f" the {len(X):,} training samples, so nothing tells the"
                      " classes apart; check the data", DataWarning, stacklevel=3)


def data_fingerprints(dataset: Dataset) -> dict:
    """A CRC32 of each split's samples and labels as loaded: a checkpoint keeps
    them to tell its data, wherever it lies now, from other data of its shape."""
    return {name: _fingerprint(dataset.split(name)) for name in SPLITS}


def _fingerprint(arrays) -> str:
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), crc)
    return format(crc, "08x")


# The feature types a data file may hold: when a split's fingerprint differs, its
# features are tried in the others, to tell the same values saved in another type
# (whose bytes, and so fingerprint, differ) from other data.
FEATURE_DTYPES = ("float32", "float64", "float16", "uint8", "int64", "int32")


# How many feature values (not bytes, nor rows) _saved_as casts at a time: a whole
# split cast at once would copy it once per type tried (376 MB for Fashion-MNIST's
# in float64).
_CAST_VALUES = 1 << 20


def _saved_as(arrays, fingerprint: str) -> np.dtype | None:
    """The type in which the features X of a split's ``arrays`` (X, y) hold the
    same values and give ``fingerprint``, or None. Each type is tried on a chunk
    of rows at a time, and given up at the first chunk that changes in it."""
    X, y = arrays
    # Each type in this machine's byte order, then in the other: a file saved on
    # a big-endian machine, or with '>f4', holds the same values in other bytes.
    # (Each costs a pass over the split, on this error path only.)
    native = list(map(np.dtype, FEATURE_DTYPES))
    swapped = [dtype.newbyteorder() for dtype in native if dtype.itemsize > 1]
    candidates = native + swapped
    for dtype in candidates:
        if dtype != X.dtype and _fingerprint_as(X, y, dtype) == fingerprint:
            return dtype
    return None


def _fingerprint_as(X, y, dtype: np.dtype) -> str | None:
    """_fingerprint((X.astype(dtype), y)), computed chunk by chunk, or None as soon
    as a value of ``X`` changes in ``dtype``."""
    rows = max(1, _CAST_VALUES // max(1, X[0].size)) if len(X) else 1
    crc = 0
    for start in range(0, len(X), rows):
        chunk = X[start:start + rows]
        with np.errstate(all="ignore"):
            cast = chunk.astype(dtype)
        if not np.array_equal(cast, chunk):
            return None
        crc = zlib.crc32(np.ascontiguousarray(cast).view(np.uint8), crc)
    crc = zlib.crc32(np.ascontiguousarray(y).view(np.uint8), crc)
    return format(crc, "08x")


def _check_data_matches(dataset, spec: dict, fingerprints: dict, splits) -> None:
    """Refuse data other than the checkpoint's by the sizes and fingerprints of
    every split (checkpoints before fingerprints lack them), those in ``splits``
    first, then by its class names; load_dataset has checked its shape. Data with
    another test split is other data, even to a resumed run that reads only train
    and val; so are the same arrays with other class names, which eval would
    print and a resumed run would save in its checkpoints."""
    fix = OTHER_DATA_FIX
    for name in sorted(SPLITS, key=lambda split: split not in splits):
        found = (len(dataset.split(name)[1]), fingerprints[name])
        saved = tuple(_saved(spec, key, name, value)
                      for key, value in zip(("sizes", "fingerprints"), found))
        if saved != found:
            raise DataLocationError(_other_data(dataset, name, saved), fix,
                                    missing=False)
    names = spec.get("class_names")  # a hand-made spec may not record them
    if names is not None and list(names) != list(dataset.class_names):
        difference = class_names_difference(list(dataset.class_names), list(names),
                                            ("in the data", "in the checkpoint"))
        raise DataLocationError(f"the data in {dataset.source} is not the data the"
                                f" checkpoint was trained on ({difference})", fix,
                                missing=False)


def class_names_difference(names: list, others: list, where: tuple) -> str:
    """How two different lists of class names differ, short enough for one line:
    their counts, else the first class named otherwise; ``where`` says whose each
    list is ("in the data", "in the checkpoint")."""
    if len(names) != len(others):
        return f"{len(names)} classes {where[0]}, {len(others)} {where[1]}"
    index = next(i for i, pair in enumerate(zip(names, others)) if pair[0] != pair[1])
    return (f"class {index} is named {names[index]!r} {where[0]},"
            f" {others[index]!r} {where[1]}")


def _other_data(dataset, name: str, saved: tuple) -> str:
    """Why the data's split ``name`` is not the one whose (size, fingerprint) the
    checkpoint ``saved``."""
    arrays = dataset.split(name)
    dtype = None
    if saved[0] == len(arrays[1]):  # as many samples: the same, in another type?
        dtype = _saved_as(arrays, saved[1])
    if dtype is not None:
        found = arrays[0].dtype
        # A byte order other than this machine's is part of what to name.
        ordered = not (found.isnative and dtype.isnative)
        found_words, dtype_words = (_dtype_words(each, ordered)
                                    for each in (found, dtype))
        code = f"np.{dtype.name}" if dtype.isnative else repr(dtype.str)
        return (f"the data in {dataset.source} holds the values of the checkpoint's"
                f" {name} split, but as {found_words}, where its run read"
                f" {dtype_words} (save the arrays again as {dtype_words}:"
                f" X.astype({code}))")
    return (f"the data in {dataset.source} is not the data the checkpoint was"
            f" trained on (its {name} split holds other samples or labels)")


def _dtype_words(dtype: np.dtype, ordered: bool) -> str:
    """'float32', or with ``ordered`` 'float32, big-endian': a type's name and the
    order of its bytes."""
    if not ordered or dtype.itemsize == 1:
        return dtype.name
    order = dtype.byteorder
    if order == "=":
        order = "<" if sys.byteorder == "little" else ">"
    return f"{dtype.name}, {'big' if order == '>' else 'little'}-endian"


def _saved(spec: dict, key: str, name: str, default):
    """spec[key][name], or ``default`` where an older checkpoint lacks it."""
    table = spec.get(key)
    return table.get(name, default) if isinstance(table, dict) else default


def data_spec(prepared: Prepared, config: dict) -> dict:
    """What a checkpoint records about its data: where it came from, never the data."""
    dataset = prepared.dataset
    return {
        **config["data"],
        "num_features": dataset.num_features,
        "model_input_width": prepared.preprocessor.output_width(dataset.num_features),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "input_shape": list(dataset.input_shape),
        "sizes": {
            name: len(dataset.split(name)[1]) for name in SPLITS
        },
        "fingerprints": prepared.fingerprints,
    }
