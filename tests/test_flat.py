"""FlatArrays, and update rules running over flat vectors (block by block)."""

import numpy as np
import pytest

from nntrain.config import load_config
from nntrain.nn.flat import FlatArrays
from nntrain.nn.model import build_model
from nntrain.optim.rules import RULES, UPDATE_BLOCK, Adam

SHAPES = {"a.W": (3, 4), "a.b": (4,), "b.W": (4, 2)}


def test_flat_arrays_are_views_of_one_vector_in_order():
    flat = FlatArrays(SHAPES, np.float32)
    assert flat.vector.shape == (12 + 4 + 8,)
    assert list(flat) == ["a.W", "a.b", "b.W"]
    flat.vector[:] = np.arange(24)
    assert flat["a.W"][0, 1] == 1 and flat["a.b"][0] == 12 and flat["b.W"][3, 1] == 23
    assert all(np.shares_memory(view, flat.vector) for view in flat.values())


def test_assigning_to_a_name_copies_into_its_view():
    flat = FlatArrays(SHAPES, np.float64)
    view = flat["a.b"]
    flat["a.b"] = [1.0, 2.0, 3.0, 4.0]
    flat["a.b"] += 1
    assert flat["a.b"] is view
    assert flat.vector[12:16].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_holding_copies_values_and_refuses_mixed_dtypes():
    arrays = {"x": np.ones((2, 2), np.float32), "y": np.full(3, 7, np.float32)}
    flat = FlatArrays.holding(arrays)
    assert flat.vector.tolist() == [1, 1, 1, 1, 7, 7, 7]
    assert not np.shares_memory(flat["x"], arrays["x"])
    with pytest.raises(ValueError, match="one dtype"):
        FlatArrays.holding({"x": np.ones(2, np.float32), "y": np.ones(2)})


def test_zeros_like_has_the_same_layout_and_other_layouts_differ():
    flat = FlatArrays(SHAPES, np.float32)
    assert flat.same_layout(flat.zeros_like())
    assert not flat.same_layout(FlatArrays({"a.W": (4, 3)}, np.float32))
    assert not flat.same_layout(dict(flat))


def test_model_params_and_grads_are_views_the_layers_use():
    config = load_config(None, ["model.hidden=[5]", "train.epochs=1"])
    model = build_model(config, 3, 2)
    layer = model.layers[0]
    assert layer.params["W"] is model.params["affine1.W"]
    assert layer.grads["W"] is model.grads["affine1.W"]
    X = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    result = model.forward_backward(X, np.arange(6) % 2)
    assert result.grads is model.grads
    # db is the sum of the output gradient over the batch, written into the view.
    assert np.abs(model.grads["affine2.b"].sum()) < 1e-6  # softmax rows sum to 0
    assert np.abs(model.grads.vector).max() > 0


def _random_case(rng, shapes, steps, dtype=np.float64):
    def draw(shape):
        return rng.standard_normal(shape).astype(dtype)

    params = {name: draw(shape) for name, shape in shapes.items()}
    grads = [{name: draw(shape) for name, shape in shapes.items()}
             for _ in range(steps)]
    return params, grads


# Several blocks, cut across arrays, and a partial last one.
BLOCKED_SHAPES = {"w1": (UPDATE_BLOCK + 17, 2), "b1": (5,), "w2": (UPDATE_BLOCK // 3,)}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_flat_update_equals_the_per_array_update_bit_for_bit(name, dtype):
    shapes = BLOCKED_SHAPES
    params, grads = _random_case(np.random.default_rng(1), shapes, 4, dtype)
    separate = RULES[name](lr=0.01)
    flat_rule = RULES[name](lr=0.01)
    flat_params = FlatArrays.holding(params)
    flat_grads = flat_params.zeros_like()
    for step_grads in grads:
        separate.step(params, step_grads)
        for key, value in step_grads.items():
            flat_grads[key] = value
        flat_rule.step(flat_params, flat_grads)
    for key in shapes:
        np.testing.assert_array_equal(flat_params[key], params[key])
    assert flat_rule.state_arrays().keys() == separate.state_arrays().keys()
    for key, value in separate.state_arrays().items():
        np.testing.assert_array_equal(flat_rule.state_arrays()[key], value)


def test_flat_state_loaded_from_a_checkpoint_continues_the_same_way():
    shapes = BLOCKED_SHAPES
    params, grads = _random_case(np.random.default_rng(2), shapes, steps=3,
                                 dtype=np.float32)
    replayed = {name: value.copy() for name, value in params.items()}
    straight = Adam(lr=0.1)
    for step_grads in grads:
        straight.step(params, step_grads)

    # Two steps array by array, a "checkpoint" of the state, then a flat third.
    first_run = Adam(lr=0.1)
    for step_grads in grads[:2]:
        first_run.step(replayed, step_grads)
    resumed = Adam(lr=0.1)
    resumed.load_state_arrays(
        {key: value.copy() for key, value in first_run.state_arrays().items()}, 2)
    flat_params = FlatArrays.holding(replayed)
    resumed.step(flat_params, FlatArrays.holding(grads[2]))
    for name in shapes:
        np.testing.assert_array_equal(flat_params[name], params[name])


def test_adam_reads_the_moments_of_older_checkpoints():
    # One step with gradient g leaves m = (1 - b1) g and v = (1 - b2) g^2; loaded
    # under the old slot names, the second step must equal an uninterrupted run.
    g1, g2 = np.array([0.5, -2.0]), np.array([1.5, 0.25])
    straight = Adam(lr=0.1)
    w = {"w": np.array([1.0, 1.0])}
    straight.step(w, {"w": g1})
    straight.step(w, {"w": g2})

    old = {"w/first_moment": 0.1 * g1, "w/second_moment": 0.001 * g1**2}
    resumed = Adam(lr=0.1)
    resumed.load_state_arrays(old, steps=1)
    w_resumed = {"w": np.array([1.0, 1.0])}
    Adam(lr=0.1).step(w_resumed, {"w": g1})
    resumed.step(w_resumed, {"w": g2})
    np.testing.assert_allclose(w_resumed["w"], w["w"], rtol=1e-14)
