"""Gradient checking: analytic gradients against centred finite differences.

For a scalar function f and an entry w_i of one of its arrays, the numeric gradient is

    n_i = (f(w_i + h) - f(w_i - h)) / (2 h),      h = 1e-5, everything in float64,

whose error is O(h^2) from truncation plus about eps * |f| / h from rounding; h = 1e-5
balances the two at ~1e-11, so a correct gradient agrees to ~1e-10 absolute. Per
parameter array two errors are reported against the analytic gradient a:

- norm-wise:  ||a - n|| / max(||a|| + ||n||, FLOOR) over the probed entries;
- worst entry: max_i |a_i - n_i| / max(|a_i| + |n_i|, FLOOR).

FLOOR = 1e-6 is an absolute floor: an entry whose true gradient is below it (about
100,000 times the rounding noise) is judged on its absolute difference instead, so
rounding noise on a near-zero entry is no false alarm, while an analytic zero
against a numeric 1e-3 still fails. A parameter passes when its norm-wise error
is <= NORM_THRESHOLD (1e-6) and its worst entry's error is <= WORST_THRESHOLD (1e-4);
the check as a whole passes only when every parameter does, so one zero or tiny
gradient cannot hide a mismatch in another array.

Probed entries: all of them for arrays with fewer than 1,000 entries, otherwise
SAMPLED_ENTRIES (40) drawn at random. A probe whose +h and -h evaluations fall on
different sides of a kink (a ReLU input crossing 0) measures no derivative; such
probes are counted and left out of the errors.
"""

from dataclasses import dataclass, field

import numpy as np

STEP = 1e-5
FLOOR = 1e-6
NORM_THRESHOLD = 1e-6
WORST_THRESHOLD = 1e-4
FULL_CHECK_BELOW = 1000
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

    ``region()``, when given, returns a hashable/comparable description of which
    side of every kink the function is on; probes that change it are left out.
    """
    indices = probe_indices(array.shape, rng)
    analytic_values, numeric_values, measured, kinks = [], [], [], 0
    for index in indices:
        original = array[index]
        array[index] = original + STEP
        plus = objective()
        side_plus = region() if region else None
        array[index] = original - STEP
        minus = objective()
        side_minus = region() if region else None
        array[index] = original
        if region and not _same_region(side_plus, side_minus):
            kinks += 1
            continue
        numeric_values.append((plus - minus) / (2 * STEP))
        analytic_values.append(float(analytic[index]))
        measured.append(index)

    return _summarize(name, array.size, measured, analytic_values, numeric_values,
                      kinks)


def _same_region(first, second) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first, second))


def _summarize(name, size, measured, analytic_values, numeric_values, kinks):
    a = np.array(analytic_values, dtype=np.float64)
    n = np.array(numeric_values, dtype=np.float64)
    notes = []
    if len(a) == 0:
        return ParamCheck(name, size, 0, 0.0, 0.0, (), kinks,
                          ["every probe crossed a kink; nothing was measured"])
    norm_error = np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n),
                                             FLOOR)
    entry_errors = np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), FLOOR)
    worst = int(entry_errors.argmax())
    if not np.any(a) and not np.any(np.abs(n) > FLOOR):
        notes.append("gradient is zero at every probed entry: this array is untested")
    return ParamCheck(name, size, len(a), float(norm_error), float(entry_errors[worst]),
                      tuple(int(i) for i in measured[worst]), kinks, notes)


def relu_region(model):
    """A function giving which ReLU units of ``model`` were active, for kink tests."""
    def region():
        return [layer.out > 0 for layer in model.layers if layer.kind == "relu"]

    return region


def check_model(model, X, y, rng) -> list[ParamCheck]:
    """Check every parameter of ``model`` (float64) on the batch X: (N, D), y: (N,)."""
    grads = model.forward_backward(X, y).grads
    checks = []
    for name, param in model.params.items():
        checks.append(check_array(
            name, param, grads[name], lambda: model.objective(X, y), rng,
            relu_region(model),
        ))
    return checks


def check_library(rng) -> list[ParamCheck]:
    """Check every layer and loss of the library on small random float64 inputs."""
    from nntrain.nn import functional as F
    from nntrain.nn.layers import Affine, ReLU
    from nntrain.nn.model import Model

    checks = []
    x = rng.standard_normal((4, 5))
    upstream = rng.standard_normal((4, 3))

    affine = Affine("affine", 5, 3, rng, "xavier", dtype=np.float64)
    affine.params["b"][...] = rng.standard_normal(3)
    checks += _check_layer(affine, x, upstream, rng)

    # Keep ReLU inputs at least 0.1 away from the kink at 0, so no probe crosses it.
    relu_input = rng.standard_normal((4, 3))
    relu_input += np.where(relu_input >= 0, 0.1, -0.1)
    checks += _check_layer(ReLU("relu"), relu_input, upstream, rng)

    scores = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, size=6)
    _, dscores = F.softmax_cross_entropy(scores, labels)
    checks.append(check_array(
        "softmax_loss.scores", scores, dscores,
        lambda: F.softmax_cross_entropy(scores, labels)[0], rng,
    ))

    # The whole composition, with L2 weight decay, on a tiny network.
    layers = [Affine("affine1", 5, 6, rng, "he", dtype=np.float64), ReLU("relu1"),
              Affine("affine2", 6, 4, rng, "he", dtype=np.float64)]
    model = Model(layers, "softmax", l2=0.1)
    model_checks = check_model(model, x, rng.integers(0, 4, size=4), rng)
    for check in model_checks:
        check.name = f"model(l2=0.1).{check.name}"
    return checks + model_checks


def _check_layer(layer, x, upstream, rng) -> list[ParamCheck]:
    """Check a layer through f = sum(forward(x) * upstream), whose gradient with
    respect to the output is exactly ``upstream``."""
    def objective():
        return float(np.sum(layer.forward(x, training=True) * upstream))

    layer.forward(x, training=True)
    dx, grads = layer.backward(upstream.copy())
    checks = [check_array(f"{layer.kind}.x", x, dx, objective, rng)]
    for key, param in layer.params.items():
        checks.append(check_array(f"{layer.kind}.{key}", param, grads[key], objective,
                                  rng))
    return checks


def format_report(checks: list[ParamCheck]) -> list[str]:
    """Lines of a table: one per array, then the verdict."""
    width = max(len(check.name) for check in checks)
    lines = [f"{'parameter':<{width}}  {'probed':>11}  {'norm-wise':>9}"
             f"  {'worst entry':>11}  {'at':<10}  verdict"]
    for check in checks:
        verdict = "ok" if check.passed else "FAIL"
        probed = f"{check.probed}/{check.size}"
        at = ",".join(map(str, check.worst_index))
        line = (f"{check.name:<{width}}  {probed:>11}  {check.norm_error:9.2e}"
                f"  {check.worst_error:11.2e}  {at:<10}  {verdict}")
        extra = [f"{check.kinks} probes crossed a kink and were skipped"] \
            if check.kinks else []
        for note in extra + check.notes:
            line += f"  ({note})"
        lines.append(line)
    failed = [check.name for check in checks if not check.passed]
    thresholds = (f"thresholds: norm-wise <= {NORM_THRESHOLD:g}, worst entry <="
                  f" {WORST_THRESHOLD:g} (floor {FLOOR:g}, step {STEP:g}, float64)")
    lines.append(thresholds)
    if failed:
        lines.append(f"FAILED: {len(failed)} of {len(checks)} arrays: "
                     + ", ".join(failed))
    else:
        lines.append(f"PASSED: all {len(checks)} arrays agree")
    return lines
