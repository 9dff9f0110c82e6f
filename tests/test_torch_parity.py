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
