"""The sanity check: a network that cannot reach 100% training accuracy on a handful
of samples, with regularization and dropout switched off, has a bug (or a learning
rate far off) that no amount of real training will fix."""

import copy
from dataclasses import dataclass

import numpy as np

from nntrain.nn.model import build_model
from nntrain.optim.rules import build_rule


@dataclass
class SanityResult:
    samples: int
    reached: bool
    iterations: int  # updates done when 100% was first seen (or the budget)
    accuracy: float  # training-mode accuracy at the end
    loss: float


def without_regularization(config: dict) -> dict:
    """A copy of ``config`` with L2, L1, max-norm and dropout switched off."""
    config = copy.deepcopy(config)
    model = config["model"]
    model.update(l2=0.0, l1=0.0, max_norm=None, drop_probability=0.0)
    if model["layers"] is not None:
        model["layers"] = [entry for entry in model["layers"] if "dropout" not in entry]
        for entry in model["layers"]:
            for options in entry.values():
                for key in ("l2", "l1", "max_norm"):
                    if key in options:
                        options[key] = None
    if config["optimizer"]["name"] == "adamw":
        config["optimizer"]["weight_decay"] = 0.0
    return config


def overfit(config: dict, X: np.ndarray, y: np.ndarray, num_classes: int,
            max_iterations: int) -> SanityResult:
    """Train on all of X: (N, D), y: (N,) as one batch until every sample is
    classified right in training mode, or ``max_iterations`` updates are spent."""
    config = without_regularization(config)
    model = build_model(config, X.shape[1], num_classes)
    rule = build_rule(config["optimizer"])
    if rule.name == "lbfgs":
        return _overfit_lbfgs(model, rule, X, y, max_iterations)

    # A diverging run overflows; its non-finite loss is the report, not NumPy's
    # warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for iteration in range(max_iterations + 1):
            result = model.forward_backward(X, y)
            accuracy = float(np.mean(result.scores.argmax(axis=1) == y))
            if accuracy == 1.0 or iteration == max_iterations or not np.isfinite(
                    result.loss):
                return SanityResult(len(y), accuracy == 1.0, iteration, accuracy,
                                    result.loss)
            rule.step(model.params, result.grads)
            model.apply_constraints()


def _overfit_lbfgs(model, rule, X, y, max_iterations):
    from nntrain.optim import lbfgs

    seen = {"iterations": 0}

    def objective(vector):
        lbfgs.assign(model.params, vector)
        result = model.forward_backward(X, y)
        return result.loss, lbfgs.flatten(result.grads)

    def after_iteration(vector, loss):
        seen["iterations"] += 1
        lbfgs.assign(model.params, vector)
        if np.all(model.scores(X, training=True).argmax(axis=1) == y):
            raise StopIteration

    outcome = lbfgs.minimize(objective, lbfgs.flatten(model.params), max_iterations,
                             rule.history, after_iteration)
    lbfgs.assign(model.params, outcome.x)
    scores = model.scores(X, training=True)
    accuracy = float(np.mean(scores.argmax(axis=1) == y))
    return SanityResult(len(y), accuracy == 1.0, seen["iterations"], accuracy,
                        float(outcome.fun))
