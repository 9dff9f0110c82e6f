"""Gradient checking: analytic gradients against centred finite differences.

For a scalar function f and an entry w_i of one of its arrays, the numeric gradient is

    n_i = (f(w_i + h) - f(w_i - h)) / (2 h),      h = 1e-5, everything in float64,

whose error is O(h^2) from truncation plus about eps * |f| / h from rounding; h = 1e-5
balances the two, and for losses of order 1 to 10 a correct gradient agrees to about
1e-11 to 1e-10 absolute (the rounding noise). A model's penalty (0.5 l2 W^2 + l1 |W|)
is differenced apart from the data loss, and only the probed array's own: a penalty
of 1e6 in the sum would add noise of 1e-5 to every gradient, the biases' included,
while apart it adds none where it is constant and, on a weight, noise in proportion
to its own gradient, whatever the strength. Per parameter array two errors are
reported against the analytic gradient a, over the probed entries:

- norm-wise:   ||a - n|| / max(||a|| + ||n||, NORM_FLOOR sqrt(k)), over k probes;
- worst entry: max_i |a_i - n_i| / max(|a_i| + |n_i|, FLOOR), with its index.

FLOOR = 1e-5 is an absolute floor, about 10,000 times the rounding noise: an entry
whose true gradient is smaller than that is judged on its absolute difference
instead, so noise on a near-zero entry raises no false alarm, while an analytic 0
against a numeric 1e-3 still scores 1. An array passes when its norm-wise error is
<= NORM_THRESHOLD (1e-6) and its worst entry's is <= WORST_THRESHOLD (1e-4).

NORM_FLOOR = 1e-4 does for the norm-wise error what FLOOR does for an entry: an
array whose gradients have an RMS below it is judged on the RMS of the difference,
which must stay below 1e-10, the rounding noise. Without it the vanishing gradients
of a deep network (RMS 1e-7 in configs/init-deep.yaml with init small) fail on noise
alone; with it, a gradient of RMS 1e-6 that is wrong by 10 % still scores 1e-3.

An array whose analytic and numeric gradients both have an RMS below ZERO_RMS (1e-8,
still well above the noise) has a zero gradient there: it is reported as "zero", not
as a relative error of noise against noise, and passes. The check as a whole passes
only when every array does, so a zero or tiny gradient in one array never averages
away a mismatch in another. (A zero gradient is expected, for example, for the bias
of an affine layer followed by batch norm, which cancels any shift.)

Probed entries: all of them for arrays with fewer than 1,000 entries, otherwise
SAMPLED_ENTRIES (40) drawn at random. A probe whose +h and -h evaluations fall on
different sides of a kink (a relu, leaky_relu or elu input crossing 0, a change of
the winning maxout piece, a hinge margin crossing 0, a weight under an L1 penalty
crossing 0) measures no derivative; such probes are counted, reported and left out of
the errors. An array whose every probe crossed a kink was not measured: the report
says so, and never counts it among the arrays that agree.

A large loss makes the differences noisy: a loss of 1e6 puts about 2e-5 of
rounding noise into each numeric gradient, which can fail a correct one (data far
from unit scale, not preprocessed). The verdict stands, as a wrong gradient can
hide in that noise too, but an array whose differences all lie within ten times
the noise is reported so, with the fix: preprocess the data. Where the loss curves
sharply, the difference's truncation error can fail a correct gradient too: an
array whose worst gap shrinks as the step's square is reported so (and still fails).
"""

from dataclasses import dataclass, field

import numpy as np

STEP = 1e-5
FLOOR = 1e-5
NORM_FLOOR = 1e-4
ZERO_RMS = 1e-8
NORM_THRESHOLD = 1e-6
WORST_THRESHOLD = 1e-4
FULL_CHECK_BELOW = 1000
NOISE_MARGIN = 10
# A step ten times smaller divides truncation error by 100; 30 leaves room for
# the rounding noise, which grows as the step shrinks.
TRUNCATION_SHRINK = 30
SAMPLED_ENTRIES = 40


@dataclass
class ParamCheck:
    """The outcome for one array: errors, the worst entry, and the verdict."""

    name: str
    size: int
    probed: int
    norm_error: float
    worst_error: float
    worst_index: tuple
    kinks: int = 0
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.norm_error <= NORM_THRESHOLD and self.worst_error <= WORST_THRESHOLD

    @property
    def measured(self) -> bool:
        return self.probed > 0


