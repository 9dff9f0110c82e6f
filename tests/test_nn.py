"""Layers, the softmax loss and the model, against closed forms and finite
differences."""

import re
import warnings

import numpy as np
import pytest

from nntrain.gradcheck import (
    ParamCheck,
    check_array,
    check_library,
    check_model,
    format_report,
)
from nntrain.nn import functional as F
from nntrain.nn.init import init_weights
from nntrain.nn.layers import Affine, BuildContext, Dropout, ReLU
from nntrain.nn.model import Model


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_affine_forward_matches_hand_computation():
    x = np.array([[1.0, 2.0]])
    W = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 1.0]])
    b = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(F.affine_forward(x, W, b), [[2.1, 4.2, 1.3]])


def test_affine_backward_skips_input_gradient_when_not_needed(rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    dout = np.ones((3, 2))
    dx, dW, db = F.affine_backward(dout, x, W, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dW, x.T @ dout)
    np.testing.assert_allclose(db, [3.0, 3.0])


@pytest.mark.parametrize("name", [
    "affine.x", "affine.W", "affine.b", "maxout.x", "maxout.W", "maxout.b", "relu.x",
    "leaky_relu.x", "elu.x", "sigmoid.x", "tanh.x", "batchnorm.x", "batchnorm.gamma",
    "batchnorm.beta", "layernorm.x", "layernorm.gamma", "layernorm.beta", "dropout.x",
    "softmax_loss.scores", "svm_loss.scores",
])
def test_each_layer_and_loss_passes_a_float64_gradient_check(name, rng):
    checks = {check.name: check for check in check_library(rng)}
    assert checks[name].probed > 0
    assert checks[name].norm_error < 1e-8
    assert checks[name].worst_error < 1e-5


def test_relu_gradient_passes_only_where_the_output_was_positive():
    out = F.relu_forward(np.array([[-2.0, 0.0, 3.0]]))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(F.relu_backward(np.ones((1, 3)), out), [[0, 0, 1]])


def test_softmax_loss_of_uniform_scores_is_log_of_class_count():
    loss, dscores = F.softmax_cross_entropy(np.zeros((4, 10)), np.array([0, 3, 5, 9]))
    assert loss == pytest.approx(np.log(10), abs=1e-12)
    np.testing.assert_allclose(dscores.sum(axis=1), 0.0, atol=1e-15)
    assert dscores[0, 0] == pytest.approx((0.1 - 1) / 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scores, label, expected_loss", [
    ([800.0, 0.0], 0, 0.0),
    ([800.0, 0.0], 1, 800.0),
    ([0.0, -1000.0], 0, 0.0),
    ([0.0, -1000.0], 1, 1000.0),
])
def test_softmax_loss_is_finite_for_extreme_scores(scores, label, expected_loss, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dscores = F.softmax_cross_entropy(np.array([scores], dtype=dtype),
                                                np.array([label]))
    assert np.isfinite(loss) and np.all(np.isfinite(dscores))
    assert loss == pytest.approx(expected_loss, rel=1e-6, abs=1e-6)
    # p - onehot: the gradient on the label is p_label - 1, elsewhere p.
    probabilities = np.exp(np.array(scores, dtype=np.float64) - max(scores))
    probabilities /= probabilities.sum()
    expected = probabilities - np.eye(2)[label]
    np.testing.assert_allclose(dscores[0], expected, atol=1e-6)


@pytest.mark.parametrize("scheme, expected_std", [
    ("small", 0.05), ("xavier", np.sqrt(1 / 400)), ("he", np.sqrt(2 / 400)),
])
def test_initializer_std_follows_its_formula(scheme, expected_std, rng):
    W = init_weights(scheme, 400, 100, rng, std=0.05, dtype=np.float64)
    assert W.shape == (400, 100)
    # 40,000 draws: the sample std is within 1.5% of the true one.
    assert W.std() == pytest.approx(expected_std, rel=0.015)
    assert abs(W.mean()) < 4 * expected_std / np.sqrt(W.size)


def _context(rng):
    return BuildContext(rng, rng, np.dtype(np.float64), init="he")


def test_biases_start_at_zero(rng):
    layer = Affine("affine1", 5, 3, _context(rng))
    np.testing.assert_array_equal(layer.params["b"], np.zeros(3))


def _tiny_model(rng, l2=0.0, l1=0.0):
    context = _context(rng)
    layers = [Affine("affine1", 4, 5, context), ReLU("relu1", 5),
              Affine("affine2", 5, 3, context)]
    return Model(layers, "softmax", l2=l2, l1=l1)


def test_l2_convention_is_half_lambda_sum_of_squared_weights(rng):
    model = _tiny_model(rng, l2=0.3)
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    result = model.forward_backward(X, y)
    W1, W2 = model.params["affine1.W"], model.params["affine2.W"]
    expected = 0.5 * 0.3 * (np.sum(W1**2) + np.sum(W2**2))
    assert result.reg_loss == pytest.approx(expected, rel=1e-12)
    assert result.loss == pytest.approx(result.data_loss + expected, rel=1e-12)
    assert model.regularization("affine1.W") == pytest.approx(
        0.5 * 0.3 * np.sum(W1**2), rel=1e-12)
    assert model.regularization("affine1.b") == 0.0

    # Biases are not decayed: their gradient is the same with and without l2.
    plain = Model(model.layers, "softmax", l2=0.0).forward_backward(X, y)
    np.testing.assert_allclose(result.grads["affine1.b"], plain.grads["affine1.b"])
    np.testing.assert_allclose(result.grads["affine1.W"] - plain.grads["affine1.W"],
                               0.3 * W1, rtol=1e-12)


def test_model_gradients_with_l2_match_numeric_ones(rng):
    model = _tiny_model(rng, l2=0.05)
    X, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
    grads = model.forward_backward(X, y).grads
    for name, param in model.params.items():
        check = check_array(name, param, grads[name],
                            lambda: model.objective(X, y), rng)
        assert check.passed and check.norm_error < 1e-8, name


def test_gradcheck_worst_entry_catches_one_wrong_entry_that_the_norm_dilutes(rng):
    x = rng.standard_normal(900)  # under 1,000 entries: every one is probed
    analytic = 2 * x
    analytic[123] *= 1.01  # one entry off by 1%
    check = check_array("x", x, analytic, lambda: float(np.sum(x**2)), rng)
    assert check.probed == 900
    assert check.worst_index == (123,)
    assert check.worst_error == pytest.approx(0.01 / 2.01, rel=1e-4)
    assert not check.passed


@pytest.mark.parametrize("wrong, noted", [(0.0, True), (1e-2, False)])
def test_gradcheck_failure_notes_rounding_noise_only_when_it_explains_the_gap(
        rng, wrong, noted):
    # f = 1e7 + sum(x^2): float64 rounds 1e7 + small to about 2e-9, so each
    # difference of step 1e-5 carries noise near 2.2e-16 * 1e7 / 1e-5 = 2.2e-4,
    # far above the gradients 2x of x ~ 1e-3. A gradient wrong by 1e-2 lies
    # beyond the noise: its failure gets no such note.
    x = rng.standard_normal(20) * 1e-3
    analytic = 2 * x + wrong
    check = check_array("x", x, analytic, lambda: 1e7 + float(np.sum(x**2)), rng)

    assert not check.passed
    note = ("every difference is within rounding noise: a loss of 1e+07 puts about"
            " 2.2e-04 into each; check these at a smaller loss: data centered and"
            " scaled, smaller starting weights (model.init, model.init_std)")
    assert check.notes == ([note] if noted else [])


def test_gradcheck_zero_analytic_gradient_against_nonzero_numeric_fails(rng):
    x = rng.standard_normal(10)
    check = check_array("x", x, np.zeros(10), lambda: float(np.sum(x**2)), rng)
    assert not check.passed
    assert check.worst_error == pytest.approx(1.0)


@pytest.mark.parametrize("l2, l1", [(1e6, 0.0), (0.0, 1e6)])
def test_gradcheck_of_biases_ignores_the_noise_of_a_huge_penalty(rng, l2, l1):
    # The penalty (about 1e6 here) is constant in the biases; in the sum, its
    # rounding noise eps * 1e6 / h ~ 1e-5 would swamp their gradients.
    model = _tiny_model(rng, l2=l2, l1=l1)
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)

    checks = {check.name: check for check in check_model(model, X, y, rng)}

    assert all(check.passed for check in checks.values())
    for name in ("affine1.b", "affine2.b"):
        assert checks[name].worst_error < 1e-7, name


