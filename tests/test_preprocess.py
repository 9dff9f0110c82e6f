"""Tests of the preprocessing steps against statistics computed by hand."""

import math
import re
import warnings
from fractions import Fraction

import numpy as np
import pytest
from conftest import TINY_VALIDATION, tiny_arrays, tiny_config_dict

from nntrain.config import resolve_config
from nntrain.data.preprocess import STEPS, Center, Preprocessor, Scale, column_mean
from nntrain.errors import CheckpointError, ConfigError, DataError, DataWarning
from nntrain.prepare import prepare_data

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


STEPS_BEFORE_SCALE = [["scale"], ["center", "scale"], ["image_mean", "scale"],
                      ["center", "image_mean", "scale"]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", STEPS_BEFORE_SCALE)
def test_a_feature_in_small_units_is_scaled_not_dropped(dtype, steps):
    # Spreads of 1e-9 around 2e-9 and around 0: real variation, whatever the
    # units, where a tolerance of 1e-8 in absolute terms would zero them.
    X = np.array([[1e-9, -1e-9], [3e-9, 1e-9]], dtype=dtype)

    factor = Preprocessor.fit(steps, X, dtype).steps[-1].factor

    np.testing.assert_allclose(factor, [1e9, 1e9], rtol=1e-6)


# float32 as train.dtype: float64 data it would round takes the streamed route.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", STEPS_BEFORE_SCALE)
def test_one_unit_in_the_last_place_of_variation_is_scaled_once_centred(steps,
                                                                       dtype):
    # 1000 with every 7th value one unit in the last place higher. Centred, it
    # varies around 0: its factor is 1 / its exact std (in fractions). Not
    # centred, 1000 / that std would be a constant 3e16, its variation rounded
    # away: such a feature gets 0.
    X = np.stack([np.full(70, 1000.0), np.arange(70.0)], axis=1)
    X[::7, 0] = np.nextafter(1000.0, 2000.0)

    prep, out = Preprocessor.fit_transform(steps, X, dtype)
    factor = prep.steps[-1].factor

    centred = steps != ["scale"]
    np.testing.assert_allclose(factor, [1 / _exact_std(X[:, 0]) if centred else 0,
                                        1 / _exact_std(X[:, 1])], rtol=1e-9)
    assert np.abs(out).max() < 10


def _exact_std(values) -> float:
    """The population std of ``values``, exactly, then rounded once."""
    exact = [Fraction(float(value)) for value in values]
    mean = sum(exact) / len(exact)
    return math.sqrt(sum((value - mean) ** 2 for value in exact) / len(exact))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", STEPS_BEFORE_SCALE)
def test_a_small_spread_far_from_0_is_scaled_not_dropped(steps, dtype):
    # Spreads far below 1e-8 of their offsets, yet far above float64's rounding
    # there: 1e8 +- 0.5 and a timestamp, 1.7e9 +- 10.
    rng = np.random.default_rng(0)
    X = np.stack([1e8 + rng.normal(0, 0.5, 200), 1.7e9 + rng.normal(0, 10, 200)],
                 axis=1)

    factor = Preprocessor.fit(steps, X, dtype).steps[-1].factor

    np.testing.assert_allclose(factor, 1 / X.std(axis=0), rtol=1e-6)


@pytest.mark.parametrize("steps", [["scale"], ["scale", "center"], ["center",
                                                                 "scale"]])
def test_an_exact_constant_whose_float64_mean_rounds_is_still_zeroed(steps):
    # A sum of 70 rows of 0.1 (or 1/3) is off by units in the mean's last place;
    # the std of an exact constant must come out 0 all the same, not that error.
    X = np.stack([np.full(70, 0.1), np.full(70, 1 / 3), np.arange(70.0)], axis=1)

    prep = Preprocessor.fit(steps, X, np.float64)
    factor = next(step for step in prep.steps if step.name == "scale").factor

    np.testing.assert_array_equal(factor[:2], 0.0)
    np.testing.assert_allclose(factor[2], 1 / np.arange(70.0).std(), rtol=1e-12)


@pytest.mark.parametrize("spread", [1e-150, 1e-162, 1e-300])
def test_a_spread_whose_squares_underflow_is_scaled_exactly(spread):
    # Its squares (1e-300 and below) are subnormal or 0 in float64; the
    # deviations, scaled by a power of two first, give its std all the same.
    X = np.array([[5.0, 0.0], [6.0, 2 * spread]] * 500)

    factor = Preprocessor.fit(["center", "scale"], X, np.float64).steps[-1].factor

    np.testing.assert_allclose(factor[1] * spread, 1.0, rtol=1e-12)


def test_a_spread_of_subnormal_steps_that_no_float_can_invert_is_refused():
    # A std of 5e-322, whose inverse (2e321) is past float64's 1.8e308.
    X = np.array([[5.0, 0.0], [6.0, 1e-321]])

    with pytest.raises(DataError, match="^" + re.escape(
            "preprocessing step scale cannot fit the training split: feature 1"
            " (counted from 0) varies, from 0.0 to 1e-321, too little for float64 to"
            " divide by; scale the data up (multiply it by a power of ten)") + "$"):
        Preprocessor.fit(["scale"], X, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_variation_far_from_0_is_scaled_in_any_type(dtype):
    # Years in float16 (std 7 on 2012, 0.4 % of it), integers near 1e7 and float32
    # timestamps: all vary, and all get 1 / their exact std.
    rng = np.random.default_rng(0)
    columns = [rng.integers(2000, 2025, 300).astype(np.float16),
               (10_000_000 + rng.integers(0, 11, 300)).astype(np.int64),
               (1.7e9 + rng.uniform(0, 1800, 300)).astype(np.float32)]

    for column in columns:
        factor = Preprocessor.fit(["center", "scale"], column[:, None], dtype)
        exact = _exact_std(column)

        np.testing.assert_allclose(factor.steps[-1].factor, [1 / exact], rtol=1e-7)


def test_a_std_whose_inverse_float32_cannot_hold_says_to_scale_the_data_up():
    # A std of 1e-40: its factor 1e40 is past float32's largest value, 3.4e38.
    X = np.array([[0.0, -1e-40], [1.0, 1e-40]], dtype=np.float32)

    with pytest.raises(DataError, match="^" + re.escape(
            "preprocessing step scale made feature 1 (counted from 0) of the"
            " training split NaN or infinite: its std is below 1 / 3.4e+38, so"
            " dividing by it overflows float32 arithmetic; scale the data up"
            " (multiply it by a power of ten)") + "$"):
        Preprocessor.fit(["scale"], X, np.float32)


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
            "prep/center takes 3 features where 4 arrive: the checkpoint does not"
            " match its data; use an unaltered checkpoint of the run (best.npz or"
            " last.npz)")):
        Preprocessor.from_state(["center"], state, 4)