def probe_indices(shape: tuple, rng: np.random.Generator) -> list[tuple]:
    """Every index of a small array; SAMPLED_ENTRIES distinct random ones otherwise."""
    size = int(np.prod(shape))
    if size < FULL_CHECK_BELOW:
        flat = np.arange(size)
    else:
        flat = np.sort(rng.choice(size, SAMPLED_ENTRIES, replace=False))
    return [np.unravel_index(i, shape) for i in flat]


def check_array(name, array, analytic, objective, rng, region=None) -> ParamCheck:
    """Compare ``analytic`` (the gradient of ``objective()`` with respect to ``array``,
    same shape) with centred differences, perturbing ``array`` in place.

    ``objective()`` returns the function's value, or a tuple of terms that add up to
    it; the terms are then differenced one by one and the differences summed (why:
    the penalty, in the module docstring).

    ``region()``, when given, returns a hashable/comparable description of which
    side of every kink the function is on; probes that change it are left out.
    """
    indices = probe_indices(array.shape, rng)
    analytic_values, numeric_values, measured, kinks = [], [], [], 0
    largest = 0.0  # the largest |f| met, which sets the rounding noise
    for index in indices:
        numeric, size = _difference(array, index, objective, region, STEP)
        largest = max(largest, size)
        if numeric is None:
            kinks += 1
            continue
        numeric_values.append(numeric)
        analytic_values.append(float(analytic[index]))
        measured.append(index)

    check = _summarize(name, array.size, measured, analytic_values, numeric_values,
                       kinks, largest)
    if not check.passed and not check.notes:
        # The entry the report names as the worst: a note about another could
        # clear a wrong gradient there.
        position = measured.index(check.worst_index)
        _note_truncation(check, array, check.worst_index, analytic_values[position],
                         numeric_values[position], objective, region)
    return check


def _difference(array, index, objective, region, step) -> tuple:
    """(the centred difference of ``objective`` at ``array[index]`` with ``step``,
    or None when the two sides lie across a kink; the largest |f| met)."""
    original = array[index]
    array[index] = original + step
    plus = objective()
    side_plus = region() if region else None
    array[index] = original - step
    minus = objective()
    side_minus = region() if region else None
    array[index] = original
    size = float(np.sum(np.abs(plus)))
    if region and not _same_region(side_plus, side_minus):
        return None, size
    return float(np.sum(np.subtract(plus, minus))) / (2 * step), size


def _note_truncation(check, array, index, analytic, numeric, objective,
                     region) -> None:
    """Note, on a failed array, when the gap at its worst entry (``analytic``
    against ``numeric``, the difference with STEP) shrinks about as the square
    of the step (at least TRUNCATION_SHRINK times for a step ten times smaller):
    the centred difference's own truncation error, large where the loss curves
    sharply, not a wrong gradient. The verdict stands, as other entries may
    still be wrong."""
    finer, _ = _difference(array, index, objective, region, STEP / 10)
    if finer is None:
        return
    gap, finer_gap = abs(analytic - numeric), abs(analytic - finer)
    if gap > 0 and finer_gap * TRUNCATION_SHRINK <= gap:
        where = ",".join(map(str, index))
        check.notes.append(
            f"at entry {where} the gap shrinks from {gap:.1e} to {finer_gap:.1e}"
            f" with a step of {STEP / 10:g}, as the step's square: the numeric"
            " estimate's own truncation error (the loss curves sharply there:"
            " tanh, batch norm, very small weights), not the analytic gradient's")


def _same_region(first, second) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first, second))


def _summarize(name, size, measured, analytic_values, numeric_values, kinks,
               largest_loss):
    a = np.array(analytic_values, dtype=np.float64)
    n = np.array(numeric_values, dtype=np.float64)
    notes = []
    if len(a) == 0:
        return ParamCheck(name, size, 0, 0.0, 0.0, (), kinks)  # not measured
    entry_errors = np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), FLOOR)
    worst = int(entry_errors.argmax())
    rms = max(np.sqrt(np.mean(a * a)), np.sqrt(np.mean(n * n)))
    if rms < ZERO_RMS:
        notes.append(f"zero gradient (RMS {rms:.1e}): nothing to compare here")
        norm_error = 0.0
    else:
        scale = max(np.linalg.norm(a) + np.linalg.norm(n), NORM_FLOOR * np.sqrt(len(a)))
        norm_error = np.linalg.norm(a - n) / scale
    check = ParamCheck(name, size, len(a), float(norm_error),
                       float(entry_errors[worst]),
                       tuple(int(i) for i in measured[worst]), kinks, notes)
    noise = np.finfo(np.float64).eps * largest_loss / STEP  # in each difference
    if not check.passed and np.abs(a - n).max() <= NOISE_MARGIN * noise:
        notes.append(f"every difference is within rounding noise: a loss of"
                     f" {largest_loss:.2g} puts about {noise:.1e} into each;"
                     " check these at a smaller loss: data centered and scaled,"
                     " smaller starting weights (model.init, model.init_std)")
    return check


