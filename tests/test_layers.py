"""Known values for the layers, losses and regularizers of a network's setup."""

import warnings

import numpy as np
import pytest

from nntrain.nn import functional as F
from nntrain.nn import layers
from nntrain.nn.init import init_weights
from nntrain.nn.layers import LAYERS, BatchNorm, BuildContext, Dropout, Layer, Maxout
from nntrain.nn.model import Model


def _context(seed=0, dtype=np.float64):
    return BuildContext(np.random.default_rng(seed), np.random.default_rng(seed + 1),
                        np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, options", [
    ("sigmoid", {}), ("tanh", {}), ("relu", {}), ("leaky_relu", {"slope": 0.1}),
    ("elu", {"alpha": 1.0}),
])
def test_activations_are_finite_and_silent_at_plus_minus_1000(kind, options, dtype):
    x = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]], dtype=dtype)
    layer = LAYERS[kind](kind, 5, _context(dtype=dtype), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = layer.forward(x, training=True)
        dx, _ = layer.backward(np.ones_like(x))
    assert out.dtype == dtype and dx.dtype == dtype
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))


def test_activation_values_at_known_points():
    x = np.array([-1000.0, -1.0, 0.0, 2.0, 1000.0])
    np.testing.assert_allclose(F.sigmoid_forward(x),
                               [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-2)), 1.0])
    np.testing.assert_allclose(F.leaky_relu_forward(x, 0.1), [-100, -0.1, 0, 2, 1000])
    np.testing.assert_allclose(F.elu_forward(x, 0.5),
                               [-0.5, 0.5 * (np.exp(-1) - 1), 0, 2, 1000])


def test_maxout_takes_the_largest_piece_of_each_unit():
    layer = Maxout("maxout1", 2, 2, _context(), pieces=3)
    # Columns: unit 0 = pieces 0..2, unit 1 = pieces 3..5.
    layer.params["W"][...] = [[1, 2, 3, -1, -2, -3], [0, 0, 0, 0, 0, 0]]
    layer.params["b"][...] = [0, 0, 0, 0, 0, 5]
    out = layer.forward(np.array([[1.0, 7.0], [-1.0, 7.0]]), training=True)
    # Sample 0: unit 0 sees [1, 2, 3], unit 1 sees [-1, -2, -3] + [0, 0, 5].
    # Sample 1: unit 0 sees [-1, -2, -3], unit 1 sees [1, 2, 3] + [0, 0, 5].
    np.testing.assert_allclose(out, [[3.0, 2.0], [-1.0, 8.0]])
    np.testing.assert_array_equal(layer.winner, [[2, 2], [0, 2]])
    dx, grads = layer.backward(np.ones((2, 2)))
    # Only the winning pieces receive gradient.
    np.testing.assert_allclose(grads["b"], [1, 0, 1, 0, 0, 2])


def test_batchnorm_on_four_values_training_and_running_statistics():
    layer = BatchNorm("batchnorm1", 1, _context(), momentum=0.9, epsilon=1e-5)
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    out = layer.forward(x, training=True)
    # mean 2.5, biased variance mean((x - 2.5)^2) = 1.25
    np.testing.assert_allclose(out[:, 0], (x[:, 0] - 2.5) / np.sqrt(1.25 + 1e-5))
    # running = 0.9 * running + 0.1 * batch, from mean 0 and variance 1
    np.testing.assert_allclose(layer.buffers["running_mean"], [0.25])
    np.testing.assert_allclose(layer.buffers["running_var"], [0.9 * 1 + 0.1 * 1.25])

    evaluated = layer.forward(x, training=False)
    expected = (x[:, 0] - 0.25) / np.sqrt(1.025 + 1e-5)
    np.testing.assert_allclose(evaluated[:, 0], expected)
    np.testing.assert_allclose(layer.buffers["running_mean"], [0.25])  # unchanged


def test_layernorm_normalizes_each_sample_in_both_modes():
    layer = LAYERS["layernorm"]("layernorm1", 4, _context(), epsilon=0.0)
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 14.0]])
    expected = np.array([[-3, -1, 1, 3] / np.sqrt(5.0), [-1, -1, -1, 3] / np.sqrt(3.0)])
    np.testing.assert_allclose(layer.forward(x, training=True), expected)
    np.testing.assert_allclose(layer.forward(x, training=False), expected)