def test_missing_state_is_a_checkpoint_error():
    state = Preprocessor.fit(["center"], X_HAND, np.float64).state()

    with pytest.raises(CheckpointError, match=re.escape(
            "lacks prep/scale.factor; the file is damaged or was edited: use"
            " another checkpoint of the run (best.npz or last.npz)")):
        Preprocessor.from_state(["center", "scale"], state, 3)


CENTER_SCALE = {"center.mean": np.array([3.0, 10.0, 0.0]),
                "scale.factor": np.array([1 / STD0, 0.0, 1 / STD2])}


@pytest.mark.parametrize("name, value, message", [
    ("scale.factor", np.array([1.0, np.nan, 1.0]),
     "ck.npz: prep/scale.factor holds NaN or infinite values"),
    ("center.mean", np.array([-np.inf, 0.0, 0.0]),
     "ck.npz: prep/center.mean holds NaN or infinite values"),
    ("center.mean", np.array([3, 10, 0]),
     "ck.npz: prep/center.mean is int64, but preprocessing statistics are float64"),
    ("center.mean", np.array([3, 10, 0], dtype=np.float32),
     "ck.npz: prep/center.mean is float32, but preprocessing statistics are"
     " float64"),
    ("center.mean", np.array(3.0), "ck.npz: prep/center.mean has shape (), but it"
     " is a vector"),
    ("pca.basis", np.eye(3), "ck.npz holds prep/pca.basis, which no step of its"
     " data.preprocess (center, scale) keeps"),
    ("scale.mean", np.zeros(3), "ck.npz holds prep/scale.mean, which no step of its"
     " data.preprocess (center, scale) keeps"),
])
def test_a_forged_state_array_is_refused_naming_it(name, value, message):
    state = {**CENTER_SCALE, name: value}

    with pytest.raises(CheckpointError, match=re.escape(message)):
        Preprocessor.from_state(["center", "scale"], state, 3, "ck.npz")