def check_model(model, X, y, rng, layer_name=None) -> list[ParamCheck]:
    """Check every parameter of ``model`` (float64) on the batch X: (N, D), y: (N,),
    or only those of the layer named ``layer_name`` (``affine1``).

    Training mode throughout: batch norm uses the batch's statistics, and dropout
    keeps the masks of the first pass (a fixed function to differentiate).

    Raises FloatingPointError when any of the check's float64 arithmetic overflows
    or makes a NaN (data of scale 1e155, say): the errors it would report then say
    nothing about the gradients.
    """
    from nntrain.nn import functional as F
    from nntrain.nn.model import LOSSES

    if layer_name is not None:
        _check_layer_name(model, layer_name)
    dropouts = [layer for layer in model.layers if layer.kind == "dropout"]
    for layer in dropouts:
        layer.freeze_mask = True
    last = {}
    # |w| has a kink at w = 0: the signs of every weight under an L1 penalty.
    l1_weights = [model.params[penalty.name] for penalty in model.penalties
                  if penalty.l1]

    def objective_of(name):
        # The data loss and the array's own penalty, apart (module docstring).
        def objective():
            last["scores"] = model.scores(X, training=True)
            return (LOSSES[model.loss_name](last["scores"], y)[0],
                    model.regularization(name))

        return objective

    def region():
        states = model.kink_state()
        if model.loss_name == "svm":  # the hinge's kink: a margin crossing 0
            states.append(F.svm_margins(last["scores"], y) > 0)
        return states + [np.sign(W) for W in l1_weights]

    try:
        with np.errstate(over="raise", invalid="raise"):
            grads = model.forward_backward(X, y).grads
            return [check_array(name, param, grads[name], objective_of(name), rng,
                                region)
                    for name, param in model.params.items()
                    if layer_name in (None, name.partition(".")[0])]
    finally:
        for layer in dropouts:
            layer.freeze_mask = False


def _check_layer_name(model, layer_name: str) -> None:
    """Refuse a ``layer_name`` that names no layer of ``model`` with parameters:
    checking nothing must not pass for a check that passed."""
    checked = [layer.name for layer in model.layers if layer.params]
    if layer_name not in checked:
        raise ValueError(f"layer_name {layer_name!r} names no layer of the model"
                         f" with parameters; give one of: {', '.join(checked)}")


def check_library(rng, samples=8, layer_kind=None) -> list[ParamCheck]:
    """Check every layer and loss of the library on random float64 batches of
    ``samples`` rows, then two small networks with every regularizer; or only the
    layer of kind ``layer_kind`` (``maxout``), its input and its parameters."""
    from nntrain.nn import functional as F
    from nntrain.nn.layers import LAYERS, BuildContext
    from nntrain.nn.model import Model

    if layer_kind is not None and layer_kind not in LAYERS:
        raise ValueError(f"layer_kind {layer_kind!r} is no layer type of the"
                         f" library; give one of: {', '.join(LAYERS)}")
    context = BuildContext(rng, rng, np.dtype(np.float64), init="xavier")
    x = rng.standard_normal((samples, 6))
    # Keep inputs at least 0.1 away from 0, where relu, leaky_relu and elu have
    # kinks, so that no probe of the input crosses one.
    x += np.where(x >= 0, 0.1, -0.1)
    layer_options = {
        "affine": {"units": 4}, "maxout": {"units": 4, "pieces": 3},
        "leaky_relu": {"slope": 0.1}, "elu": {"alpha": 0.7},
        "dropout": {"drop_probability": 0.3},
    }
    checks = []
    for kind, layer_class in LAYERS.items():
        if layer_kind not in (None, kind):
            continue
        options = layer_options.get(kind, {})
        if layer_class.sized:
            built = layer_class(kind, 6, options.pop("units"), context, **options)
        else:
            built = layer_class(kind, 6, context, **options)
        for key in ("b", "beta"):  # non-zero starting values test more of the maths
            if key in built.params:
                built.params[key][...] = rng.standard_normal(built.params[key].shape)
        checks += _check_layer(built, x, rng)
    if layer_kind is not None:
        return checks

    scores = rng.standard_normal((samples, 4)) * 3
    labels = rng.integers(0, 4, size=samples)
    checks.append(check_array(
        "softmax_loss.scores", scores, F.softmax_cross_entropy(scores, labels)[1],
        lambda: F.softmax_cross_entropy(scores, labels)[0], rng,
    ))
    checks.append(check_array(
        "svm_loss.scores", scores, F.multiclass_hinge(scores, labels)[1],
        lambda: F.multiclass_hinge(scores, labels)[0], rng,
        lambda: [F.svm_margins(scores, labels) > 0],
    ))

    for loss_name in ("softmax", "svm"):
        layers = [LAYERS["affine"]("affine1", 6, 7, context),
                  LAYERS["batchnorm"]("batchnorm1", 7, context),
                  LAYERS["relu"]("relu1", 7, context),
                  LAYERS["dropout"]("dropout1", 7, context, drop_probability=0.2),
                  LAYERS["affine"]("affine2", 7, 4, context)]
        model = Model(layers, loss_name, l2=0.1, l1=0.01)
        title = f"net({loss_name}, l2=0.1, l1=0.01)"
        for check in check_model(model, x, rng.integers(0, 4, size=samples), rng):
            check.name = f"{title}.{check.name}"
            checks.append(check)
    return checks


