"""Named arrays that are views of one contiguous vector.

A model keeps all its parameters in one 1-D array and all its gradients in another
with the same layout; ``affine1.W`` is a reshaped slice of each. Code that works
per array sees an ordinary mapping of names to arrays, while an update
rule, whose maths is elementwise, can run its passes once over the whole vector:
for the 784-512-256-10 network that is a dozen NumPy calls per step instead of six
dozen, on one long array that streams through the cache.

The views must stay views, so assigning to a name copies into its view
(``grads[name] += x`` works as it reads); names cannot be added or removed.
"""

import math
from collections.abc import Mapping

import numpy as np


class FlatArrays(Mapping):
    """Arrays by name, in order, each a view of a slice of ``vector``: (total,)."""

    def __init__(self, shapes: dict, dtype):
        total = sum(math.prod(shape) for shape in shapes.values())
        self.vector = np.zeros(total, dtype=dtype)
        self._views = {}
        offset = 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            self._views[name] = self.vector[offset:offset + size].reshape(shape)
            offset += size
        self.layout = tuple((name, tuple(shape)) for name, shape in shapes.items())

    @classmethod
    def holding(cls, arrays: dict) -> "FlatArrays":
        """A flat copy of ``arrays`` (all of one dtype), in their order."""
        dtypes = {array.dtype for array in arrays.values()}
        if len(dtypes) > 1:
            names = sorted(str(dtype) for dtype in dtypes)
            raise ValueError(f"FlatArrays needs one dtype, got {names}")
        dtype = dtypes.pop() if dtypes else np.float32
        flat = cls({name: array.shape for name, array in arrays.items()}, dtype)
        for name, array in arrays.items():
            flat[name][...] = array
        return flat

    def zeros_like(self) -> "FlatArrays":
        """Zeros with the same names, shapes and layout."""
        return FlatArrays({name: view.shape for name, view in self.items()},
                          self.vector.dtype)

    def same_layout(self, other) -> bool:
        """True when ``other`` is FlatArrays with the same names, shapes and order."""
        return isinstance(other, FlatArrays) and other.layout == self.layout

    def __reduce__(self):
        # Copied or pickled, the views must again be views of one vector.
        return FlatArrays.holding, ({name: view.copy() for name, view in self.items()},)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __setitem__(self, name: str, value) -> None:
        view = self._views[name]
        if value is not view:
            view[...] = value

    def __iter__(self):
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)
