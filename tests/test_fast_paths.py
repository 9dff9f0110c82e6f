"""The faster forms of the layers' maths give the results of the plain ones, to the
bit, and keep float32 runs in float32."""

import numpy as np
import pytest

from nntrain.nn import functional as F
from nntrain.nn.layers import LAYERS, BuildContext

SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -3.5, 2.0]


def _bits(array: np.ndarray) -> bytes:
    return array.dtype.str.encode() + array.shape.__repr__().encode() + array.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_is_where_to_the_bit_with_nan_signed_zeros_and_infinities(dtype):
    values = np.array(SPECIAL, dtype=dtype)
    a = np.repeat(values, len(values)).reshape(len(values), -1)
    b = a.T.copy()
    for condition in (a > b, a >= 0, np.isnan(a), np.zeros_like(a, bool)):
        assert _bits(F.select(condition, a, b)) == _bits(np.where(condition, a, b))


def test_select_takes_strided_views():
    z = np.arange(24, dtype=np.float32).reshape(3, 4, 2) - 10
    a, b = z[..., 1], z[..., 0]
    assert _bits(F.select(a > 5, a, b)) == _bits(np.where(a > 5, a, b))


@pytest.mark.parametrize("a, b, condition", [
    (np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float64), (2, 1)),
    (np.zeros((2, 1), np.float32), np.zeros((2, 2), np.float32), (2, 1)),
    (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), (2, 1)),
    (np.zeros(3, np.int64), np.zeros(3, np.float64), (3,)),
])
def test_select_refuses_arrays_whose_bits_it_would_mix(a, b, condition):
    with pytest.raises(ValueError, match="select needs a and b of one dtype and"
                       " shape, and the condition of that shape"):
        F.select(np.ones(condition, bool), a, b)


def test_activations_take_a_numpy_float64_slope_beside_float32_input():
    x = np.array([[-2.0], [3.0]], np.float32)
    dout = np.array([[4.0], [5.0]], np.float32)
    out = F.elu_forward(x, np.float64(1.0))
    expected = {
        "elu": (out, [[np.expm1(np.float32(-2.0))], [3.0]]),
        "elu_back": (F.elu_backward(dout, x, out, np.float64(1.0)),
                     [[4.0 * np.exp(np.float32(-2.0))], [5.0]]),
        "leaky": (F.leaky_relu_forward(x, np.float64(0.5)), [[-1.0], [3.0]]),
        "leaky_back": (F.leaky_relu_backward(dout, x, np.float64(0.5)),
                       [[2.0], [5.0]]),
    }
    for name, (got, values) in expected.items():
        assert got.dtype == np.float32 and got.shape == (2, 1), name
        np.testing.assert_allclose(got, values, rtol=1e-6, err_msg=name)


def test_activations_of_integer_input_are_float64_as_np_where_gave():
    x = np.array([-2, 0, 3])
    assert _bits(F.leaky_relu_forward(x, 0.5)) == _bits(np.array([-1.0, 0.0, 3.0]))
    assert _bits(F.leaky_relu_backward(np.array([4, 4, 4]), x, 0.5)) == _bits(
        np.array([2.0, 2.0, 4.0]))
    assert _bits(F.elu_forward(x, 1.0)) == _bits(
        np.array([np.expm1(-2.0), 0.0, 3.0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_match_their_np_where_definitions_to_the_bit(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.array(SPECIAL), 30 * rng.standard_normal(201)])
    x = x.astype(dtype).reshape(2, -1)
    dout = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(x))
        elu = np.where(x > 0, x, 1.5 * np.expm1(np.minimum(x, 0)))
        expected = {
            "leaky": np.where(x > 0, x, x * 0.2),
            "leaky_back": np.where(x > 0, dout, dout * 0.2),
            "sigmoid": np.where(x >= 0, 1, e) / (1 + e),
            "elu": elu,
            "elu_back": np.where(x > 0, dout, dout * (elu + 1.5)),
        }
        got = {
            "leaky": F.leaky_relu_forward(x, 0.2),
            "leaky_back": F.leaky_relu_backward(dout, x, 0.2),
            "sigmoid": F.sigmoid_forward(x),
            "elu": F.elu_forward(x, 1.5),
            "elu_back": F.elu_backward(dout, x, elu, 1.5),
        }
    for name in expected:
        assert _bits(got[name]) == _bits(expected[name]), name


@pytest.mark.parametrize("pieces", [2, 3])
def test_maxout_winner_and_output_are_argmax_s_with_ties_and_nan(pieces):
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, (40, 5 * pieces)).astype(np.float32)  # many ties
    W = np.eye(5 * pieces, dtype=np.float32)  # the pieces are x itself, plus b
    b = np.zeros(5 * pieces, np.float32)
    b[[0, 2, -1]] = [np.nan, -np.inf, np.nan]  # a NaN piece, and a unit all NaN
    if pieces == 3:
        b[3:6] = np.nan
    z = (x @ W + b).reshape(40, 5, pieces)
    out, winner = F.maxout_forward(x, W, b, pieces)
    expected_winner = z.argmax(axis=2)
    expected_out = np.take_along_axis(z, expected_winner[..., None], axis=2)[..., 0]
    np.testing.assert_array_equal(winner, expected_winner)
    assert _bits(out) == _bits(expected_out)

    dout = rng.standard_normal((40, 5)).astype(np.float32)
    dz = np.zeros_like(z)
    np.put_along_axis(dz, expected_winner[..., None], dout[..., None], axis=2)
    dx, dW, db = F.maxout_backward(dout, x, W, winner, pieces)
    assert _bits(db) == _bits(np.ones(40, np.float32) @ dz.reshape(40, -1))
    assert _bits(dW) == _bits(x.T @ dz.reshape(40, -1))