def test_a_pca_basis_of_one_dimension_is_refused():
    state = {"pca.mean": np.zeros(3), "pca.basis": np.zeros(3),
             "pca.scale": np.ones(1)}

    with pytest.raises(CheckpointError, match=re.escape(
            "prep/pca.basis has shape (3,), but it is a matrix")):
        Preprocessor.from_state([{"pca": {"components": 1}}], state, 3)


# A float32 result of a float64 closed form is within one float32 unit in the last
# place of it: half of that for the rounding, the rest for float64's own.
FLOAT32_ROUNDING = 2.0**-23

# Around 1e8, float32's values are 8 apart: cast to float32 first, feature 0 is
# one constant; in float64 it is 1e8 + [-1.5, -0.5, 0.5, 1.5] exactly, std
# sqrt(1.25). Feature 1 is small, and exact in float32 either way.
X_OFFSET = np.array([[1e8 - 1.5, 1.0], [1e8 - 0.5, 2.0], [1e8 + 0.5, 3.0],
                     [1e8 + 1.5, 4.0]])
STANDARDIZED_OFFSET = np.column_stack([[-1.5, -0.5, 0.5, 1.5],
                                       [-1.5, -0.5, 0.5, 1.5]]) / math.sqrt(1.25)


@pytest.mark.parametrize("steps", [["center", "scale"], ["scale", "center"]])
def test_float64_features_are_preprocessed_before_the_cast_to_float32(steps):
    prep, X = Preprocessor.fit_transform(steps, X_OFFSET, np.float32)

    assert X.dtype == np.float32
    np.testing.assert_allclose(X, STANDARDIZED_OFFSET, rtol=FLOAT32_ROUNDING)


def test_saved_statistics_apply_to_float64_samples_before_the_cast():
    saved = {"center.mean": np.array([1e8, 2.5]),
             "scale.factor": 1 / np.sqrt([1.25, 1.25])}
    prep = Preprocessor.from_state(["center", "scale"], saved, 2)

    X = prep.transform(np.array([[1e8 - 1.5, 1.0], [1e8 + 2.5, 5.0]]), np.float32)

    expected = np.array([[-1.5, -1.5], [2.5, 2.5]]) / math.sqrt(1.25)
    np.testing.assert_allclose(X, expected, rtol=FLOAT32_ROUNDING)


@pytest.mark.parametrize("name", ["pca", "whiten"])
def test_pca_of_float64_features_with_a_large_offset_keeps_their_spread(name):
    X = _points_on_a_line(np.random.default_rng(3))
    steps = [{name: {"components": 2}}]
    # Float64 arithmetic on the points themselves: the closed form's numbers.
    expected = Preprocessor.fit(steps, X, np.float64).transform(X, np.float64)

    _, Z = Preprocessor.fit_transform(steps, X + 1e8, np.float32)

    # Each direction is known up to its sign.
    signs = np.sign(np.sum(Z * expected, axis=0))
    np.testing.assert_allclose(Z * signs, expected, rtol=1e-6, atol=1e-6)


def test_float64_features_that_float32_holds_take_the_float32_path():
    # Values exact in float32 give the same bits whichever type they are stored in.
    X = np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 9.0]])
    steps = ["center", "scale", {"whiten": {"components": 2}}]

    _, from_float64 = Preprocessor.fit_transform(steps, X, np.float32)
    _, from_float32 = Preprocessor.fit_transform(steps, X.astype(np.float32),
                                                 np.float32)

    np.testing.assert_array_equal(from_float64, from_float32)


def test_prepare_data_standardizes_float64_features_before_the_cast(write_npz):
    arrays = tiny_arrays()
    for split in ("X_train", "X_test"):
        arrays[split][:, 3] += 1e8  # the offset feature: 1e8 + 50 + N(0, 1)
    config = resolve_config(tiny_config_dict(write_npz("offset.npz", **arrays)))

    prepared = prepare_data(config)

    X_fit = prepared.dataset.X_train
    mean, std = X_fit.mean(axis=0), X_fit.std(axis=0)
    for split in ("train", "val", "test"):
        X, _ = prepared.splits[split]
        assert X.dtype == np.float32
        expected = (prepared.dataset.split(split)[0] - mean) / std
        np.testing.assert_allclose(X, expected, rtol=FLOAT32_ROUNDING, atol=1e-7)


# Feature 1 holds 3e38 twice and -3e38 once: its mean is 1e38 (in float64), and
# -3e38 - 1e38 = -4e38 is past float32's largest value, 3.4e38.
X_NEAR_FLOAT32_LIMIT = np.array([[0.0, 3e38], [1.0, 3e38], [2.0, -3e38]])


