"""Watching a run: per-layer statistics, and plain-words warnings when they look wrong.

At the last update before each evaluation the Solver captures, from that update's
own training-mode pass (no extra pass over the data; when that update has an
epoch's short last batch, of fewer than MIN_BATCH samples, the update before it):
- ``update_ratio/<param>``: ||W_after - W_before|| / ||W_before|| for each weight
  array; around 1e-3 is healthy, far below means the rate is too low, far above too
  high, unless the gradient is exactly zero or the weights are (nearly) zero;
- ``weight_norm/<param>``: ||W_before||, the weights' norm before that update;
- ``act_mean/<layer>``, ``act_std/<layer>``: the mean and std of each activation
  (maxout included), normalization or dropout layer's output on that batch;
- ``dead_fraction/<layer>`` (ReLU layers): the fraction of units that output 0
  for every sample of the batch;
- ``saturated_fraction/<layer>`` (sigmoid, tanh): the fraction of units whose output
  is within 1% of a bound (0 or 1; -1 or 1) for 99% or more of the batch;
- ``grad_norm/<param>``: the L2 norm of each parameter's gradient.
These keys join the evaluation's "epoch" record in metrics.jsonl.
"""

import numpy as np

# A ratio this many times away from 1e-3, either way, is "clearly off".
RATIO_TARGET = 1e-3
RATIO_FACTOR = 100
MOSTLY = 0.5  # "most units": more than half
MIN_BATCH = 32
# Overfitting needs train accuracy this far above validation accuracy.
OVERFIT_GAP = 0.02
SATURATION_BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
# Weights of a smaller norm are "nearly zero": a far too high update ratio is then
# theirs, whatever the rate (healthy starting weights have norms near 1).
NEAR_ZERO_WEIGHTS = 1e-6


def _norm(array: np.ndarray) -> float:
    """The L2 norm, summed in float64: in float32 the squares of entries below
    1e-19 underflow to 0, and weights of 1e-30 would seem to be zero."""
    return float(np.linalg.norm(array.astype(np.float64, copy=False)))


def weight_snapshot(model) -> dict:
    """Copies of the weight arrays, to measure the next update against."""
    return {p.name: model.params[p.name].copy() for p in model.penalties}


def update_ratios(model, before: dict) -> dict:
    """The update/weight ratio and the weight norm of each array in ``before``."""
    ratios = {}
    for name, old in before.items():
        new = model.params[name]
        scale = _norm(old)
        change = _norm(new - old)
        ratios[f"update_ratio/{name}"] = change / scale if scale > 0 else float("inf")
        ratios[f"weight_norm/{name}"] = scale
    return ratios


def layer_statistics(model, outputs: list) -> dict:
    """Statistics of the outputs of the activation layers (maxout included),
    dropout and normalization layers. outputs[i]: (N, H), the
    output of model.layers[i] in the captured pass.

    The dead and saturated fractions need a real batch to mean anything: on fewer
    than MIN_BATCH samples (a small last batch) they are not reported.
    """
    stats = {}
    for layer, out in zip(model.layers, outputs):
        # An affine output is a pre-activation; maxout's output is the activation.
        if layer.kind == "affine":
            continue
        stats[f"act_mean/{layer.name}"] = float(out.mean())
        stats[f"act_std/{layer.name}"] = float(out.std())
        if len(out) < MIN_BATCH:
            continue
        if layer.kind == "relu":
            never_positive = np.all(out <= 0, axis=0)
            stats[f"dead_fraction/{layer.name}"] = float(never_positive.mean())
        elif layer.kind in SATURATION_BOUNDS:
            low, high = SATURATION_BOUNDS[layer.kind]
            margin = 0.01 * (high - low)
            near_bound = (out <= low + margin) | (out >= high - margin)
            stats[f"saturated_fraction/{layer.name}"] = float(
                np.mean(near_bound.mean(axis=0) >= 0.99))
    return stats


def gradient_norms(grads: dict) -> dict:
    return {f"grad_norm/{name}": _norm(grad) for name, grad in grads.items()}


def weight_decay_cause(lr: float | None, weight_decay: float | None) -> str | None:
    """What to say when decoupled weight decay (adamw) alone wrecks the weights:
    every update multiplies each parameter by 1 - lr * weight_decay, which from
    lr * weight_decay = 1 on zeroes it or flips its sign (and past 2 makes it
    grow); None below that, or without such a decay."""
    if not weight_decay or lr is None or lr * weight_decay < 1:
        return None
    factor = 1 - lr * weight_decay
    effect = "zeroes them" if factor == 0 else "flips their sign"
    if factor < -1:
        effect += " and makes them grow"
    return (f"optimizer.weight_decay {weight_decay:g} at the learning rate {lr:g}"
            " makes every update multiply the parameters by 1 - lr * weight_decay"
            f" = {factor:.3g}, which {effect}: lower optimizer.weight_decay below"
            f" 1 / lr = {1 / lr:g} (adamw's default is 0.01)")