@pytest.mark.parametrize("model_l1, layer_l1", [(0.1, None), (0.0, 0.1)])
def test_gradcheck_skips_probes_where_an_l1_weight_crosses_zero(rng, model_l1,
                                                                 layer_l1):
    # One affine layer and softmax: smooth but for |W| at 0. Three weights lie
    # within the step h = 1e-5 of 0, where (|w + h| - |w - h|) / 2h is not sign(w).
    layer = Affine("affine1", 4, 3, _context(rng), l1=layer_l1)
    model = Model([layer], "softmax", l1=model_l1)
    model.params["affine1.W"][...] = rng.uniform(0.5, 1.0, (4, 3))
    model.params["affine1.W"][[0, 1, 2], [0, 1, 2]] = [3e-6, -5e-6, 0.0]
    X, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)

    check = check_model(model, X, y, rng)[0]

    assert check.name == "affine1.W"
    assert (check.kinks, check.probed) == (3, 12 - 3)
    assert check.passed


def test_check_model_checks_only_the_parameters_of_the_named_layer(rng):
    context = _context(rng)
    model = Model([Affine("affine1", 4, 5, context), ReLU("relu1", 5),
                   Dropout("dropout1", 5, context, drop_probability=0.5),
                   Affine("affine2", 5, 3, context)])
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)

    checks = check_model(model, X, y, rng, layer_name="affine2")

    assert [check.name for check in checks] == ["affine2.W", "affine2.b"]
    assert [check.probed for check in checks] == [15, 3]