def test_a_step_that_overflows_the_training_split_is_a_data_error():
    X = X_NEAR_FLOAT32_LIMIT.astype(np.float32)  # so centred in float32

    with pytest.raises(DataError, match=re.escape(
            "preprocessing step center made feature 1 (counted from 0) of the"
            " training split NaN or infinite: its values are too large for float32"
            " arithmetic; scale the data down")):
        Preprocessor.fit(["center", "scale"], X, np.float32)


def test_float64_features_centred_past_float32s_range_are_a_data_error():
    # Centred in float64, feature 1 holds -4e38, which float32 cannot hold.
    with pytest.raises(DataError, match=re.escape(
            "preprocessing (center) made feature 1 (counted from 0) of the"
            " training split NaN or infinite: its values are too large for"
            " float32; scale the data down")):
        Preprocessor.fit(["center"], X_NEAR_FLOAT32_LIMIT, np.float32)


def test_float64_features_past_float32s_range_without_steps_blame_the_cast():
    X = np.array([[0.0, 1e39], [1.0, 2.0]])  # 1e39 > 3.4e38, float32's largest

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no NumPy overflow warning either
        with pytest.raises(DataError, match=re.escape(
                "the cast to train.dtype float32 made feature 1 (counted from 0)"
                " of the training split NaN or infinite: its values are too large"
                " for float32; scale the data down")):
            Preprocessor.fit([], X, np.float32)


def test_float64_features_scaled_back_into_float32s_range_are_kept():
    # In float64, (-3e38 - 1e38) / std never leaves the range that float32 holds.
    std = math.sqrt(2 * 2e38**2 + 4e38**2) / math.sqrt(3)

    _, X = Preprocessor.fit_transform(["center", "scale"], X_NEAR_FLOAT32_LIMIT,
                                      np.float32)

    expected = np.array([2e38, 2e38, -4e38]) / std
    np.testing.assert_allclose(X[:, 1], expected, rtol=FLOAT32_ROUNDING)


def test_the_same_features_fit_in_float64():
    prep, X = Preprocessor.fit_transform(["center"], X_NEAR_FLOAT32_LIMIT,
                                         np.float64)

    np.testing.assert_allclose(X[:, 1], [2e38, 2e38, -4e38], rtol=1e-15)


# Finite float64 values whose squares (1e400) or sums (2e308) do not fit float64.
@pytest.mark.parametrize("steps, magnitude", [
    (["scale"], 1e308),  # the sum would be inf, and the mean with it
    (["center"], 1e308),
    ([{"pca": {"components": 1}}], 1e200),
    (["whiten"], 1e200),
])
def test_statistics_that_overflow_float64_are_a_data_error(steps, magnitude):
    X = np.array([[1.0, -1.0], [1.0, 1.0], [1.0, 1.0]]) * magnitude
    name = steps[0] if isinstance(steps[0], str) else "pca"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no NumPy overflow warning either
        with pytest.raises(DataError, match=re.escape(
                f"preprocessing step {name} cannot fit the training split: its"
                " statistics overflow float64")):
            Preprocessor.fit(steps, X, np.float64)


@pytest.mark.parametrize("stored, blamed", [
    (np.float32, "preprocessing step center"),  # centred in float32
    (np.float64, "preprocessing (center)"),  # centred in float64, then rounded
])
def test_a_saved_step_that_overflows_new_samples_names_them(stored, blamed):
    center = Preprocessor([Center.from_state({"mean": np.array([0.0, 1e38])})])
    samples = np.array([[0.0, -3e38]], dtype=stored)

    with pytest.raises(DataError, match=re.escape(
            f"{blamed} made feature 1 (counted from 0) of samples.npy NaN")):
        center.transform(samples, np.float32, "samples.npy")


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



def test_image_mean_subtracts_the_mean_image_and_keeps_its_shape():
    images = np.arange(24.0).reshape(3, 2, 4)  # three 2x4 images
    X = images.reshape(3, -1)
    prep = Preprocessor.fit(["image_mean"], X, np.float64, input_shape=(2, 4))
    state = prep.state()
    np.testing.assert_array_equal(state["image_mean.image"], images.mean(axis=0))
    np.testing.assert_array_equal(prep.transform(X, np.float64),
                                  X - images.mean(axis=0).reshape(-1))


def _points_on_a_line(rng, count=200):
    """2-d points spread along (3, 4)/5 with a little noise across it."""
    along = rng.standard_normal(count) * 10
    across = rng.standard_normal(count) * 0.1
    direction, normal = np.array([0.6, 0.8]), np.array([-0.8, 0.6])
    return along[:, None] * direction + across[:, None] * normal + [5.0, -2.0]


