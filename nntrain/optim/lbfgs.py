"""Full-batch L-BFGS through scipy (``scipy.optimize.minimize``, method L-BFGS-B).

The parameters are flattened into one float64 vector; each function evaluation is a
full training-mode pass over the whole training split. scipy keeps its curvature
history to itself, so a resumed L-BFGS run starts from its saved parameters with a
fresh, empty history: it does not continue exactly where it stopped.
"""

import importlib.util

import numpy as np

from nntrain.errors import ConfigError

NEEDS_SCIPY = "optimizer.name lbfgs needs scipy: pip install 'nntrain[lbfgs]'"


class LBFGS:
    """The settings of the full-batch rule; the Solver drives scipy with them."""

    name = "lbfgs"

    def __init__(self, history: int = 10):
        # Checked here, as the run is set up, before its folder is written: scipy
        # itself is imported only when the solver starts (it takes a moment).
        if importlib.util.find_spec("scipy") is None:
            raise ConfigError(NEEDS_SCIPY)
        self.history = history
        self.lr = None  # L-BFGS chooses its own step by line search
        self.steps = 0

    def state_arrays(self) -> dict:
        return {}


def flatten(params: dict) -> np.ndarray:
    """All parameter arrays, in order, as one float64 vector."""
    return np.concatenate([param.ravel() for param in params.values()]).astype(
        np.float64)


def assign(params: dict, vector: np.ndarray) -> None:
    """Copy ``vector`` back into the parameter arrays, in the order of ``flatten``."""
    start = 0
    for param in params.values():
        param[...] = vector[start:start + param.size].reshape(param.shape)
        start += param.size


def minimize(objective, start: np.ndarray, iterations: int, history: int, callback):
    """Run scipy's L-BFGS-B for at most ``iterations`` iterations.

    ``objective(vector) -> (loss, gradient vector)``; ``callback(vector, loss)`` after
    every iteration. Returns scipy's OptimizeResult.
    """
    try:
        from scipy.optimize import minimize as scipy_minimize
    except ImportError:
        raise ConfigError(NEEDS_SCIPY) from None

    def after_iteration(intermediate_result):
        callback(intermediate_result.x, float(intermediate_result.fun))

    return scipy_minimize(
        objective, start, jac=True, method="L-BFGS-B", callback=after_iteration,
        options={"maxiter": iterations, "maxcor": history},
    )
