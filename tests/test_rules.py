"""Update rules against hand-computed iterates on f(w) = w^2 (gradient 2w)."""

import numpy as np
import pytest

from nntrain.optim.rules import SGD, Adam, Momentum


def _iterates(rule, w0=1.0, steps=3):
    params = {"w": np.array([w0])}
    values = []
    for _ in range(steps):
        rule.step(params, {"w": 2 * params["w"]})
        values.append(float(params["w"][0]))
    return values


def test_sgd_iterates():
    # w <- w - 0.1 * 2w = 0.8 w
    assert _iterates(SGD(lr=0.1)) == pytest.approx([0.8, 0.64, 0.512])


def test_momentum_iterates():
    # v1 = -0.2, w1 = 0.8; v2 = 0.9*-0.2 - 0.1*1.6 = -0.34, w2 = 0.46;
    # v3 = 0.9*-0.34 - 0.1*0.92 = -0.398, w3 = 0.062
    assert _iterates(Momentum(lr=0.1, momentum=0.9)) == pytest.approx(
        [0.8, 0.46, 0.062])


def test_adam_first_step_moves_by_lr():
    rule = Adam(lr=0.01)
    assert _iterates(rule, steps=1) == pytest.approx([0.99], abs=1e-9)


def test_adam_with_constant_gradient_moves_by_almost_exactly_lr_each_step():
    rule = Adam(lr=1e-3)
    params = {"w": np.array([5.0, -3.0])}
    for _ in range(50):
        before = params["w"].copy()
        rule.step(params, {"w": np.array([0.7, -2.0])})
        np.testing.assert_allclose(before - params["w"], [1e-3, -1e-3], rtol=1e-6)


def test_each_parameter_array_has_its_own_state():
    rule = Momentum(lr=0.1)
    params = {"a": np.ones(3), "b": np.ones(3)}
    rule.step(params, {"a": np.ones(3), "b": np.zeros(3)})
    assert rule.state["a"]["velocity"] is not rule.state["b"]["velocity"]
    np.testing.assert_allclose(params["b"], np.ones(3))
    assert set(rule.state_arrays()) == {"a/velocity", "b/velocity"}


def test_updates_keep_float32():
    rule = Adam(lr=1e-3)
    params = {"w": np.ones(4, dtype=np.float32)}
    rule.step(params, {"w": np.ones(4, dtype=np.float32)})
    assert params["w"].dtype == np.float32
    assert rule.state["w"]["second_moment"].dtype == np.float32