def test_check_library_of_one_layer_kind_uses_the_given_samples(rng):
    checks = check_library(rng, samples=3, layer_kind="affine")

    # 3 samples of width 6 into 4 units: x (3, 6), W (6, 4), b (4,).
    assert [(check.name, check.size) for check in checks] == [
        ("affine.x", 18), ("affine.W", 24), ("affine.b", 4)]


def test_check_model_of_a_layer_name_without_parameters_raises(rng):
    context = _context(rng)
    model = Model([Affine("affine1", 4, 5, context), ReLU("relu1", 5),
                   Affine("affine2", 5, 3, context)])
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)

    for name in ("nope", "relu1"):
        with pytest.raises(ValueError, match=rf"^layer_name '{name}' names no layer"
                           r" of the model with parameters; give one of: affine1,"
                           r" affine2$"):
            check_model(model, X, y, rng, layer_name=name)


def test_check_library_of_an_unknown_layer_kind_raises_naming_the_kinds(rng):
    with pytest.raises(ValueError, match=r"^layer_kind 'relu1' is no layer type of"
                       r" the library; give one of: affine, maxout, relu, .*elu"):
        check_library(rng, samples=3, layer_kind="relu1")


def test_gradcheck_array_whose_every_probe_crosses_a_kink_is_not_measured(rng):
    x = rng.standard_normal(3)
    flips = iter(range(100))

    check = check_array("x", x, 2 * x, lambda: float(np.sum(x**2)), rng,
                        lambda: [next(flips)])  # a new region at every evaluation

    assert (check.probed, check.kinks, check.measured) == (0, 3, False)


def test_gradcheck_report_never_counts_an_unmeasured_array_as_agreeing():
    measured = ParamCheck("a", 4, 4, 1e-12, 1e-11, (0,))
    unmeasured = ParamCheck("b", 3, 0, 0.0, 0.0, (), kinks=3)

    lines = format_report([measured, unmeasured])

    assert lines[2].endswith("  not measured  (3 probes crossed a kink and were"
                             " skipped)")
    assert lines[-2] == "not measured (every probe crossed a kink): 1 of 2 arrays: b"
    assert lines[-1] == "PASSED: the 1 measured array agrees"
    assert format_report([unmeasured])[-1] == "NOT CHECKED: no array was measured"


def test_gradcheck_report_of_no_arrays_says_nothing_was_checked():
    lines = format_report([])

    assert lines[0].split() == ["parameter", "probed", "norm-wise", "worst", "entry",
                                "at", "verdict"]
    assert lines[1].startswith("thresholds: ")
    assert lines[2:] == ["NOT CHECKED: no array was measured"]


def test_model_loss_api_training_and_evaluation_modes(rng):
    model = _tiny_model(rng)
    X, y = rng.standard_normal((3, 4)), np.array([0, 1, 2])
    loss, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    assert all(grads[k].shape == model.params[k].shape for k in grads)
    scores = model.loss(X)
    assert scores.shape == (3, 3)
    assert loss == pytest.approx(F.softmax_cross_entropy(scores, y)[0])


# The public entry points check what they are given.


def _api_model():
    from nntrain.config import resolve_config
    from nntrain.nn.model import build_model

    return build_model(resolve_config({"train": {"epochs": 1},
                                       "model": {"hidden": [5]}}), 4, 3)


