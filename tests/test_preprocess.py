"""Tests of the preprocessing steps against statistics computed by hand."""

import math
import re
import warnings

import numpy as np
import pytest
from conftest import TINY_VALIDATION, tiny_arrays, tiny_config_dict

from nntrain.config import resolve_config
from nntrain.data.preprocess import Center, Preprocessor, Scale
from nntrain.errors import CheckpointError
from nntrain.pipeline import prepare_data

# Three samples of three features: feature 0 has mean 3 and population standard
# deviation sqrt(8/3); feature 1 is constant; feature 2 has mean 0 and std sqrt(2/3).
X_HAND = np.array([[1.0, 10.0, -1.0],
                   [3.0, 10.0, 0.0],
                   [5.0, 10.0, 1.0]])
STD0 = math.sqrt(8 / 3)
STD2 = math.sqrt(2 / 3)


def test_center_subtracts_the_per_feature_mean():
    step = Center().fit(X_HAND)

    np.testing.assert_array_equal(step.mean, [3.0, 10.0, 0.0])
    out = step.transform(X_HAND.copy())
    np.testing.assert_array_equal(out, [[-2, 0, -1], [0, 0, 0], [2, 0, 1]])


def test_scale_divides_by_the_population_std():
    step = Scale().fit(X_HAND)

    np.testing.assert_allclose(step.factor, [1 / STD0, 0.0, 1 / STD2], rtol=1e-15)
    out = step.transform(X_HAND.copy())
    expected = [[1 / STD0, 0, -1 / STD2], [3 / STD0, 0, 0], [5 / STD0, 0, 1 / STD2]]
    np.testing.assert_allclose(out, expected, rtol=1e-15)


def test_center_then_scale_gives_zero_mean_unit_std():
    prep = Preprocessor.fit(["center", "scale"], X_HAND, np.float64)

    out = prep.transform(X_HAND, np.float64)

    expected = [[-2 / STD0, 0, -1 / STD2], [0, 0, 0], [2 / STD0, 0, 1 / STD2]]
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(out[:, [0, 2]].std(axis=0), [1.0, 1.0], rtol=1e-14)


def test_a_small_but_real_spread_is_scaled_not_dropped():
    X = np.array([[-1e-3], [1e-3]])

    step = Scale().fit(X)

    np.testing.assert_allclose(step.factor, [1000.0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", [["scale"], ["center", "scale"], ["scale", "center"]])
def test_constant_feature_maps_to_zero_without_warnings(dtype, steps):
    X = np.array([[0.1, 1.0, 7.0], [0.1, 2.0, 7.0], [0.1, 4.0, 7.0]], dtype=dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prep = Preprocessor.fit(steps, X, dtype)
        out = prep.transform(X, dtype)
        other = prep.transform(np.array([[5.0, 1.0, -3.0]]), dtype)

    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    np.testing.assert_array_equal(other[:, [0, 2]], 0.0)
    assert np.isfinite(out).all()


def test_all_zero_features_give_zero_without_warnings():
    X = np.zeros((4, 3), dtype=np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = Preprocessor.fit(["center", "scale"], X, np.float32).transform(
            X, np.float32)

    np.testing.assert_array_equal(out, np.zeros((4, 3)))


def test_large_constant_float32_feature_maps_to_zero_without_warnings():
    # A sum of 1000 float32 values near 1e6 would lose digits; the constant must
    # still give std 0 (statistics in float64), never noise blown up to unit size.
    X = np.full((1000, 1), 1e6 + 0.1, dtype=np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = Preprocessor.fit(["scale"], X, np.float32).transform(X, np.float32)

    np.testing.assert_array_equal(out, 0.0)


def test_transform_of_another_split_uses_the_training_statistics():
    X_train = np.array([[0.0, 2.0], [2.0, 2.0], [4.0, 8.0]])
    # mean [2, 4]; std [sqrt(8/3), sqrt(8)]
    X_other = np.array([[10.0, 0.0], [2.0, 4.0]])

    prep = Preprocessor.fit(["center", "scale"], X_train, np.float64)
    out = prep.transform(X_other, np.float64)

    expected = [[8 / math.sqrt(8 / 3), -4 / math.sqrt(8)], [0.0, 0.0]]
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-15)


def test_transform_returns_a_new_array_of_the_requested_dtype():
    X = np.array([[1, 2], [3, 6]], dtype=np.uint8)
    prep = Preprocessor.fit(["center"], X, np.float32)

    out = prep.transform(X, np.float32)

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[-1, -2], [1, 2]])
    np.testing.assert_array_equal(X, [[1, 2], [3, 6]])


def test_uint8_pixels_are_centered_without_wrapping_around():
    X = np.array([[0], [255]], dtype=np.uint8)

    out = Preprocessor.fit(["center"], X, np.float64).transform(X, np.float64)

    np.testing.assert_array_equal(out, [[-127.5], [127.5]])


def test_no_steps_only_changes_the_dtype():
    X = np.array([[1, 2], [3, 4]], dtype=np.int64)

    out = Preprocessor.fit([], X, np.float32).transform(X, np.float32)

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X)


def test_state_round_trip_applies_the_same_steps():
    prep = Preprocessor.fit(["center", "scale"], X_HAND, np.float64)
    state = prep.state()

    assert sorted(state) == ["center.mean", "scale.factor"]
    rebuilt = Preprocessor.from_state(["center", "scale"], state, 3)
    X_new = np.array([[7.0, -1.0, 2.0]])
    np.testing.assert_array_equal(rebuilt.transform(X_new, np.float64),
                                  prep.transform(X_new, np.float64))
    np.testing.assert_allclose(rebuilt.transform(X_new, np.float64),
                               [[4 / STD0, 0.0, 2 / STD2]], rtol=1e-15)


def test_state_with_the_wrong_width_is_a_checkpoint_error():
    state = Preprocessor.fit(["center"], X_HAND, np.float64).state()

    with pytest.raises(CheckpointError, match=re.escape(
            "prep/center takes 3 features where 4 arrive")):
        Preprocessor.from_state(["center"], state, 4)


def test_missing_state_is_a_checkpoint_error():
    state = Preprocessor.fit(["center"], X_HAND, np.float64).state()

    with pytest.raises(CheckpointError, match=r"lacks prep/scale\.factor"):
        Preprocessor.from_state(["center", "scale"], state, 3)


def test_prepare_data_fits_on_the_training_split_only(tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["train"]["dtype"] = "float64"
    config = resolve_config(raw)

    prepared = prepare_data(config)

    dataset = prepared.dataset
    assert len(dataset.y_train) == 60 - TINY_VALIDATION
    mean = dataset.X_train.mean(axis=0)
    std = dataset.X_train.std(axis=0)
    for split in ("train", "val", "test"):
        X_raw, y_raw = dataset.split(split)
        X, y = prepared.splits[split]
        np.testing.assert_allclose(X, (X_raw - mean) / std, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(y, y_raw)
    whole = tiny_arrays()["X_train"]
    assert not np.allclose(prepared.preprocessor.steps[0].mean, whole.mean(axis=0),
                           rtol=1e-9, atol=0)


def test_prepare_data_with_a_saved_preprocessor_does_not_refit(tiny_npz):
    config = resolve_config(tiny_config_dict(tiny_npz))
    zero = Preprocessor([Center.from_state({"mean": np.zeros(4)})])

    prepared = prepare_data(config, zero, splits=("test",))

    X, _ = prepared.splits["test"]
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, tiny_arrays()["X_test"].astype(np.float32))
    assert list(prepared.splits) == ["test"]