def _check_layer(layer, x, rng) -> list[ParamCheck]:
    """Check a layer through f = sum(forward(x) * upstream), whose gradient with
    respect to the output is exactly ``upstream``, in training mode (a dropout
    layer keeps its first mask)."""
    x = x.copy()
    out = layer.forward(x, training=True)
    upstream = rng.standard_normal(out.shape)
    dx, grads = layer.backward(upstream.copy())
    if layer.kind == "dropout":
        layer.freeze_mask = True

    def objective():
        return float(np.sum(layer.forward(x, training=True) * upstream))

    def region():
        state = layer.kink_state()
        return [] if state is None else [state]

    checks = [check_array(f"{layer.kind}.x", x, dx, objective, rng, region)]
    for key, param in layer.params.items():
        checks.append(check_array(f"{layer.kind}.{key}", param, grads[key], objective,
                                  rng, region))
    return checks


def format_report(checks: list[ParamCheck]) -> list[str]:
    """Lines of a table: one per array, then the verdict."""
    width = max([len("parameter")] + [len(check.name) for check in checks])
    lines = [f"{'parameter':<{width}}  {'probed':>11}  {'norm-wise':>9}"
             f"  {'worst entry':>11}  {'at':<10}  verdict"]
    for check in checks:
        verdict = ("FAIL" if not check.passed else
                   "ok" if check.measured else "not measured")
        probed = f"{check.probed}/{check.size}"
        at = ",".join(map(str, check.worst_index))
        norm, worst = ((f"{check.norm_error:.2e}", f"{check.worst_error:.2e}")
                       if check.measured else ("-", "-"))
        line = (f"{check.name:<{width}}  {probed:>11}  {norm:>9}  {worst:>11}"
                f"  {at:<10}  {verdict}")
        skipped = ("1 probe crossed a kink and was skipped" if check.kinks == 1 else
                   f"{check.kinks} probes crossed a kink and were skipped")
        extra = [skipped] \
            if check.kinks else []
        for note in extra + check.notes:
            line += f"  ({note})"
        lines.append(line)
    failed = [check.name for check in checks if not check.passed]
    unmeasured = [check.name for check in checks if not check.measured]
    measured = len(checks) - len(unmeasured)
    thresholds = (f"thresholds: norm-wise <= {NORM_THRESHOLD:g}, worst entry <="
                  f" {WORST_THRESHOLD:g} (floors {NORM_FLOOR:g} and {FLOOR:g}, step"
                  f" {STEP:g}, float64)")
    lines.append(thresholds)
    if unmeasured:
        lines.append(f"not measured (every probe crossed a kink): {len(unmeasured)}"
                     f" of {len(checks)} arrays: " + ", ".join(unmeasured))
    if failed:
        lines.append(f"FAILED: {len(failed)} of {len(checks)} arrays: "
                     + ", ".join(failed))
    elif not measured:
        lines.append("NOT CHECKED: no array was measured")
    else:
        lines.append("PASSED: " + _agree(measured, " measured" if unmeasured else ""))
    return lines


def _agree(count: int, kind: str) -> str:
    if count == 1:
        return f"the 1{kind} array agrees"
    return f"all {count}{kind} arrays agree"
