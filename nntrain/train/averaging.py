"""Averaged weights, kept beside the raw ones (train.average):

- exponential: avg <- decay * avg + (1 - decay) * w after every update, starting
  from the first update's weights;
- polyak: the plain mean of the weights after every update so far (Polyak and
  Juditsky, 1992), avg <- avg + (w - avg) / k for the k-th update.

Only trainable parameters are averaged. Batch norm's running statistics belong to
the raw weights: an average of weights is another network, whose hidden layers
produce other activations, and normalizing them with the raw run's statistics can
cost much accuracy. So before the averages are evaluated or saved, each batch norm
layer gets statistics of its own (``batchnorm_statistics``): one pass over the
training split with the averaged weights, batch norm normalizing every batch with
the batch's own statistics, as in training. The running mean is the mean of the
batch means and the running variance the mean of the (biased) batch variances,
each batch weighing as many samples as it holds: population statistics of one
pass, not a momentum average, which would favour the last batches. The pass runs in
the run's batch size, so the variances are those of batches as large as the ones
the network was trained on; dropout is off, as it is when the averages are
evaluated, which also means the pass draws no random numbers. The raw model's
statistics and every generator are left as they were, so a resumed run still ends
exactly where an uninterrupted one does. Networks without batch norm skip the pass.

A checkpoint keeps the averages under ``average/<param>`` and their statistics
under ``average/<layer>.running_mean`` and ``average/<layer>.running_var``;
``nntrain eval --average`` evaluates them.
"""

import numpy as np

from nntrain.nn import functional as F
from nntrain.nn.flat import FlatArrays
from nntrain.nn.layers import BatchNorm
from nntrain.optim.rules import UPDATE_BLOCK


class WeightAverage:
    def __init__(self, kind: str = "exponential", decay: float = 0.999):
        self.kind, self.decay = kind, decay
        self.count = 0  # updates averaged so far
        # The averages by parameter name: views of one vector of the parameters'
        # layout when those are a Model's FlatArrays, else separate arrays.
        self.arrays: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}  # one block per dtype
        self._block_views = None  # (param vector, average vector, views): _blocks
        # Batch norm statistics of ``arrays`` (empty without batch norm), and the
        # ``count`` they were measured at: any later update makes them stale.
        self.buffers: dict[str, np.ndarray] = {}
        self._buffers_count = None

    def update(self, params: dict) -> None:
        """Fold the current weights into the average, in place."""
        self.count += 1
        if self.count == 1:
            self.arrays = _copied(params)
            return
        if isinstance(params, FlatArrays) and not params.same_layout(self.arrays):
            # Averages just loaded from a checkpoint: gather them into one vector.
            self.arrays = _gathered(params, self.arrays)
        weight = (1 - self.decay) if self.kind == "exponential" else 1 / self.count
        # avg + (w - avg) * weight in three in-place passes, block by block: like
        # an update rule's (optim/rules.py, UPDATE_BLOCK), the block of the
        # weights, of the averages and the scratch block stay in the L2 cache
        # from the first pass to the third, where array by array the
        # 784-512-256-10 network's first weights (1.6 MB) went out to L3 between
        # passes. Every element gets the same float32 operations as before.
        for param, average, scratch in self._blocks(params):
            np.subtract(param, average, out=scratch)
            scratch *= weight
            average += scratch

    def _blocks(self, params: dict) -> list[tuple]:
        """(weights, averages, scratch) for each block of UPDATE_BLOCK elements,
        over the whole vectors for FlatArrays, else array by array; kept for the
        next step, as slicing anew costs 11 us a step for the 784-512-256-10
        network (17 blocks), 4% of the averaging."""
        if isinstance(params, FlatArrays):
            pairs = [(params.vector, self.arrays.vector)]
            cached = self._block_views
            if cached and cached[0] is pairs[0][0] and cached[1] is pairs[0][1]:
                return cached[2]
        else:
            pairs = [(np.ravel(param), self.arrays[name].reshape(-1))
                     for name, param in params.items()]
        views = []
        for param, average in pairs:
            if average.dtype.str not in self._scratch:
                self._scratch[average.dtype.str] = np.empty(UPDATE_BLOCK,
                                                            average.dtype)
            scratch = self._scratch[average.dtype.str]
            for start in range(0, len(param), UPDATE_BLOCK):
                block = slice(start, start + UPDATE_BLOCK)
                views.append((param[block], average[block],
                              scratch[:len(param[block])]))
        if isinstance(params, FlatArrays):
            self._block_views = (*pairs[0], views)
        return views

    def load(self, arrays: dict, count: int, buffers: dict | None = None) -> None:
        """Continue from a checkpoint's averages after ``count`` updates, with the
        batch norm statistics saved beside them, if any."""
        self.count = count
        self.arrays = {name: value.copy() for name, value in arrays.items()}
        self._block_views = None
        self.buffers = {name: value.copy() for name, value in (buffers or {}).items()}
        self._buffers_count = count if buffers else None

    def fits_buffers(self, model) -> bool:
        """Whether ``buffers`` are the statistics of the current averages (always
        so for a model without batch norm)."""
        return not model.buffers or self._buffers_count == self.count

    def measure_buffers(self, model, X: np.ndarray, batch_size: int) -> None:
        """Measure the batch norm statistics of the averages on X: (N, D), the
        training split, unless they are already those of the current averages."""
        if self.fits_buffers(model):
            return
        with _Swap(model, self.arrays, {}):
            self.buffers = batchnorm_statistics(model, X, batch_size)
        self._buffers_count = self.count

    def state_arrays(self) -> dict:
        """What a checkpoint keeps under ``average/``: the averaged parameters and
        their batch norm statistics, which ``measure_buffers`` must have made
        current."""
        return {**self.arrays, **self.buffers}

    def swapped_in(self, model):
        """A context in which the model's parameters are the averages and its batch
        norm statistics theirs."""
        if not self.fits_buffers(model):
            raise RuntimeError("the averages' batch norm statistics are stale: call"
                               " measure_buffers first")
        return _Swap(model, self.arrays, self.buffers)