def test_dropout_keeps_the_mean_in_training_and_is_identity_in_evaluation():
    layer = Dropout("dropout1", 1000, _context(), drop_probability=0.2)
    x = np.ones((200, 1000))
    out = layer.forward(x, training=True)
    dropped = np.mean(out == 0)
    # 200,000 draws: the dropped fraction and the mean are within 4 sigma.
    assert dropped == pytest.approx(0.2, abs=4 * np.sqrt(0.2 * 0.8 / 2e5))
    assert out.mean() == pytest.approx(1.0, abs=4 * 0.5 / np.sqrt(2e5))
    np.testing.assert_array_equal(np.unique(out), [0.0, 1.25])
    assert layer.forward(x, training=False) is x


def test_dropout_with_zero_probability_is_identity_in_both_modes():
    layer = Dropout("dropout1", 3, _context(), drop_probability=0.0)
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(layer.forward(x, training=True), x)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


def test_dropout_masks_come_from_the_seeded_generator():
    first = Dropout("d", 50, _context(seed=7), 0.5).forward(np.ones((4, 50)), True)
    second = Dropout("d", 50, _context(seed=7), 0.5).forward(np.ones((4, 50)), True)
    third = Dropout("d", 50, _context(seed=8), 0.5).forward(np.ones((4, 50)), True)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


def test_hinge_loss_when_every_score_is_negative():
    scores = np.array([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]])
    # label 2: margins -1+3+1 = 3 and -2+3+1 = 2; label 0: -2+1+1 = 0, -3+1+1 = -1
    loss, dscores = F.multiclass_hinge(scores, np.array([2, 0]))
    assert loss == pytest.approx((5 + 0) / 2)
    np.testing.assert_allclose(dscores, [[0.5, 0.5, -1.0], [0, 0, 0]])


def test_hinge_loss_of_equal_scores_is_classes_minus_one():
    loss, _ = F.multiclass_hinge(np.zeros((3, 10)), np.array([0, 4, 9]))
    assert loss == pytest.approx(9.0)


@pytest.mark.parametrize("scheme, expected_std", [
    ("small", 0.05), ("xavier", np.sqrt(1 / 400)), ("glorot", np.sqrt(2 / 500)),
    ("he", np.sqrt(2 / 400)),
])
def test_initializer_std_of_a_400_by_100_layer(scheme, expected_std):
    W = init_weights(scheme, 400, 100, np.random.default_rng(3), std=0.05,
                     dtype=np.float64)
    assert W.std() == pytest.approx(expected_std, rel=0.015)


def _two_layer_model(**regularization):
    context = _context()
    layers = [LAYERS["affine"]("affine1", 3, 4, context), LAYERS["relu"]("relu1", 4),
              LAYERS["batchnorm"]("batchnorm1", 4, context),
              LAYERS["affine"]("affine2", 4, 2, context)]
    return Model(layers, "softmax", **regularization)


def test_l1_and_l2_apply_to_weights_only():
    model = _two_layer_model(l2=0.2, l1=0.3)
    W1, W2 = model.params["affine1.W"], model.params["affine2.W"]
    expected = sum(0.5 * 0.2 * np.sum(W**2) + 0.3 * np.sum(np.abs(W)) for W in (W1, W2))
    assert model.regularization() == pytest.approx(expected, rel=1e-12)
    assert [p.name for p in model.penalties] == ["affine1.W", "affine2.W"]


def test_per_layer_strength_overrides_the_model_one():
    model = _two_layer_model(l2=0.2)
    model.layers[0].l2 = 0.0
    model = Model(model.layers, "softmax", l2=0.2)
    W2 = model.params["affine2.W"]
    assert model.regularization() == pytest.approx(0.1 * np.sum(W2**2), rel=1e-12)


def test_max_norm_rescales_only_too_long_columns():
    W = np.array([[3.0, 0.1], [4.0, 0.1]])  # column norms 5 and 0.14
    F.max_norm_inplace(W, 2.0)
    np.testing.assert_allclose(W, [[1.2, 0.1], [1.6, 0.1]])