def test_maxout_writes_its_gradients_into_their_storage():
    context = BuildContext(np.random.default_rng(0), np.random.default_rng(1),
                           np.dtype(np.float32))
    layer = LAYERS["maxout"]("maxout1", 4, 3, context, pieces=2)
    storage = {key: grad for key, grad in layer.grads.items()}
    layer.forward(np.ones((2, 4), np.float32), training=True)
    _, grads = layer.backward(np.ones((2, 3), np.float32))
    assert all(grads[key] is storage[key] for key in ("W", "b"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_add_l1_gradient_adds_strength_times_sign_to_the_bit(dtype, layout):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((300, 70)).astype(dtype)  # 21,000: a partial block
    W[0, :3] = [0.0, -0.0, np.nan]
    grad = rng.standard_normal(W.shape).astype(dtype)
    if layout == "transposed":
        W, grad = W.T, grad.T
    expected = grad + 3e-4 * np.sign(W)
    F.add_l1_gradient(grad, W, 3e-4)
    assert _bits(grad) == _bits(expected)


def _normalization_reference(x, dout, gamma, beta, axis):
    """The normalization's forward and backward as the plain formulas."""
    keep = axis == 1
    mean = x.mean(axis=axis, keepdims=keep)
    centered = x - mean
    inv_std = 1 / np.sqrt(np.mean(centered * centered, axis=axis, keepdims=keep)
                          + 1e-5)
    x_hat = centered * inv_std
    count = x.shape[axis]
    dx_hat = dout * gamma
    dx = (count * dx_hat - dx_hat.sum(axis=axis, keepdims=keep)
          - x_hat * np.sum(dx_hat * x_hat, axis=axis, keepdims=keep))
    dx *= inv_std / count
    return x_hat * gamma + beta, dx, np.sum(dout * x_hat, axis=0), dout.sum(axis=0)


@pytest.mark.parametrize("kind, axis", [("batchnorm", 0), ("layernorm", 1)])
def test_normalization_matches_its_formulas_to_the_bit_and_stays_float32(kind, axis):
    rng = np.random.default_rng(3)
    x = (3 * rng.standard_normal((16, 6)) + 1).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    context = BuildContext(rng, rng, np.dtype(np.float32))
    layer = LAYERS[kind](kind, 6, context)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, 6)
    layer.params["beta"][...] = rng.uniform(-1, 1, 6)
    out = layer.forward(x, training=True)
    dx, grads = layer.backward(dout)
    expected = _normalization_reference(x, dout, layer.params["gamma"],
                                        layer.params["beta"], axis)
    for got, want in zip((out, dx, grads["gamma"], grads["beta"]), expected):
        assert _bits(got) == _bits(want)
    kept = [layer.x_hat, layer.inv_std, *layer.buffers.values(),
            layer.forward(x, training=False)]
    assert {array.dtype for array in kept} == {np.dtype(np.float32)}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_a_float32_layer_keeps_and_returns_only_float32_arrays(kind):
    rng = np.random.default_rng(4)
    context = BuildContext(rng, rng, np.dtype(np.float32))
    sized = LAYERS[kind].sized
    layer = (LAYERS[kind](kind, 8, 5, context) if sized
             else LAYERS[kind](kind, 8, context))
    x = rng.standard_normal((32, 8)).astype(np.float32)
    out = layer.forward(x, training=True)
    dx, grads = layer.backward(np.ones_like(out))
    kept = [value for value in vars(layer).values() if isinstance(value, np.ndarray)]
    floats = [out, dx, *grads.values(), *kept, *layer.buffers.values()]
    assert {a.dtype for a in floats if a.dtype.kind == "f"} == {np.dtype(np.float32)}