@pytest.mark.parametrize("X_shape, y, message", [
    ((2, 4), [[0], [1]], r"^y is int64 of shape \(2, 1\); give \(2,\) integer labels"),
    ((2, 4), [0.0, 1.0], r"^y is float64 of shape \(2,\)"),
    ((2, 4), [0, 1, 2], r"^y is int64 of shape \(3,\); give \(2,\)"),
    ((2, 4), [-1, 0], r"^y holds labels from -1 to 0; a label is a class index in"
                      r" \[0, 2\]"),
    ((2, 4), [0, 3], r"^y holds labels from 0 to 3"),
    ((2, 5), [0, 1], r"^X has shape \(2, 5\); give \(N, 4\) samples"),
    ((4,), None, r"^X has shape \(4,\); give \(N, 4\) samples"),
    ((0, 4), None, r"^X has shape \(0, 4\); give \(N, 4\) samples, one per row,"
                   r" N >= 1"),
])
def test_model_loss_refuses_inputs_of_the_wrong_shape_or_range(X_shape, y, message):
    model = _api_model()
    with pytest.raises(ValueError, match=message):
        model.loss(np.zeros(X_shape, dtype=np.float32),
                   None if y is None else np.array(y))


@pytest.mark.parametrize("input_width, num_classes, message", [
    (4, 1, r"^num_classes is 1; a classifier needs an integer number of classes"
           r" >= 2"),
    (4, 2.0, r"^num_classes is 2\.0"),
    (4, True, r"^num_classes is True"),
    (0, 3, r"^input_width is 0; give D"),
    (4.5, 3, r"^input_width is 4\.5"),
    ((2, 0), 3, r"^input_width is \(2, 0\)"),
])
def test_build_model_refuses_impossible_sizes(input_width, num_classes, message):
    from nntrain.config import resolve_config
    from nntrain.nn.model import build_model

    config = resolve_config({"train": {"epochs": 1}})
    with pytest.raises(ValueError, match=message):
        build_model(config, input_width, num_classes)


def test_build_model_takes_the_shape_of_one_sample():
    from nntrain.config import resolve_config
    from nntrain.nn.model import build_model

    model = build_model(resolve_config({"train": {"epochs": 1}}), (2, 3), 4)
    assert model.input_width == 6 and model.num_classes == 4


def test_model_loss_takes_nested_lists_and_refuses_text():
    model = _api_model()
    assert model.loss([[0.0, 1.0, 2.0, 3.0]]).shape == (1, 3)
    with pytest.raises(ValueError, match=r"^X holds <U1 values; give real numbers"):
        model.loss([["a", "b", "c", "d"]])


def test_model_loss_computes_in_the_networks_dtype():
    model = _api_model()  # float32
    X = np.random.default_rng(0).standard_normal((5, 4))  # float64

    scores = model.loss(X)
    loss, _ = model.loss(X, np.arange(5) % 3)

    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, model.loss(X.astype(np.float32)))
    assert loss == model.loss(X.astype(np.float32), np.arange(5) % 3)[0]
    for beyond in ([1e39, 0, 0, 0], [1e39, np.nan, 0, 0]):
        with pytest.raises(ValueError, match=r"^X holds values beyond float32's"
                                             r" range"):
            model.loss(np.array([beyond]))


def test_build_model_fills_in_the_defaults_of_a_hand_made_config():
    from nntrain.nn.model import build_model

    model = build_model({"train": {"epochs": 1}, "model": {"hidden": [5]}}, 4, 3)
    assert model.params["affine1.W"].shape == (4, 5)
    with pytest.raises(TypeError, match=r"^config is str; give a config dict"):
        build_model("configs/digits.yaml", 4, 3)


@pytest.mark.parametrize("factor, passes", [(1.0, True), (1.1, False)])
def test_a_tiny_gradient_is_judged_above_the_noise_not_on_it(factor, passes, rng):
    # f(w) = c sum(w^3) has the gradient 3 c w^2; with c = 1e-7 its RMS is about
    # 5e-7, like the vanishing gradients of a deep net: rounding noise must not fail
    # it, and a 10 % error must.
    w = rng.standard_normal(50)
    c = 1e-7

    def objective():
        return float(c * np.sum(w ** 3)) + 3.0  # a loss of the usual size

    check = check_array("w", w, factor * 3 * c * w ** 2, objective, rng)

    assert check.passed is passes, (check.norm_error, check.worst_error)