# (input width, units or None, options) of layers to build, per layer type.
BUILDS = {
    "affine": [(5, 3, {}), (1, 1, {"l2": 0.1})],
    "maxout": [(5, 3, {}), (5, 3, {"pieces": 1}), (2, 4, {"pieces": 5})],
    "relu": [(5, None, {})],
    "leaky_relu": [(5, None, {"slope": 0.2})],
    "elu": [(5, None, {"alpha": 0.5})],
    "sigmoid": [(5, None, {})],
    "tanh": [(5, None, {})],
    "batchnorm": [(5, None, {}), (1, None, {"momentum": 0.5})],
    "layernorm": [(5, None, {}), (3, None, {"epsilon": 1e-3})],
    "dropout": [(5, None, {"drop_probability": 0.3})],
}


def test_the_shape_table_covers_every_layer_type():
    assert set(BUILDS) == set(LAYERS)


@pytest.mark.parametrize("init_rng", [np.random.default_rng(0), None])
@pytest.mark.parametrize("kind, in_width, units, options", [
    (kind, *build) for kind, builds in BUILDS.items() for build in builds])
def test_layer_shapes_are_those_of_the_built_layers_arrays(kind, in_width, units,
                                                            options, init_rng):
    context = BuildContext(init_rng, np.random.default_rng(1), np.dtype(np.float32))
    sized = () if units is None else (units,)
    built = LAYERS[kind](kind, in_width, *sized, context, **options)

    params, buffers = LAYERS[kind].shapes(in_width, units, **options)

    assert params == {key: value.shape for key, value in built.params.items()}
    assert buffers == {key: value.shape for key, value in built.buffers.items()}
    assert LAYERS[kind].keeps_arrays == bool(built.params or built.buffers)


def test_a_layer_keeping_arrays_without_its_own_shapes_raises():
    class Scaled(Layer):
        kind = "scaled"

        def __init__(self, name, in_width, context=None):
            super().__init__(name, in_width)
            self.params = {"factor": np.ones(in_width)}

    with pytest.raises(NotImplementedError, match="Scaled keeps params or buffers"
                       r" but does not define shapes\(\)"):
        Scaled.shapes(4)


def test_maxout_without_an_init_generator_builds_only_zeros(monkeypatch):
    def no_draw(*args, **kwargs):
        raise AssertionError("init_weights called for weights to be replaced")

    monkeypatch.setattr(layers, "init_weights", no_draw)
    context = BuildContext(None, np.random.default_rng(0), np.dtype(np.float32))

    layer = Maxout("maxout1", 4, 3, context, pieces=5)

    assert layer.params["W"].shape == (4, 15)
    assert layer.params["W"].dtype == np.float32
    assert not layer.params["W"].any()


def test_maxout_pieces_of_a_unit_are_its_adjacent_columns():
    # Piece j of unit h is drawn j-th, as an ordinary affine layer's weights.
    context = BuildContext(np.random.default_rng(7), np.random.default_rng(0),
                           np.dtype(np.float64), init="small", init_std=1.0)
    layer = Maxout("maxout1", 4, 3, context, pieces=2)

    draws = np.random.default_rng(7).standard_normal((2, 4, 3))
    np.testing.assert_array_equal(layer.params["W"][:, 0::2], draws[0])
    np.testing.assert_array_equal(layer.params["W"][:, 1::2], draws[1])


@pytest.mark.parametrize("dtype, entry", [(np.float32, 1e20), (np.float64, 1e160)])
def test_max_norm_shrinks_a_column_whose_squares_overflow_the_dtype(dtype, entry):
    # The column's squares (1e40 or 1e320) are past the dtype's range; its norm,
    # 2 * entry, is not. Rescaled to norm 1, each of its 4 entries is 0.5.
    W = np.array([[entry, 0.1], [entry, 0.0], [-entry, 0.0], [entry, 0.0]],
                 dtype=dtype)

    F.max_norm_inplace(W, 1.0)

    np.testing.assert_allclose(W[:, 0], [0.5, 0.5, -0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(W[:, 1], np.array([0.1, 0, 0, 0], dtype=dtype))


def test_max_norm_leaves_a_column_holding_inf_as_it_is():
    W = np.array([[np.inf, 3.0], [1.0, 4.0]], dtype=np.float32)

    F.max_norm_inplace(W, 1.0)

    np.testing.assert_array_equal(W[:, 0], [np.inf, 1.0])
    np.testing.assert_allclose(W[:, 1], [0.6, 0.8], rtol=1e-6)
