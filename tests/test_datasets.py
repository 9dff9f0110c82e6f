"""Tests of dataset loading and splitting on tiny files written in tmp_path.

The bundled digits file is read directly (it ships with the package); nothing here
reads /usr/share/datasets or the user's cache.
"""

import os
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_arrays, tiny_config_dict

from nntrain.config import resolve_config
from nntrain.data import datasets
from nntrain.data.datasets import FASHION_CLASSES, load_dataset, search_paths
from nntrain.errors import BadInputError, DataError, DataWarning
from nntrain.prepare import prepare_data
from nntrain.random import SPLIT_STREAM, generator


def data_config(name="npz", path=None, validation=2, preprocess=("center", "scale")):
    return {"name": name, "path": None if path is None else str(path),
            "validation": validation, "preprocess": list(preprocess)}


def raw_digits():
    """The bundled digits as stored: images (1797, 8, 8), labels (1797,)."""
    stored = resources.files("nntrain.data").joinpath("digits.npz")
    with stored.open("rb") as file, np.load(file, allow_pickle=False) as archive:
        return archive["images"], archive["labels"]


def sorted_rows(X):
    """The rows of X in lexicographic order, to compare splits as multisets."""
    return X[np.lexsort(X.T[::-1])]


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """HOME in tmp_path and NNTRAIN_DATA unset, so no real cache is searched."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NNTRAIN_DATA", raising=False)
    return home




def test_npz_with_all_splits_loads_as_given(write_npz):
    rng = np.random.default_rng(1)
    X_train, X_val, X_test = (rng.normal(size=(n, 3)) for n in (8, 3, 4))
    y_train = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype=np.int32)
    y_val, y_test = np.array([2, 1, 0]), np.array([0, 0, 1, 2])
    path = write_npz(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val,
                     X_test=X_test, y_test=y_test)

    data = load_dataset(data_config(path=path), seed=0)

    np.testing.assert_array_equal(data.X_train, X_train)
    np.testing.assert_array_equal(data.X_val, X_val)
    np.testing.assert_array_equal(data.X_test, X_test)
    np.testing.assert_array_equal(data.y_train, [0, 1, 2, 0, 1, 2, 0, 1])
    assert data.y_train.dtype == np.int64
    assert data.class_names == ("0", "1", "2")
    assert data.num_classes == 3 and data.num_features == 3
    assert data.input_shape == (3,)


def test_npz_class_names_set_the_number_of_classes(write_npz):
    arrays = tiny_arrays()
    names = np.array(["cat", "dog", "eel", "fox"])
    path = write_npz(**arrays, class_names=names)

    data = load_dataset(data_config(path=path), seed=0)

    assert data.class_names == ("cat", "dog", "eel", "fox")
    assert data.num_classes == 4


def test_npz_images_are_flattened_row_by_row(write_npz):
    X = np.arange(10 * 2 * 3, dtype=np.uint8).reshape(10, 2, 3)
    y = np.arange(10) % 2
    path = write_npz(X_train=X, y_train=y, X_test=X[:2], y_test=y[:2])

    data = load_dataset(data_config(path=path, validation=3), seed=0)

    assert data.input_shape == (2, 3)
    assert data.X_test.shape == (2, 6)
    np.testing.assert_array_equal(data.X_test[1], [6, 7, 8, 9, 10, 11])


def test_npz_without_test_split_uses_every_fifth_row_whatever_the_seed(write_npz):
    X = np.arange(24, dtype=np.float64).reshape(12, 2)
    y = np.array([0, 1, 2] * 4)
    path = write_npz(X_train=X, y_train=y)

    first = load_dataset(data_config(path=path, validation=2), seed=0)
    second = load_dataset(data_config(path=path, validation=2), seed=5)

    for data in (first, second):
        np.testing.assert_array_equal(data.X_test, X[[0, 5, 10]])
        np.testing.assert_array_equal(data.y_test, y[[0, 5, 10]])
        assert len(data.y_train) == 7 and len(data.y_val) == 2
        rest = np.concatenate([data.X_train, data.X_val])
        np.testing.assert_array_equal(sorted_rows(rest),
                                      X[[1, 2, 3, 4, 6, 7, 8, 9, 11]])


def test_npz_class_count_comes_from_all_given_labels(write_npz):
    X = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.array([2, 0, 1, 0, 1, 2, 0, 1, 0, 1])
    path = write_npz(X_train=X, y_train=y)

    data = load_dataset(data_config(path=path, validation=2), seed=0)

    assert data.num_classes == 3




def test_npz_missing_y_train_is_refused(write_npz):
    path = write_npz(X_train=np.zeros((5, 2)))

    with pytest.raises(DataError, match=rf"{re.escape(str(path))} lacks y_train"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_with_only_x_val_is_refused(write_npz):
    arrays = tiny_arrays()
    path = write_npz(**arrays, X_val=arrays["X_test"])

    with pytest.raises(DataError, match=r"only one of X_val and y_val; give both"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_label_above_the_class_names_is_refused(write_npz):
    arrays = tiny_arrays()
    path = write_npz(**arrays, class_names=np.array(["a", "b"]))

    with pytest.raises(DataError, match=re.escape(
            "y_train has labels outside [0, 1] (found 0..2)")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_negative_label_is_refused(write_npz):
    arrays = tiny_arrays()
    arrays["y_train"][7] = -1
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            f"{path}: y_train has negative labels (the lowest is -1); labels must be"
            " 0..C-1: number the classes from 0") + "$"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_negative_labels_are_named_so_when_they_leave_one_class(write_npz):
    # -1 and 0: the largest label makes one class, which is no reason to give.
    X = np.arange(20, dtype=np.float64).reshape(10, 2)
    path = write_npz(X_train=X, y_train=np.array([-1, 0] * 5))

    with pytest.raises(DataError, match="negative labels \\(the lowest is -1\\)"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_test_label_unknown_to_training_is_refused(write_npz):
    arrays = tiny_arrays()
    arrays["y_test"][3] = 5
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            "y_test has labels outside [0, 2] (found 0..5)")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_labels_of_one_class_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["y_train"][:] = 1
    path = write_npz(**arrays, class_names=np.array(["cat", "dog"]))

    with pytest.raises(DataError, match=re.escape(
            f"{path}: all 60 training labels are 1; a classifier needs samples of at"
            " least 2 classes")):
        load_dataset(data_config(path=path), seed=0)


ONE_CLASS_LEFT = "a classifier needs samples of at least 2 classes to train on"


def test_npz_test_split_taking_a_class_out_of_training_is_refused(write_npz):
    # Without X_test, rows 0 and 5, the only ones of class 1, become the test split.
    X = np.random.default_rng(0).random((10, 4), dtype=np.float32)
    path = write_npz(X_train=X, y_train=np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0]))

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path, validation=0.2), seed=0, training=True)

    assert str(caught.value) == (
        f"{path}: every fifth training row (index % 5 == 0) goes to the test split,"
        f" as it has no X_test, which leaves 8 training samples, all of class 0;"
        f" {ONE_CLASS_LEFT}: save X_test and y_test, or add training samples of"
        " other classes")


def split_rows(seed: int, count: int, total: int) -> np.ndarray:
    """The rows data.validation=``count`` holds out of ``total`` with ``seed``."""
    return generator(seed, SPLIT_STREAM).permutation(total)[:count]


def test_npz_validation_split_taking_a_class_out_of_training_is_refused(write_npz):
    X = np.random.default_rng(0).random((10, 4))
    y = np.zeros(10, dtype=np.int64)
    y[split_rows(0, 2, 10)] = 1  # class 1 only where validation is drawn
    path = write_npz(X_train=X, y_train=y, X_test=X[:3], y_test=np.array([0, 1, 0]),
                     class_names=np.array(["cat", "dog"]))

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path, validation=2), seed=0, training=True)

    assert str(caught.value) == (
        f"{path}: data.validation=2 holds out 2 samples for validation, which"
        f" leaves 8 training samples, all of class cat; {ONE_CLASS_LEFT}: choose a"
        " smaller data.validation or another seed (which draws other samples), or"
        " add training samples of other classes")


def test_npz_one_training_sample_left_is_refused(write_npz):
    X = np.random.default_rng(0).random((3, 2))
    y = np.array([0, 1, 0])
    path = write_npz(X_train=X, y_train=y, X_test=X, y_test=y)
    [left] = sorted(set(range(3)) - set(split_rows(0, 2, 3)))

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path, validation=2), seed=0, training=True)

    assert str(caught.value) == (
        f"{path}: data.validation=2 holds out 2 samples for validation, which"
        f" leaves 1 training sample, of class {y[left]}; {ONE_CLASS_LEFT}: choose a"
        " smaller data.validation or another seed (which draws other samples), or"
        " add training samples of other classes")


def test_npz_validation_split_lacking_a_class_is_fine(write_npz):
    X = np.random.default_rng(0).random((10, 4))
    y = np.array([0, 1, 2] * 3 + [1])
    y[split_rows(0, 3, 10)] = 0  # validation gets class 0 alone
    path = write_npz(X_train=X, y_train=y, X_test=X[:3], y_test=np.array([0, 1, 2]))

    data = load_dataset(data_config(path=path, validation=3), seed=0, training=True)

    assert data.y_val.tolist() == [0, 0, 0]
    assert sorted(set(data.y_train.tolist())) == [0, 1, 2]


def test_data_left_with_one_training_class_loads_when_not_trained_on(write_npz):
    # eval, a resumed run (its data was accepted once) and gradcheck train nothing
    # new on it; sanity words its own refusal.
    X = np.random.default_rng(0).random((10, 4))
    path = write_npz(X_train=X, y_train=np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0]))
    spec = {"num_features": 4, "num_classes": 2,
            "sizes": {"train": 6, "val": 2, "test": 2}}

    for given in (None, spec):
        data = load_dataset(data_config(path=path, validation=2), seed=0, spec=given)

        assert data.y_train.tolist() == [0] * 6 and data.y_test.tolist() == [1, 1]


@pytest.mark.parametrize("stray, empty", [(2999, 2996), (99999, 99996)])
def test_npz_stray_large_label_is_refused(write_npz, stray, empty):
    arrays = tiny_arrays()
    arrays["y_train"][-1] = stray
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            f"y_train's largest label {stray} makes {stray + 1} classes, {empty} of"
            " them without a training sample (a stray label?)")):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("labels, warned", [
    # Classes 1 and 2 without a sample: 2 of 4, which still pass.
    ([0, 3], "2 classes (1, 2) have no training sample of the 4 that y_train's"
             " labels make (0..3); number the classes 0..C-1 without gaps"),
    ([1, 2, 3], "class 0 has no training sample of the 4 that y_train's labels"
                " make (0..3); if the labels are numbered from 1, subtract 1"),
    # More than class 0 missing: subtracting 1 would leave a gap.
    ([1, 3], "2 classes (0, 2) have no training sample of the 4 that y_train's"
             " labels make (0..3); number the classes 0..C-1 without gaps"),
])
def test_npz_classes_without_a_training_sample_pass_with_a_warning(write_npz,
                                                                   labels, warned):
    X = np.arange(24, dtype=np.float64).reshape(12, 2)
    y = np.array(labels * (12 // len(labels)))
    path = write_npz(X_train=X, y_train=y, X_test=X[:2], y_test=y[:2])

    with pytest.warns(DataWarning) as caught:
        data = load_dataset(data_config(path=path), seed=0)

    assert data.class_names == ("0", "1", "2", "3")
    assert [str(warning.message) for warning in caught] == [
        f"{path}: {warned}, or save class_names to declare every class"]


def test_npz_declared_classes_without_samples_are_not_warned_of(write_npz):
    X = np.arange(24, dtype=np.float64).reshape(12, 2)
    path = write_npz(X_train=X, y_train=np.array([1, 2, 3] * 4),
                     class_names=np.array(["none", "a", "b", "c"]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset(data_config(path=path), seed=0)

    assert data.class_names == ("none", "a", "b", "c")


def test_npz_empty_class_names_are_refused(write_npz):
    path = write_npz(**tiny_arrays(), class_names=np.array([], dtype=str))

    with pytest.raises(DataError, match=re.escape(
            f"{path}: class_names is empty; save one name per class")):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("name", ["big\ncat", "tab\there", "line\u2028sep"])
def test_npz_class_names_with_a_control_character_are_refused(write_npz, name):
    path = write_npz(**tiny_arrays(), class_names=np.array(["ant", name, "cow"]))

    with pytest.raises(DataError, match=re.escape(
            f"{path}: class_names[1] is {name!r}, which holds a line break or another"
            " control character that would break the tables eval prints; save the"
            " names without them")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_class_name_with_a_lone_surrogate_is_refused(write_npz):
    # NumPy stores U+D800 alone; no UTF-8 file (train.log, predict's CSV) can.
    path = write_npz(**tiny_arrays(), class_names=np.array(["ant", "\ud800", "cow"]))

    with pytest.raises(DataError, match=re.escape(
            f"{path}: class_names[1] is '\\ud800', which holds a lone surrogate, a"
            " code point that is no character: train.log and predict's CSV could"
            " not hold it; save the names as valid text")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_bytes_class_names_are_decoded_from_utf8(write_npz):
    names = np.array(["ant".encode(), "bée".encode(), b"cow"])
    path = write_npz(**tiny_arrays(), class_names=names)

    data = load_dataset(data_config(path=path), seed=0)

    assert data.class_names == ("ant", "bée", "cow")
    assert all(type(name) is str for name in data.class_names)


def test_npz_bytes_class_names_that_are_not_utf8_are_refused(write_npz):
    path = write_npz(**tiny_arrays(), class_names=np.array([b"ant", b"b\xff", b"cow"]))

    with pytest.raises(DataError, match=re.escape(
            f"{path}: class_names[1] is b'b\\xff', bytes that are not UTF-8 text;"
            " save the names as strings (np.array(['cat', 'dog', ...]))")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_uint64_label_past_int64_is_shown_as_stored(write_npz):
    arrays = tiny_arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.uint64)
    arrays["y_train"][1] = 2**64 - 5
    path = write_npz(**arrays, class_names=np.array(["a", "b", "c"]))

    with pytest.raises(DataError, match=re.escape(
            "y_train has labels outside [0, 2] (found 0..18446744073709551611)")):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("split", ["train", "test"])
def test_npz_non_finite_features_are_refused(write_npz, bad, split):
    arrays = tiny_arrays()
    arrays[f"X_{split}"][2, 1] = bad
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=rf"X_{split} holds NaN or infinite values"):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("split", ["X_train", "X_test"])
def test_npz_features_past_float32_are_refused_when_training_in_float32(
        write_npz, split):
    arrays = tiny_arrays()
    arrays[split][3, 1] = -1e39
    path = write_npz(**arrays)
    config = resolve_config(tiny_config_dict(path))

    with pytest.raises(DataError, match=re.escape(
            f"{path}: {split} holds values up to 1e+39 in magnitude, beyond float32's"
            " range (±3.4e+38); rescale the features, or set train.dtype: float64")):
        prepare_data(config)


def test_npz_features_past_float32_load_for_float64_training(write_npz):
    arrays = tiny_arrays()
    arrays["X_train"][3, 1] = 1e39
    raw = tiny_config_dict(write_npz(**arrays))
    raw["train"]["dtype"] = "float64"

    prepared = prepare_data(resolve_config(raw))

    assert np.isfinite(prepared.splits["train"][0]).all()


def test_npz_lengths_that_differ_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            "y_train must be a 1-d array with one label per row of X_train"
            " (got shapes (60, 4) and (59,))")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_two_dimensional_labels_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["y_train"] = arrays["y_train"].reshape(-1, 1)
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=r"y_train must be a 1-d array"):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("key", ["X_train", "X_val", "X_test"])
def test_npz_zero_dimensional_features_are_refused(write_npz, key):
    arrays = tiny_arrays()
    arrays["X_val"], arrays["y_val"] = arrays["X_test"][:5], arrays["y_test"][:5]
    arrays[key] = np.float32(3)
    path = write_npz(**arrays)

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path), seed=0)

    assert str(caught.value) == (f"{path}: {key} must have shape (N, D...), one row"
                                 " per sample (got shape ())")


def test_npz_zero_dimensional_labels_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["y_test"] = np.int64(1)
    path = write_npz(**arrays)

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path), seed=0)

    assert str(caught.value) == (f"{path}: y_test must be a 1-d array with one label"
                                 " per row of X_test (got shapes (15, 4) and ())")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.bool_, "m8[s]"])
def test_npz_non_integer_labels_are_refused(write_npz, dtype):
    arrays = tiny_arrays()
    arrays["y_train"] = (arrays["y_train"] % 2).astype(dtype)
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            f"y_train must hold integer labels, not {np.dtype(dtype)}; save them as"
            " an integer array")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_object_array_is_refused_without_unpickling(write_npz):
    arrays = tiny_arrays()
    arrays["X_train"] = np.array([object()] * 60, dtype=object)
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=r"holds object arrays, which nntrain refuses"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_object_class_names_are_told_to_be_saved_as_strings(write_npz):
    arrays = tiny_arrays()
    arrays["class_names"] = np.array(["a", "b", "c"], dtype=object)
    path = write_npz(**arrays)

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path), seed=0)

    message = str(caught.value)
    assert "class_names holds object arrays" in message
    assert message.endswith("text as a string array: np.array(names, dtype=str)")
    assert "save numeric arrays" not in message


def test_an_empty_npz_is_said_to_hold_no_arrays(write_npz):
    path = write_npz("empty.npz")

    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} is an \.npz that"
                                        r" holds no arrays; save the arrays in it"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_string_features_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["X_train"] = arrays["X_train"].astype(str)
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=r"X_train must be real numbers"):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("dtype", ["m8[s]", "M8[s]"])
def test_npz_times_are_no_features(write_npz, dtype):
    # A timedelta counts as an integer to np.issubdtype; predict refuses it.
    arrays = tiny_arrays()
    arrays["X_train"] = (arrays["X_train"] * 10).astype(dtype)
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            f"X_train must be real numbers, not {np.dtype(dtype)}; save it as a float"
            " or integer array")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_complex_features_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["X_train"] = arrays["X_train"] + 0j
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=r"X_train must be real numbers"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_unknown_array_names_are_refused(write_npz):
    path = write_npz(**tiny_arrays(), X_extra=np.zeros(3))

    with pytest.raises(DataError, match=r"unknown arrays \['X_extra'\]"):
        load_dataset(data_config(path=path), seed=0)


def test_npz_feature_shapes_that_differ_are_refused(write_npz):
    arrays = tiny_arrays()
    arrays["X_test"] = arrays["X_test"][:, :3]
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            "X_test has samples of shape (3,), X_train (4,)")):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("key", ["X_train", "X_test"])
def test_npz_with_no_samples_is_refused(write_npz, key):
    arrays = tiny_arrays()
    arrays[key], arrays["y" + key[1:]] = arrays[key][:0], arrays["y" + key[1:]][:0]
    path = write_npz(**arrays)

    with pytest.raises(DataError, match=re.escape(
            f"{path}: {key} holds no samples (shape (0, 4)); save at least one")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_samples_of_no_features_are_refused(write_npz):
    path = write_npz(X_train=np.zeros((10, 0)), y_train=np.arange(10) % 2)

    with pytest.raises(DataError, match=re.escape(
            "X_train has samples of shape (0,), which hold no features")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_without_path_is_refused():
    with pytest.raises(DataError, match=r"data\.path is not set"):
        load_dataset(data_config(path=None), seed=0)


def test_npz_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"npz file not found: .*absent\.npz"):
        load_dataset(data_config(path=tmp_path / "absent.npz"), seed=0)


def random_bytes_file(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    return path


def test_npz_random_bytes_are_refused(tmp_path):
    path = random_bytes_file(tmp_path)

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path), seed=0)

    assert str(path) in str(caught.value)
    assert caught.value.exit_code == 2


def test_npz_truncated_file_is_refused(tmp_path, tiny_npz):
    whole = tiny_npz.read_bytes()
    path = tmp_path / "half.npz"
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(DataError, match=r"half\.npz is not a readable \.npz file"):
        load_dataset(data_config(path=path), seed=0)


@pytest.mark.parametrize("content", [b"X_train,y_train\n1,2\n", None])
def test_npz_that_is_not_an_npz_is_not_called_object_arrays(tmp_path, content):
    path = random_bytes_file(tmp_path)
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path), seed=0)

    assert "object arrays" not in str(caught.value)


def test_npz_given_a_npy_file_is_refused(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros((4, 2)))

    with pytest.raises(DataError, match=re.escape(str(path))):
        load_dataset(data_config(path=path), seed=0)


def test_npz_given_a_npy_file_says_to_use_savez(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros((4, 2)))

    with pytest.raises(DataError, match=r"is a \.npy array; save X_train, y_train"):
        load_dataset(data_config(path=path), seed=0)


def test_data_errors_are_bad_input_with_exit_status_2(write_npz):
    path = write_npz(X_train=np.zeros((5, 2)))

    with pytest.raises(BadInputError) as caught:
        load_dataset(data_config(path=path), seed=0)

    assert caught.value.exit_code == 2




def test_validation_count_holds_out_exactly_that_many(tiny_npz):
    data = load_dataset(data_config(path=tiny_npz, validation=13), seed=0)

    assert len(data.y_val) == 13 and len(data.X_val) == 13
    assert len(data.y_train) == 60 - 13


@pytest.mark.parametrize("fraction, count", [(0.25, 15), (0.1, 6), (0.02, 1)])
def test_validation_fraction_holds_out_that_share(tiny_npz, fraction, count):
    data = load_dataset(data_config(path=tiny_npz, validation=fraction), seed=0)

    assert len(data.y_val) == count
    assert len(data.y_train) == 60 - count


def test_validation_split_partitions_the_training_rows(tiny_npz):
    X = tiny_arrays()["X_train"]

    data = load_dataset(data_config(path=tiny_npz, validation=10), seed=0)

    rest = np.concatenate([data.X_train, data.X_val])
    np.testing.assert_array_equal(sorted_rows(rest), sorted_rows(X))
    np.testing.assert_array_equal(data.X_test, tiny_arrays()["X_test"])


def test_validation_split_moves_with_the_seed_and_repeats_with_it(tiny_npz):
    config = data_config(path=tiny_npz, validation=10)

    first = load_dataset(config, seed=0)
    again = load_dataset(config, seed=0)
    other = load_dataset(config, seed=1)

    np.testing.assert_array_equal(first.X_val, again.X_val)
    assert not np.array_equal(first.X_val, other.X_val)


@pytest.mark.parametrize("validation, asked", [
    (60, "it asks for 60 of the 60 training samples"),
    (61, "it asks for 61 of the 60 training samples"),
    (0.995, "0.995 of 60 training samples rounds to 60"),
])
def test_validation_leaving_no_training_samples_asks_for_a_smaller_value(
        tiny_npz, validation, asked):
    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=tiny_npz, validation=validation), seed=0)

    assert str(caught.value) == (
        f"data.validation={validation} leaves no samples for training ({asked});"
        " choose a smaller value: a count of at most 59, or a smaller fraction")


def test_validation_rounding_to_no_samples_asks_for_a_larger_value(tiny_npz):
    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=tiny_npz, validation=0.001), seed=0)

    assert str(caught.value) == (
        "data.validation=0.001 holds out no samples for validation (0.001 of 60"
        " training samples rounds to 0); choose a larger value: a fraction of at"
        " least 0.0167, or a count")


@pytest.mark.parametrize("validation", [1, 0.5])
def test_validation_that_no_value_can_meet_asks_for_more_samples(write_npz,
                                                                 validation):
    # Two rows without X_test: row 0 is the test split, one training row is left.
    path = write_npz(X_train=np.eye(2), y_train=np.array([0, 1]))

    with pytest.raises(DataError) as caught:
        load_dataset(data_config(path=path, validation=validation), seed=0)

    assert str(caught.value) == (
        f"data.validation={validation} cannot be met: the training split of {path}"
        " holds 1 sample once every fifth row went to the test split (it has no"
        " X_test), and validation and training need at least 1 each; add training"
        " samples")


def test_digits_test_split_is_every_fifth_image():
    images, labels = raw_digits()

    data = load_dataset(data_config(name="digits", validation=0.1), seed=0)

    assert images.shape == (1797, 8, 8)
    assert len(data.y_test) == 360
    np.testing.assert_array_equal(data.X_test, images[::5].reshape(360, 64))
    np.testing.assert_array_equal(data.y_test, labels[::5])
    assert data.input_shape == (8, 8)
    assert data.class_names == tuple("0123456789")
    assert len(data.y_train) + len(data.y_val) == 1797 - 360
    assert len(data.y_val) == 144  # round(0.1 * 1437)


def test_digits_test_split_does_not_move_with_the_seed_but_validation_does():
    config = data_config(name="digits", validation=0.1)

    first = load_dataset(config, seed=0)
    second = load_dataset(config, seed=123)

    np.testing.assert_array_equal(first.X_test, second.X_test)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert not np.array_equal(first.X_val, second.X_val)


def test_digits_train_and_validation_are_the_other_images():
    images, labels = raw_digits()
    kept = np.arange(1797) % 5 != 0

    data = load_dataset(data_config(name="digits", validation=100), seed=0)

    assert len(data.y_val) == 100 and len(data.y_train) == 1337
    counts = np.bincount(data.y_train, minlength=10) + np.bincount(data.y_val,
                                                                   minlength=10)
    np.testing.assert_array_equal(counts, np.bincount(labels[kept], minlength=10))
    rest = np.concatenate([data.X_train, data.X_val])
    np.testing.assert_array_equal(sorted_rows(rest),
                                  sorted_rows(images[kept].reshape(-1, 64)))




def tiny_idx(count, seed, height=3, width=2):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(count, height, width), dtype=np.uint8)
    y = (np.arange(count) % 10).astype(np.uint8)
    return X, y


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx_files_load_from_data_path(tmp_path, write_idx_dataset,
                                                     isolated_home, compress):
    train, test = tiny_idx(20, 0), tiny_idx(6, 1)
    folder = write_idx_dataset(tmp_path / "fm", train, test, compress=compress)

    data = load_dataset(data_config("fashion-mnist", folder, validation=4), seed=0)

    np.testing.assert_array_equal(data.X_test, test[0].reshape(6, 6))
    np.testing.assert_array_equal(data.y_test, test[1])
    assert data.y_test.dtype == np.int64
    assert len(data.y_train) == 16 and len(data.y_val) == 4
    rest = np.concatenate([data.X_train, data.X_val])
    np.testing.assert_array_equal(sorted_rows(rest),
                                  sorted_rows(train[0].reshape(20, 6)))
    assert data.input_shape == (3, 2)
    assert data.class_names == FASHION_CLASSES
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_mnist_idx_files_have_digit_class_names(tmp_path, write_idx_dataset,
                                                isolated_home):
    folder = write_idx_dataset(tmp_path / "m", tiny_idx(20, 0), tiny_idx(5, 1))

    data = load_dataset(data_config("mnist", folder, validation=2), seed=0)

    assert data.class_names == tuple("0123456789")


def test_idx_label_count_that_differs_from_images_is_refused(tmp_path,
                                                             write_idx_dataset,
                                                             isolated_home):
    X, y = tiny_idx(20, 0)
    folder = write_idx_dataset(tmp_path / "fm", (X, y[:19]), tiny_idx(5, 1))

    with pytest.raises(DataError, match=r"holds 20 images but .* holds 19 labels"):
        load_dataset(data_config("fashion-mnist", folder), seed=0)


def test_idx_label_above_nine_is_refused(tmp_path, write_idx_dataset, isolated_home):
    X, y = tiny_idx(20, 0)
    y = y.copy()
    y[4] = 10
    folder = write_idx_dataset(tmp_path / "fm", (X, y), tiny_idx(5, 1))

    with pytest.raises(DataError, match=re.escape(
            "y_train has labels outside [0, 9] (found 0..10)")):
        load_dataset(data_config("fashion-mnist", folder), seed=0)


def test_idx_train_and_test_images_of_different_sizes_are_refused(
        tmp_path, write_idx_dataset, isolated_home):
    folder = write_idx_dataset(tmp_path / "m", tiny_idx(20, 0, 8, 8),
                               tiny_idx(5, 1, 6, 6), compress=False)

    with pytest.raises(DataError, match=re.escape(
            f"{folder / 'train-images-idx3-ubyte'} holds images of 8x8 pixels but"
            f" {folder / 't10k-images-idx3-ubyte'} holds 6x6")):
        load_dataset(data_config("mnist", folder), seed=0)


def test_idx_plain_copy_equal_to_the_gz_is_accepted(tmp_path, write_idx_dataset,
                                                    isolated_home):
    train, test = tiny_idx(20, 0), tiny_idx(5, 1)
    folder = write_idx_dataset(tmp_path / "m", train, test)
    write_idx_dataset(folder, train, test, compress=False)  # as `gunzip -k` leaves

    data = load_dataset(data_config("mnist", folder), seed=0)

    np.testing.assert_array_equal(data.X_test, test[0].reshape(5, 6))


def test_idx_plain_copy_that_differs_from_the_gz_is_refused(
        tmp_path, write_idx_dataset, isolated_home):
    folder = write_idx_dataset(tmp_path / "m", tiny_idx(20, 0), tiny_idx(5, 1))
    write_idx_dataset(folder, tiny_idx(20, 2), tiny_idx(5, 1), compress=False)
    plain = folder / "train-images-idx3-ubyte"

    with pytest.raises(DataError, match=re.escape(
            f"{plain} and {plain}.gz hold different data (nntrain reads the .gz")):
        load_dataset(data_config("mnist", folder), seed=0)


def test_idx_labels_of_one_class_are_refused(tmp_path, write_idx_dataset,
                                            isolated_home):
    X, y = tiny_idx(20, 0)
    folder = write_idx_dataset(tmp_path / "m", (X, np.full_like(y, 7)),
                               tiny_idx(5, 1))

    with pytest.raises(DataError, match=re.escape(
            f"{folder}: all 20 training labels are 7; a classifier needs samples")):
        load_dataset(data_config("mnist", folder), seed=0)


def test_idx_data_path_comes_before_nntrain_data(tmp_path, write_idx_dataset,
                                                 monkeypatch, isolated_home):
    given = write_idx_dataset(tmp_path / "given", tiny_idx(20, 0), tiny_idx(5, 1))
    write_idx_dataset(tmp_path / "env" / "fashion-mnist", tiny_idx(20, 2),
                      tiny_idx(7, 3))
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))

    from_path = load_dataset(data_config("fashion-mnist", given, validation=2), 0)
    from_env = load_dataset(data_config("fashion-mnist", None, validation=2), 0)

    assert len(from_path.y_test) == 5
    assert len(from_env.y_test) == 7
    np.testing.assert_array_equal(from_env.X_test, tiny_idx(7, 3)[0].reshape(7, 6))


def test_idx_found_in_the_home_cache(tmp_path, write_idx_dataset, isolated_home):
    write_idx_dataset(isolated_home / ".cache" / "nntrain" / "mnist", tiny_idx(20, 0),
                      tiny_idx(9, 1))

    data = load_dataset(data_config("mnist", None, validation=2), seed=0)

    assert len(data.y_test) == 9


def test_a_partial_copy_searched_first_is_named_when_another_is_read(
        tmp_path, write_idx_dataset, monkeypatch, isolated_home):
    partial = write_idx_dataset(tmp_path / "env" / "mnist", tiny_idx(20, 2),
                                tiny_idx(7, 3))
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (partial / f"{stem}.gz").unlink()  # a download cut short
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))
    whole = write_idx_dataset(isolated_home / ".cache" / "nntrain" / "mnist",
                              tiny_idx(20, 0), tiny_idx(9, 1))

    with pytest.warns(DataWarning) as caught:
        data = load_dataset(data_config("mnist", None, validation=2), seed=0)

    assert len(data.y_test) == 9
    assert [str(w.message) for w in caught] == [
        f"mnist: {partial} lacks train-images-idx3-ubyte, train-labels-idx1-ubyte (or"
        f" .gz); using the copy in {whole} (`nntrain data download mnist --dir"
        f" {partial}` completes it)"]


def test_search_covers_every_documented_place(tmp_path, monkeypatch, isolated_home):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))

    places = search_paths("mnist", str(tmp_path / "given"))

    assert places == [
        tmp_path / "given",
        tmp_path / "env" / "mnist",
        isolated_home / ".cache" / "nntrain" / "mnist",
        Path("/usr/share/datasets/mnist"),
    ]


@pytest.fixture
def system_data(tmp_path, monkeypatch, isolated_home):
    """The system-wide datasets folder (/usr/share/datasets) moved into tmp_path,
    empty, so that no test depends on what this machine has installed."""
    folder = tmp_path / "system"
    monkeypatch.setattr(datasets, "SYSTEM_DATA", folder)
    return folder


def test_missing_dataset_lists_the_places_searched(tmp_path, system_data):
    recorded = tmp_path / "nowhere"  # where a checkpoint's run found the data

    with pytest.raises(DataError) as caught:
        load_dataset(data_config("mnist", recorded), seed=0, given_as=None)

    message = str(caught.value)
    assert message.startswith("mnist not found (searched: ")
    for place in (recorded, tmp_path / "home" / ".cache" / "nntrain" / "mnist",
                  system_data / "mnist"):
        assert str(place) in message
    assert "nntrain data download mnist" in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_missing_dataset_names_nntrain_data_when_set(tmp_path, monkeypatch,
                                                     system_data):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))

    with pytest.raises(DataError, match=re.escape(str(tmp_path / "env" / "mnist"))):
        load_dataset(data_config("mnist", None), seed=0)


IDX_NAMES = ("train-images-idx3-ubyte, train-labels-idx1-ubyte,"
             " t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")


def test_folder_with_only_some_idx_files_is_refused_naming_the_missing_one(
        tmp_path, write_idx_dataset, system_data):
    folder = write_idx_dataset(tmp_path / "m", tiny_idx(20, 0), tiny_idx(5, 1))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(DataError) as caught:
        load_dataset(data_config("mnist", folder), seed=0)

    assert str(caught.value) == (
        f"mnist: data.path {folder} lacks t10k-labels-idx1-ubyte (or .gz); point it"
        f" at the folder holding the four IDX files ({IDX_NAMES}, each may be"
        " gzipped), or run `nntrain data download mnist` and drop data.path")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("make", [Path.mkdir, os.mkfifo], ids=["folder", "pipe"])
def test_an_idx_name_taken_by_no_regular_file_is_named_as_such(
        tmp_path, write_idx_dataset, system_data, make):
    folder = write_idx_dataset(tmp_path / "m", tiny_idx(20, 0), tiny_idx(5, 1))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    make(folder / "t10k-labels-idx1-ubyte.gz")

    with pytest.raises(DataError) as caught:
        load_dataset(data_config("mnist", folder), seed=0)

    assert str(caught.value).startswith(
        f"mnist: data.path {folder} lacks t10k-labels-idx1-ubyte (or .gz)"
        " (t10k-labels-idx1-ubyte.gz there is not a regular file: a folder, pipe or"
        " device); point it at the folder holding the four IDX files")


@pytest.mark.parametrize("make, problem", [
    (lambda path: None, "does not exist"),
    (lambda path: path.write_bytes(b"x"), "is a file, not a folder"),
    (lambda path: path.mkdir(), "holds none of the IDX files"),
])
def test_a_data_path_without_the_data_is_refused_though_a_copy_exists(
        tmp_path, write_idx_dataset, monkeypatch, system_data, make, problem):
    copy = write_idx_dataset(tmp_path / "env" / "fashion-mnist", tiny_idx(20, 0),
                             tiny_idx(5, 1))
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))
    given = tmp_path / "given"
    make(given)

    with pytest.raises(DataError) as caught:
        load_dataset(data_config("fashion-mnist", given), seed=0)

    assert str(caught.value) == (
        f"fashion-mnist: data.path {given} {problem}; point it at the folder"
        f" holding the four IDX files ({IDX_NAMES}, each may be gzipped), or drop"
        f" data.path to use the copy in {copy}")
    assert caught.value.exit_code == 2


def test_an_option_overriding_a_recorded_path_hints_at_the_recorded_data(
        tmp_path, write_idx_dataset, system_data):
    recorded = write_idx_dataset(tmp_path / "recorded", tiny_idx(20, 0),
                                 tiny_idx(5, 1))

    with pytest.raises(DataError, match=re.escape(
            f"mnist: --set data.path={tmp_path / 'typo'} does not exist; point it")
            ) as caught:
        datasets.find_idx_folder("mnist", str(tmp_path / "typo"), "--set data.path",
                                 recorded=str(recorded))

    assert str(caught.value).endswith(
        f"or drop --set data.path to use the copy in {recorded}")


def test_a_recorded_path_the_data_left_falls_back_on_a_copy_with_a_warning(
        tmp_path, write_idx_dataset, monkeypatch, system_data):
    copy = write_idx_dataset(system_data / "mnist", tiny_idx(20, 0), tiny_idx(5, 1))
    recorded = tmp_path / "moved-away"

    with pytest.warns(DataWarning) as caught:
        data = load_dataset(data_config("mnist", recorded), seed=0, given_as=None)

    assert [str(warning.message) for warning in caught] == [
        f"mnist: {recorded}, where the run found its data, no longer holds the four"
        f" IDX files; using the copy in {copy}"]
    np.testing.assert_array_equal(data.X_test, tiny_idx(5, 1)[0].reshape(5, 6))
    assert data.source == str(copy)


def test_prepare_data_checks_a_hand_made_config_and_fills_its_defaults():
    # Like fit: an unknown name is a ConfigError naming the key; a partial config
    # gets the defaults (float32, 1293 digits training rows after the test fifth).
    from nntrain.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid data.name: 'nope'"):
        prepare_data({"data": {"name": "nope"}})
    prepared = prepare_data({"data": {"name": "digits"}, "train": {"epochs": 1}},
                            splits=("train",))
    X_train = prepared.splits["train"][0]
    assert X_train.dtype == np.float32 and X_train.shape == (1293, 64)


@pytest.mark.parametrize("names, problem", [
    (["a", "a", "b"], "class_names[1] is 'a', as is class_names[0]: eval's tables"
     " and predict's columns could not tell the classes apart; give each class its"
     " own name"),
    (["a", "b", "c", "b"], "class_names[3] is 'b', as is class_names[1]"),
    (["a", "", "c"], "class_names[1] is '', which is blank: eval's tables and"
     " predict's columns would not say which class it is; give every class a name"),
    (["a", "b", "  "], "class_names[2] is '  ', which is blank"),
    ([["a", "b"], ["c", "d"]], "class_names has shape (2, 2); save a 1-D array of"
     " names, one per class"),
])
def test_npz_class_names_that_cannot_name_each_class_are_refused(write_npz, names,
                                                                 problem):
    path = write_npz(**tiny_arrays(), class_names=np.array(names))

    with pytest.raises(DataError, match=re.escape(f"{path}: {problem}")):
        load_dataset(data_config(path=path), seed=0)


def test_npz_class_names_given_as_numbers_are_kept_as_text(write_npz):
    path = write_npz(**tiny_arrays(), class_names=np.array([3, 1, 2]))
    data = load_dataset(data_config(path=path), seed=0)
    assert data.class_names == ("3", "1", "2")


def test_values_past_float64s_range_are_named_by_their_size_not_as_inf():
    from nntrain.data.datasets import beyond_dtype

    # x86-64's longdouble (80-bit) holds 1e400, which float64 cannot; where
    # longdouble is float64 (Windows, macOS on arm64), float64's 1e300 stands in.
    wide = np.isfinite(np.longdouble("1e400"))
    value, shown = ("1e400", "1e+400") if wide else ("1e300", "1e+300")
    X = np.array([[1.0], [np.longdouble("-" + value)]], dtype=np.longdouble)

    assert beyond_dtype(X, np.float32) == (f"values up to {shown} in magnitude,"
                                           " beyond float32's range (±3.4e+38)")