@pytest.mark.parametrize("model", [
    {"hidden": [5, 4], "batchnorm": True},
    {"hidden": [5], "activation": "maxout", "pieces": 3, "layernorm": True,
     "drop_probability": 0.5},
    {"layers": [{"maxout": {"units": 6, "pieces": 4}}, {"batchnorm": {}},
                {"affine": {"units": 2}}, {"layernorm": {}}, {"tanh": {}},
                {"affine": {}}]},
])
def test_array_shapes_are_those_of_the_built_model(model):
    from nntrain.nn.model import array_shapes, build_model

    config = {"train": {"epochs": 1}, "model": model}
    built = build_model(config, 4, 3)

    params, buffers = array_shapes(config, 4, 3)
    assert params == {name: W.shape for name, W in built.params.items()}
    assert buffers == {name: b.shape for name, b in built.buffers.items()}


def test_array_shapes_of_a_wide_network_allocate_nothing():
    from nntrain.nn.model import array_shapes

    config = {"train": {"epochs": 1}, "model": {"hidden": [100_000, 100_000]}}

    params, _ = array_shapes(config, 4, 3)
    assert params == {"affine1.W": (4, 100_000), "affine1.b": (100_000,),
                      "affine2.W": (100_000, 100_000), "affine2.b": (100_000,),
                      "affine3.W": (100_000, 3), "affine3.b": (3,)}


def test_a_model_built_to_restore_weights_starts_at_zero_without_a_draw():
    from nntrain.nn.model import build_model

    config = {"train": {"epochs": 1}, "model": {"hidden": [5],
                                                 "activation": "maxout"}}
    model = build_model(config, 4, 3, initialize=False)

    assert {name: W.dtype for name, W in model.params.items()} == dict.fromkeys(
        model.params, np.dtype(np.float32))
    assert all(not W.any() for W in model.params.values())


@pytest.mark.parametrize("shape", [(3, 5), (784, 40), (F.L2_BLOCK + 7,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_add_l2_gradient_adds_strength_times_w_to_the_bit(shape, dtype, layout):
    rng = np.random.default_rng(0)
    W = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    if layout == "transposed":
        W, grad = W.T, grad.T
    expected = grad + dtype(5e-4) * W  # every block, the last one partial

    F.add_l2_gradient(grad, W, 5e-4)

    np.testing.assert_array_equal(grad, expected)


def test_a_perfect_fit_has_a_loss_of_plus_zero():
    # Every log p(true class) is 0: their negated mean was -0.0, printed "-0.0000".
    scores = np.array([[200.0, 0.0], [0.0, 200.0]], np.float32)
    loss, _ = F.softmax_cross_entropy(scores, np.array([0, 1]))
    assert loss == 0.0 and np.copysign(1.0, loss) == 1.0


@pytest.mark.parametrize("wrong, noted", [(0.0, True), (1e-2, False)])
def test_gradcheck_failure_notes_truncation_error_only_when_the_gap_shrinks_so(
        rng, wrong, noted):
    # f = sum(sin(600 x)) curves so sharply that the centred difference's own
    # error, h^2 f''' / 6 ~ 3.6e-3, fails a correct gradient; it shrinks a
    # hundredfold for a step ten times smaller. A gradient wrong by 1e-2 does not.
    x = rng.standard_normal(5)
    analytic = 600 * np.cos(600 * x) + wrong
    check = check_array("x", x, analytic, lambda: float(np.sum(np.sin(600 * x))), rng)

    assert not check.passed
    found = [re.fullmatch(r"at entry \d+ the gap shrinks from (\S+) to (\S+) with a"
                          r" step of 1e-06, as the step's square: the numeric"
                          r" estimate's own truncation error \(the loss curves"
                          r" sharply there: tanh, batch norm, very small weights\),"
                          r" not the analytic gradient's", note)
             for note in check.notes]
    assert bool(found and found[0]) == noted, check.notes
    if noted:
        coarse, fine = (float(value) for value in found[0].groups())
        assert 60 < coarse / fine < 140  # the square of the step's ratio, 100


def test_gradcheck_truncation_note_looks_at_the_entry_reported_worst(rng):
    # Entries 0-3 curve sharply: gaps near 3.6e-3 from truncation alone, the
    # largest absolute ones. Entry 4's gradient, 2e-4, is wrong by a factor of 2:
    # a gap of 2e-4, the worst relative error, which the report names. The note
    # must not clear entry 4 by looking at another.
    x = np.append(rng.standard_normal(4), 1.0)
    analytic = np.append(600 * np.cos(600 * x[:4]), 2 * (2e-4 * x[4]))

    check = check_array(
        "x", x, analytic,
        lambda: float(np.sum(np.sin(600 * x[:4])) + 1e-4 * x[4] ** 2), rng)

    assert not check.passed
    assert check.worst_index == (4,)
    assert check.notes == []