def test_pca_keeps_the_direction_of_largest_variance():
    X = _points_on_a_line(np.random.default_rng(0))
    prep = Preprocessor.fit([{"pca": {"components": 1}}], X, np.float64)
    basis = prep.state()["pca.basis"]
    assert basis.shape == (2, 1)
    assert abs(basis[:, 0] @ [0.6, 0.8]) == pytest.approx(1.0, abs=1e-4)
    Z = prep.transform(X, np.float64)
    assert Z.shape == (200, 1)
    assert Z.mean() == pytest.approx(0.0, abs=1e-9)
    # The projection keeps almost all the spread: the variance along the line.
    assert Z.var() == pytest.approx((X - X.mean(0)).var(axis=0).sum(), rel=1e-3)


def test_pca_variance_fraction_picks_the_fewest_components():
    X = _points_on_a_line(np.random.default_rng(1))
    one = Preprocessor.fit([{"pca": {"components": 0.99}}], X, np.float64)
    both = Preprocessor.fit([{"pca": {"components": 1.0}}], X, np.float64)
    assert one.output_width(2) == 1
    assert both.output_width(2) == 2


def test_pca_with_more_components_than_features_is_a_config_error():
    from nntrain.errors import ConfigError

    with pytest.raises(ConfigError, match="keeps 3 components but the data has 2"):
        Preprocessor.fit([{"pca": {"components": 3}}], np.eye(2), np.float64)


def test_whitening_gives_unit_variance_and_bounded_gain():
    X = _points_on_a_line(np.random.default_rng(2))
    epsilon = 1e-2
    prep = Preprocessor.fit([{"whiten": {"components": 1.0, "epsilon": epsilon}}],
                            X, np.float64)
    Z = prep.transform(X, np.float64)
    variances = Z.var(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(X.T, bias=True)))[::-1]
    np.testing.assert_allclose(variances, eigenvalues / (eigenvalues + epsilon),
                               rtol=1e-8)
    np.testing.assert_allclose(np.cov(Z.T, bias=True)[0, 1], 0.0, atol=1e-10)
    # A direction with (near) zero variance is multiplied by at most 1/sqrt(eps).
    flat = np.column_stack([X[:, 0], np.full(200, 3.0)])
    gain = Preprocessor.fit([{"whiten": {"components": 2, "epsilon": epsilon}}],
                            flat, np.float64).state()["whiten.scale"]
    assert gain.max() <= 1 / np.sqrt(epsilon) + 1e-12


@pytest.mark.parametrize("steps", [
    ["center", "scale"], [{"pca": {"components": 1}}],
    [{"whiten": {"components": 2, "epsilon": 0.01}}], ["image_mean"],
])
def test_test_split_is_transformed_with_training_statistics_never_its_own(steps):
    rng = np.random.default_rng(5)
    X_train = _points_on_a_line(rng)
    X_test = _points_on_a_line(rng, 50) * 3 + 100  # a very different distribution
    prep = Preprocessor.fit(steps, X_train, np.float64)
    from_training = prep.transform(X_test, np.float64)
    refit_on_test = Preprocessor.fit(steps, X_test, np.float64).transform(X_test,
                                                                           np.float64)
    assert not np.allclose(from_training, refit_on_test)
    # Rebuilt from its saved state, the preprocessing gives the same numbers.
    restored = Preprocessor.from_state(steps, prep.state(), 2)
    np.testing.assert_array_equal(restored.transform(X_test, np.float64), from_training)


# Options of each preprocessing step to fit, per step.
STEP_OPTIONS = {
    "center": [{}], "scale": [{}], "image_mean": [{}],
    "pca": [{}, {"components": 2}], "whiten": [{}, {"components": 0.5}],
}


def test_the_step_option_table_covers_every_step():
    assert set(STEP_OPTIONS) == set(STEPS)


@pytest.mark.parametrize("name, options", [
    (name, options) for name, each in STEP_OPTIONS.items() for options in each])
def test_each_steps_kept_arrays_are_those_its_state_gives(name, options):
    X = np.random.default_rng(0).standard_normal((8, 4))

    state = STEPS[name](**options).fit(X, (2, 2)).state()

    kept = STEPS[name].kept
    assert set(kept) == set(state)
    assert all(kept[key] in (None, array.ndim) for key, array in state.items())