class Watcher:
    """Turns diagnostics and the learning curve into one-line warnings, each kind
    at most once per layer per run so that a long run is not flooded."""

    def __init__(self, warn):
        self.warn = warn
        self.said = set()
        self.history = []  # (train_accuracy, val_accuracy) per evaluation

    def _once(self, key, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.warn(text)

    def check_weight_decay(self, lr: float | None,
                           weight_decay: float | None) -> None:
        """Warn, once, when adamw's weight decay zeroes or flips the weights at
        every update (weight_decay_cause)."""
        cause = weight_decay_cause(lr, weight_decay)
        if cause:
            self._once("weight_decay", cause)

    def check_diagnostics(self, stats: dict, rate_lowered: bool = False,
                          clipping: bool = False, decay: float = 0.0) -> None:
        """``rate_lowered``: the schedule has brought the rate far below its start
        (a cosine near its end), so tiny update ratios are its intent, not a rate
        set too low. ``clipping``: train.clip is on, and may be what holds the
        steps back. ``decay``: lr * weight_decay of adamw's decoupled decay (0
        without one), the update/weight ratio that the decay alone gives."""
        for key, value in stats.items():
            kind, _, name = key.partition("/")
            if kind == "update_ratio":
                cause = _ratio_cause(value, stats.get(f"weight_norm/{name}"),
                                     stats.get(f"grad_norm/{name}"), rate_lowered,
                                     clipping, decay)
                if cause:
                    side = "below" if value < RATIO_TARGET else "above"
                    self._once(key, f"the update/weight ratio of {name} is"
                               f" {value:.1e}, far {side} ~1e-3: {cause}")
            elif kind == "dead_fraction" and value > MOSTLY:
                self._once(key, f"{value:.0%} of the units of {name} never fire (dead"
                           " ReLUs): lower optimizer.lr, try model.activation ="
                           " leaky_relu, or check model.init")
            elif kind == "saturated_fraction" and value > MOSTLY:
                self._once(key, f"{value:.0%} of the units of {name} are saturated:"
                           " try model.init = xavier, model.batchnorm = true, or"
                           " scaling the inputs (data.preprocess)")

    def check_curve(self, train_accuracy, val_accuracy) -> None:
        """Warn when validation accuracy fell while train accuracy rose, twice in a
        row: the network is memorizing the training split."""
        self.history.append((train_accuracy, val_accuracy))
        if len(self.history) < 3 or train_accuracy is None:
            return
        (t0, v0), (t1, v1), (t2, v2) = self.history[-3:]
        # A gap too makes it memorizing: the train accuracy (a running mean over
        # noisy batches) and a small validation split can drift a sample apart.
        if t0 < t1 < t2 and v0 > v1 > v2 and t2 - v2 > OVERFIT_GAP:
            self._once("overfitting", "validation accuracy has fallen for two"
                       " evaluations while train accuracy rose (overfitting): try"
                       " more model.l2, dropout (model.drop_probability) or"
                       " train.early_stopping")


def _ratio_cause(ratio: float, weight_norm: float | None, grad_norm: float | None,
                 rate_lowered: bool, clipping: bool,
                 decay: float = 0.0) -> str | None:
    """Why an update/weight ratio is far from 1e-3, and what to do, or None when
    it is not (or when a schedule lowered the rate on purpose). The learning rate
    is blamed only when the weights and the gradient could have given a healthy
    ratio: not over weights that are (nearly) zero, nor for a zero gradient.
    ``weight_norm`` is None in diagnostics saved before it was measured."""
    zero_gradient = grad_norm == 0.0
    low, high = RATIO_TARGET / RATIO_FACTOR, RATIO_TARGET * RATIO_FACTOR
    if low <= ratio <= high:
        return None
    if weight_norm is not None and weight_norm < NEAR_ZERO_WEIGHTS:
        # Updates are huge beside such weights, or, when model.max_norm holds
        # them there, crushed with them: either way the rate is not the cause.
        size = ("zero" if weight_norm == 0.0 else
                f"nearly zero (norm {weight_norm:.1e})")
        also = ", and so is their gradient" if zero_gradient else ""
        return (f"its weights are {size}{also}, so the learning rate is not the"
                " cause; check model.init, model.init_std and model.max_norm")
    if ratio > high and decay > high:
        # Decay scales the weights by 1 - decay: a change of ``decay`` times
        # their norm at every update, whatever the gradient.
        return (f"adamw's weight decay alone changes the weights by lr *"
                f" optimizer.weight_decay = {decay:.2g} of their norm at every"
                " update; lower optimizer.weight_decay (its default is 0.01)")
    if ratio > high:
        return "the learning rate looks too high (lower optimizer.lr)"
    if zero_gradient:
        return ("its gradient is exactly zero, so no learning rate moves it:"
                " nothing reaches it from the loss (a normalization over a single"
                " unit, or inputs that are all zero after preprocessing?); check"
                " the model and the data")
    if rate_lowered:
        return None
    if clipping:
        return ("the learning rate looks too low (raise optimizer.lr), or"
                " train.clip holds the steps back (raise its threshold)")
    return "the learning rate looks too low (raise optimizer.lr)"