def batchnorm_statistics(model, X: np.ndarray, batch_size: int) -> dict:
    """Population statistics of every batch norm layer of ``model`` with its
    current parameters, from one pass over X: (N, D) in batches of ``batch_size``,
    in order.

    Batch norm layers normalize each batch with its own mean and biased variance,
    as in training; the other layers run as at evaluation (dropout off). Returns
    ``{"<layer>.running_mean": (H,), "<layer>.running_var": (H,)}``: the batch
    means and variances averaged with weights n_b / N, in the buffers' dtype. The
    model's own buffers and its generators are left untouched.
    """
    sums = {name: np.zeros(value.shape) for name, value in model.buffers.items()}
    for start in range(0, len(X), batch_size):
        out = X[start:start + batch_size]
        share = len(out) / len(X)
        for layer in model.layers:
            if not isinstance(layer, BatchNorm):
                out = layer.forward(out, training=False)
                continue
            # The functional form, not layer.forward: that would move the raw
            # running statistics and overwrite what backward keeps.
            out, _, _, mean, var = F.batchnorm_forward_train(
                out, layer.params["gamma"], layer.params["beta"], layer.epsilon)
            sums[f"{layer.name}.running_mean"] += share * mean.astype(np.float64)
            sums[f"{layer.name}.running_var"] += share * var.astype(np.float64)
    return {name: total.astype(model.buffers[name].dtype)
            for name, total in sums.items()}


class _Swap:
    """Puts ``params`` and ``buffers`` (either may name a subset) into the model,
    and the model's own back on exit."""

    def __init__(self, model, params: dict, buffers: dict):
        self.model, self.params, self.buffers = model, params, buffers

    def __enter__(self):
        model = self.model
        self.saved = {kind: {name: getattr(model, kind)[name].copy()
                             for name in arrays}
                      for kind, arrays in (("params", self.params),
                                           ("buffers", self.buffers))}
        model.set_arrays("params", self.params)
        model.set_arrays("buffers", self.buffers)
        return model

    def __exit__(self, *exc):
        for kind, arrays in self.saved.items():
            self.model.set_arrays(kind, arrays)


def _copied(params: dict) -> dict:
    """A copy of ``params``: FlatArrays again for FlatArrays, in one vector."""
    if isinstance(params, FlatArrays):
        copy = params.zeros_like()
        copy.vector[...] = params.vector
        return copy
    return {name: param.copy() for name, param in params.items()}


def _gathered(params: FlatArrays, arrays: dict) -> FlatArrays:
    """``arrays`` (the same names and shapes as ``params``) in ``params``' layout."""
    flat = params.zeros_like()
    for name in params:
        flat[name] = arrays[name]
    return flat
