"""Each update rule beside its torch.optim counterpart: 100 steps from the same start
in float64 agree to 1e-10 relative. Skipped when torch is not installed
(pip install torch==2.13.0).

Conventions: nntrain's momentum and Nesterov keep a velocity v = -lr * b where torch
keeps b; with the constant rate used here they move identically.
"""

import numpy as np
import pytest

from nntrain.optim.rules import RULES

torch = pytest.importorskip("torch")

CASES = {
    "sgd": ({"lr": 0.05}, lambda p: torch.optim.SGD(p, lr=0.05)),
    "momentum": ({"lr": 0.05, "momentum": 0.9},
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "nesterov": ({"lr": 0.05, "momentum": 0.9},
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "adagrad": ({"lr": 0.1, "eps": 1e-10},
                lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10)),
    "rmsprop": ({"lr": 0.01, "decay": 0.9, "eps": 1e-8},
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
    "adam": ({"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-8},
             lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-8)),
    "adamw": ({"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
               "weight_decay": 0.1},
              lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=0.1)),
}


def _gradient(w: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The gradient of the quadratic bowl f(w) = 0.5 w^T A w - b^T w, plus a
    non-linear term so that the rules' state matters: + sum(sin(w))."""
    return A @ w - b + np.cos(w)


@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_torch_for_100_steps(name):
    settings, make_torch = CASES[name]
    rng = np.random.default_rng(42)
    M = rng.standard_normal((6, 6))
    A, b = M @ M.T / 6 + np.eye(6), rng.standard_normal(6)
    start = rng.standard_normal(6)

    ours = {"w": start.copy()}
    rule = RULES[name](**settings)
    theirs = torch.tensor(start.copy(), dtype=torch.float64, requires_grad=True)
    optimizer = make_torch([theirs])

    for _ in range(100):
        rule.step(ours, {"w": _gradient(ours["w"], A, b)})
        theirs.grad = torch.tensor(_gradient(theirs.detach().numpy(), A, b))
        optimizer.step()

    expected = theirs.detach().numpy()
    np.testing.assert_allclose(ours["w"], expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(ours["w"], start)  # the rules did move


# A monitored accuracy with ties, a tiny gain (0.80 -> 0.80004) and long plateaus.
ACCURACIES = [0.5, 0.7, 0.7, 0.6, 0.8, 0.8, 0.80004, 0.79, 0.79, 0.79, 0.79, 0.85,
              0.85, 0.84, 0.84, 0.84, 0.84, 0.84]


def _plateau_rates(values, patience, monitor):
    """The rate after each evaluation of nntrain's plateau schedule."""
    from nntrain.optim.schedules import build_schedule
    from nntrain.train.solver import monitor_improved

    schedule = build_schedule({"name": "plateau", "factor": 0.5,
                               "patience": patience, "floor": 0.0}, 1.0)
    best, rates = None, []
    for value in values:
        improved = monitor_improved(monitor, value, best)
        best = value if improved else best
        schedule.observe(value, improved)
        rates.append(schedule.rate(1, 0))
    return rates


def _torch_plateau_rates(values, mode, **settings):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=0.5, **settings)
    rates = []
    for value in values:
        scheduler.step(value)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize("patience", [1, 2, 3])
@pytest.mark.parametrize("monitor, mode, sign", [("val_accuracy", "max", 1),
                                                  ("val_loss", "min", -1)])
def test_plateau_is_torchs_with_one_less_patience_and_no_threshold(
        patience, monitor, mode, sign):
    values = [sign * value for value in ACCURACIES]

    ours = _plateau_rates(values, patience, monitor)

    assert ours == _torch_plateau_rates(values, mode, patience=patience - 1,
                                        threshold=0, eps=0)
    # With the same patience and torch's defaults, torch cuts later.
    assert ours != _torch_plateau_rates(values, mode, patience=patience)
