"""Preprocessing steps, fitted on the training split only and saved in the checkpoint.

Each step learns its statistics from the training features with ``fit`` and applies
them to any split with ``transform``; ``state`` gives the arrays a checkpoint stores
(under ``prep/<step>.<name>``) and ``from_state`` rebuilds the step from them, so
``eval`` applies exactly what training applied. Statistics are computed in float64.
"""

import numpy as np

from nntrain.errors import CheckpointError


class Center:
    """Subtract the per-feature mean of the training split: x - mean."""

    name = "center"

    def fit(self, X: np.ndarray) -> "Center":
        """X: (N, D) training features."""
        self.mean = X.mean(axis=0, dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X: (N, D) float array, changed in place and returned."""
        X -= self.mean.astype(X.dtype)
        return X

    def state(self) -> dict:
        return {"mean": self.mean}

    @classmethod
    def from_state(cls, state: dict) -> "Center":
        step = cls()
        step.mean = state["mean"]
        return step


class Scale:
    """Divide each feature by its training standard deviation.

    A feature whose standard deviation is tiny next to its magnitude is constant up
    to rounding; dividing by it would blow rounding noise up to unit size, so such a
    feature is multiplied by 0 instead (it carries no information). "Tiny" means
    std <= 1e-8 * max(1, |mean|); no exact-zero test and no division warnings.
    """

    name = "scale"
    RELATIVE_TOLERANCE = 1e-8

    def fit(self, X: np.ndarray) -> "Scale":
        """X: (N, D) training features."""
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        is_constant = std <= self.RELATIVE_TOLERANCE * np.maximum(1.0, np.abs(mean))
        self.factor = np.zeros_like(std)
        np.divide(1.0, std, out=self.factor, where=~is_constant)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X: (N, D) float array, changed in place and returned."""
        X *= self.factor.astype(X.dtype)
        return X

    def state(self) -> dict:
        return {"factor": self.factor}

    @classmethod
    def from_state(cls, state: dict) -> "Scale":
        step = cls()
        step.factor = state["factor"]
        return step


STEPS = {step.name: step for step in (Center, Scale)}


class Preprocessor:
    """The config's list of steps, applied in order."""

    def __init__(self, steps: list):
        self.steps = steps

    @classmethod
    def fit(cls, names: list[str], X_train: np.ndarray, dtype) -> "Preprocessor":
        """Fit each step on the output of the steps before it. X_train: (N, D)."""
        X = np.array(X_train, dtype=dtype)
        steps = []
        for name in names:
            step = STEPS[name]().fit(X)
            X = step.transform(X)
            steps.append(step)
        return cls(steps)

    def transform(self, X: np.ndarray, dtype) -> np.ndarray:
        """A new (N, D) array of ``dtype``: X with every step applied."""
        X = np.array(X, dtype=dtype)
        for step in self.steps:
            X = step.transform(X)
        return X

    def state(self) -> dict:
        """Arrays named ``<step>.<name>``, for the checkpoint's ``prep/`` prefix."""
        return {
            f"{step.name}.{key}": value
            for step in self.steps
            for key, value in step.state().items()
        }

    @classmethod
    def from_state(cls, names: list[str], arrays: dict, num_features: int):
        """Rebuild the steps ``names`` from checkpoint arrays, checking their shapes."""
        steps = []
        for name in names:
            prefix = f"{name}."
            state = {
                key[len(prefix):]: value
                for key, value in arrays.items()
                if key.startswith(prefix)
            }
            for key, value in state.items():
                if value.shape != (num_features,):
                    raise CheckpointError(
                        f"prep/{name}.{key} has shape {value.shape}, expected"
                        f" ({num_features},): the checkpoint does not match its data"
                    )
            try:
                steps.append(STEPS[name].from_state(state))
            except KeyError as missing:
                raise CheckpointError(
                    f"the checkpoint lacks prep/{name}.{missing.args[0]}"
                ) from None
        return cls(steps)