@pytest.mark.parametrize("step", ["pca", "whiten"])
def test_a_covariance_beyond_the_memory_bound_is_refused_before_it_is_built(
        monkeypatch, step):
    # The bound of 9 features, in place of 11,585: data of 10 is refused, of 9 not.
    monkeypatch.setattr("nntrain.data.preprocess.MAX_COVARIANCE_BYTES", 9 * 9 * 8)
    X = np.random.default_rng(0).normal(size=(30, 10))

    with pytest.raises(ConfigError, match="^" + re.escape(
            f"data.preprocess: {step} needs a 10 x 10 covariance matrix (0.00 GiB,"
            " over the 1 GiB nntrain builds) for data of 10 features; use it on at"
            " most 9 features (reduce the data first, such as smaller images), or"
            " leave it out") + "$"):
        Preprocessor.fit([step], X, np.float64)
    Preprocessor.fit([step], X[:, :9], np.float64)


@pytest.mark.parametrize("vary", [False, True])
def test_training_data_of_constant_features_only_is_warned_of(write_npz, vary):
    X = np.ones((60, 4))
    if vary:
        X[:, 2] = np.arange(60) % 2  # a feature that varies in every split
    path = write_npz(X_train=X, y_train=np.arange(60) % 3)
    config = resolve_config(tiny_config_dict(path))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_data(config)

    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    # Every fifth row is the test split, then the validation split is drawn.
    training = 60 - 60 // 5 - TINY_VALIDATION
    assert said == ([] if vary else [
        f"every one of the 4 features is constant over the {training} training"
        " samples, so nothing tells the classes apart; check the data"])


def test_whitening_that_overflows_with_a_tiny_epsilon_names_the_epsilon():
    # Rank-deficient data (each column twice): its empty directions, of eigenvalue
    # about 1e-16 from rounding, are multiplied by up to 1 / sqrt(1e-300) = 1e150.
    base = np.random.default_rng(0).normal(size=(200, 3))
    X = np.hstack([base, base])
    steps = [{"whiten": {"components": 6, "epsilon": 1e-300}}]

    with pytest.raises(DataError) as caught:
        Preprocessor.fit_transform(steps, X, np.dtype(np.float32))

    assert str(caught.value).endswith(
        "; raise whiten's epsilon (now 1e-300; a direction the training data hardly"
        " fills is multiplied by up to 1 / sqrt(epsilon)), or scale the data down")


@pytest.mark.parametrize("step", [{"pca": {"components": 3}},
                                  {"whiten": {"components": 3}}])
def test_a_constant_feature_kept_as_a_component_is_not_blown_up_by_scale(step):
    # The constant 0.1 becomes a component of about 1e-17 plus 1e-30 of the
    # others (rounding in the eigenvectors): scaled, a constant of 1e16.
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=3000), rng.normal(size=3000),
                         np.full(3000, 0.1)])

    prep, out = Preprocessor.fit_transform([step, "scale"], X, np.float32)

    assert np.abs(out).max() < 10
    assert np.count_nonzero(prep.steps[-1].factor) == 2


def test_the_mean_of_a_million_rows_is_exact_to_its_last_place():
    # Chunk sums added one after another leave 0.1's mean ~90 units in its last
    # place off; centred by that mean, a constant feature would not be 0.
    X = np.full((1_000_000, 1), 0.1)

    assert column_mean(X)[0] == 0.1


def test_a_feature_with_one_outlier_in_a_million_is_standardized_not_blown_up():
    # 0.1 everywhere but one row one unit in the last place higher: centred and
    # scaled, std 1, the outlier at about sqrt(N) = 1000, the rest at 0 (the true
    # mean, 1e-6 of a unit above 0.1, rounds to 0.1), so a mean of 0.001.
    X = np.full((1_000_000, 1), 0.1)
    X[0, 0] = np.nextafter(0.1, 1.0)

    _, out = Preprocessor.fit_transform(["center", "scale"], X, np.float32)

    assert abs(float(out.astype(np.float64).mean())) < 2e-3
    assert float(out.astype(np.float64).std()) == pytest.approx(1.0, rel=1e-3)
    assert out[0, 0] == pytest.approx(1000.0, rel=1e-3)


def test_a_spread_whose_std_rounds_to_0_is_refused_not_zeroed():
    X = np.array([[5e-324], [1e-323]])  # a std of 2.5e-324, below every float

    with pytest.raises(DataError, match="too little for float64 to divide by"):
        Preprocessor.fit(["center", "scale"], X, np.float64)
