"""Averaged weights, kept beside the raw ones (train.average):

- exponential: avg <- decay * avg + (1 - decay) * w after every update, starting
  from the first update's weights;
- polyak: the plain mean of the weights after every update so far (Polyak and
  Juditsky, 1992), avg <- avg + (w - avg) / k for the k-th update.

Only trainable parameters are averaged; batch norm's running statistics stay those
of the raw run (a known approximation). A checkpoint keeps the averages under
``average/<param>``; ``nntrain eval --average`` evaluates them.
"""

import numpy as np


class WeightAverage:
    def __init__(self, kind: str = "exponential", decay: float = 0.999):
        self.kind, self.decay = kind, decay
        self.count = 0  # updates averaged so far
        self.arrays: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}

    def update(self, params: dict) -> None:
        """Fold the current weights into the average, in place."""
        self.count += 1
        if self.count == 1:
            self.arrays = {name: param.copy() for name, param in params.items()}
            self._scratch = {name: np.empty_like(param)
                             for name, param in params.items()}
            return
        weight = (1 - self.decay) if self.kind == "exponential" else 1 / self.count
        for name, param in params.items():
            step = np.subtract(param, self.arrays[name], out=self._scratch[name])
            step *= weight
            self.arrays[name] += step

    def load(self, arrays: dict, count: int) -> None:
        """Continue from a checkpoint's averages after ``count`` updates."""
        self.count = count
        self.arrays = {name: value.copy() for name, value in arrays.items()}
        self._scratch = {name: np.empty_like(value) for name, value in arrays.items()}

    def swapped_in(self, model):
        """A context in which the model's parameters are the averages."""
        return _Swap(model, self.arrays)


class _Swap:
    def __init__(self, model, arrays):
        self.model, self.arrays = model, arrays

    def __enter__(self):
        self.saved = {name: param.copy() for name, param in self.model.params.items()}
        self.model.set_arrays("params", self.arrays)
        return self.model

    def __exit__(self, *exc):
        self.model.set_arrays("params", self.saved)
