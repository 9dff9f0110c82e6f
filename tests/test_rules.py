"""Update rules against hand-computed iterates on f(w) = w^2 (gradient 2w)."""

import numpy as np
import pytest

from nntrain.nn.flat import FlatArrays
from nntrain.optim.rules import (
    RULES,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Momentum,
    Nesterov,
    RMSProp,
)


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
    assert rule.state["w"]["decayed_square_sum"].dtype == np.float32


def test_nesterov_iterates():
    # v_prev = 0: v1 = -0.2, w1 = 1 - 0 + 1.9 * -0.2 = 0.62
    # g = 1.24: v2 = 0.9 * -0.2 - 0.124 = -0.304, w2 = 0.62 + 0.18 + 1.9 * -0.304
    w2 = 0.62 + 0.9 * 0.2 + 1.9 * -0.304
    assert _iterates(Nesterov(lr=0.1, momentum=0.9), steps=2) == pytest.approx(
        [0.62, w2])


def test_adagrad_iterates():
    # s1 = 4, w1 = 1 - 0.1 * 2 / 2 = 0.9; s2 = 4 + 3.24, w2 = 0.9 - 0.18 / sqrt(7.24)
    values = _iterates(Adagrad(lr=0.1, eps=0.0), steps=2)
    assert values == pytest.approx([0.9, 0.9 - 0.18 / np.sqrt(7.24)])


def test_rmsprop_iterates():
    # a1 = 0.1 * 4 = 0.4, w1 = 1 - 0.01 * 2 / sqrt(0.4)
    w1 = 1 - 0.01 * 2 / np.sqrt(0.4)
    a2 = 0.9 * 0.4 + 0.1 * (2 * w1) ** 2
    w2 = w1 - 0.01 * 2 * w1 / np.sqrt(a2)
    values = _iterates(RMSProp(lr=0.01, decay=0.9, eps=0.0), steps=2)
    assert values == pytest.approx([w1, w2], rel=1e-12)


def test_rmsprop_cache_is_an_average_bounded_by_the_largest_squared_gradient():
    rule = RMSProp(lr=1e-3, decay=0.9)
    params = {"w": np.zeros(3)}
    rng = np.random.default_rng(0)
    largest = 0.0
    for _ in range(500):
        grad = rng.uniform(-2, 2, size=3)
        largest = max(largest, float(np.max(grad**2)))
        rule.step(params, {"w": grad})
        assert np.all(rule.state["w"]["mean_square"] <= largest + 1e-12)


def test_adamw_decays_weights_independently_of_the_gradient():
    rule = AdamW(lr=0.1, weight_decay=0.5)
    params = {"w": np.array([2.0])}
    rule.step(params, {"w": np.array([0.0])})
    # decay first: 2 * (1 - 0.05) = 1.9; a zero gradient then moves nothing
    assert params["w"][0] == pytest.approx(1.9)


def test_every_rule_keeps_state_arrays_named_for_what_they_hold():
    expected = {"sgd": set(), "momentum": {"velocity"}, "nesterov": {"velocity"},
                "adagrad": {"sum_of_squares"}, "rmsprop": {"mean_square"},
                "adam": {"decayed_gradient_sum", "decayed_square_sum"},
                "adamw": {"decayed_gradient_sum", "decayed_square_sum"}}
    for name, slots in expected.items():
        rule = RULES[name](lr=0.1)
        rule.step({"w": np.ones(2)}, {"w": np.ones(2)})
        assert {key.split("/")[1] for key in rule.state_arrays()} == slots, name
        assert rule.steps == 1


def _subnormal_count(array) -> int:
    return int(((array != 0) & (np.abs(array) < np.finfo(array.dtype).tiny)).sum())


@pytest.mark.parametrize("flat", [False, True], ids=["dict", "flat"])
@pytest.mark.parametrize("rule_class", [Adam, Momentum])
def test_state_of_a_parameter_whose_gradient_stopped_never_stays_subnormal(
        rule_class, flat):
    # After one gradient of 1, w[0]'s state shrinks by 0.9 a step: it is
    # subnormal in float32 from about step 830, and 0.9 times its last values
    # rounds back to them, so left alone it would stay subnormal. w[1] gets a
    # gradient of 1 at every step; its state must be untouched by the flush.
    from nntrain.optim.rules import FLUSH_SUBNORMALS_EVERY

    rule = rule_class(lr=0.1)
    params = {"w": np.zeros(2, np.float32)}
    gradient = {"w": np.ones(2, np.float32)}
    if flat:
        params, gradient = FlatArrays.holding(params), FlatArrays.holding(gradient)
    rule.step(params, gradient)
    gradient["w"][0] = 0
    steps = 1000 // FLUSH_SUBNORMALS_EVERY * FLUSH_SUBNORMALS_EVERY + 2
    for _ in range(2, steps + 1):
        rule.step(params, gradient)

    first_slot = rule.state["w"][rule.slots[0]]
    assert first_slot[0] == 0
    assert all(_subnormal_count(value) == 0 for value in rule.state["w"].values())
    if rule_class is Adam:  # a decayed sum of ones: (1 - 0.9^t) / 0.1
        assert first_slot[1] == pytest.approx(10 * (1 - 0.9 ** steps), rel=1e-5)
    else:  # the velocity of a constant gradient: -lr / (1 - 0.9)
        assert first_slot[1] == pytest.approx(-1.0, rel=1e-5)


def test_flushing_zeroes_exactly_the_subnormal_values():
    rule = Adam()
    tiny = np.finfo(np.float32).tiny
    values = np.array([tiny, tiny / 2, -tiny / 4, -tiny, 1e-45, 0, 3.5],
                      np.float32)
    rule.state = {"w": {"decayed_gradient_sum": values.copy(),
                        "decayed_square_sum": np.abs(values)}}
    rule.flush_subnormals()
    np.testing.assert_array_equal(rule.state["w"]["decayed_gradient_sum"],
                                  np.array([tiny, 0, 0, -tiny, 0, 0, 3.5],
                                           np.float32))
    np.testing.assert_array_equal(rule.state["w"]["decayed_square_sum"],
                                  np.array([tiny, 0, 0, tiny, 0, 0, 3.5],
                                           np.float32))
