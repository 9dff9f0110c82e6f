"""Update rules: how a parameter moves given its gradient.

One base, ``UpdateRule``, owns the loop over parameters, the step count and the state
bookkeeping; each rule writes only ``update``, the maths for one array, documented
with its paper and defaults. State is kept per parameter array (two layers of the
same shape never share it) as named arrays, ``state[param name][slot]``, which a
checkpoint saves as ``optim/<param>/<slot>`` beside the step count.

Every rule is elementwise, so when the parameters and gradients are a Model's
FlatArrays (nn/flat.py) the base runs ``update`` over the whole vectors, block by
block (see UPDATE_BLOCK), with the state kept as vectors of the same layout
(``state[name][slot]`` are views of them).

The learning rate is ``rule.lr``; the schedule sets it before each step. Every update
is in place on the parameter and on the preallocated state, and every rule agrees
with its ``torch.optim`` counterpart to rounding (tests/test_torch_parity.py), with
the conventions noted in each docstring. Notation: w parameter, g gradient, t the
1-based step count, lr the learning rate.
"""

import math

import numpy as np

from nntrain.nn.flat import FlatArrays

# Over FlatArrays the update runs on blocks of this many elements. Each pass of a
# rule (Adam makes ten) streams its vectors through the caches; within a block,
# the five vectors that Adam touches (parameters, gradients, two state slots and
# scratch: 640 KiB in float32) stay in a core's L2 cache from one pass to the
# next, so only the first pass fetches them from L3. On the 784-512-256-10 network
# (535,818 parameters), on an Intel Xeon with 2 MiB of L2 per core, this cut an
# Adam step inside training from 1.36 to 1.12 ms; blocks of 16,384 or 65,536 gain
# less, as each block costs ten more NumPy calls. An AMD EPYC with 1 MiB of L2 per
# core showed no change either way.
UPDATE_BLOCK = 32768

# Every this many steps, the state's subnormal values are set to zero. State that
# decays (Adam's sums, momentum's velocity, RMSProp's average) of a parameter whose
# gradient stays zero, such as the weights of a dead ReLU unit, shrinks into
# float32's subnormal numbers and stays there for good: 0.9 times a few of the
# smallest ones rounds back to the same value. Intel processors take a slow path
# for every vector instruction that meets one, and NumPy cannot turn on the
# processor's flush-to-zero mode, so the rule flushes them itself. On Fashion-MNIST
# (784-512-256-10, Adam, no L2), after six epochs 0.9% of Adam's first sums were
# subnormal, a count that only grows, and the update took 1.23 ms a step instead
# of 0.82. A flush costs about 0.5 ms (two slots of 535,818 values), 0.016 ms a
# step at this period. Trained weights are the same to the last bit, except those
# within about 1e-36 of zero (those of an input that is always 0, say), which a
# subnormal sum could still move.
FLUSH_SUBNORMALS_EVERY = 32


def _check_arrays(params, grads) -> None:
    """TypeError or ValueError, before any update, unless every parameter is a
    writable floating-point array (updated in place: a NumPy scalar would
    silently stay as it is) with a numeric gradient of its shape."""
    for name, param in params.items():
        problem = _not_updatable(param)
        if problem:
            raise TypeError(f"params[{name!r}] is {problem}; give writable"
                            " floating-point NumPy arrays, which the rule updates"
                            " in place")
        grad = grads.get(name) if hasattr(grads, "get") else None
        if (not isinstance(grad, np.ndarray) or grad.shape != param.shape
                or grad.dtype.kind not in "fiu"):
            raise ValueError(f"grads[{name!r}] is missing or not an array of"
                             f" params[{name!r}]'s shape {param.shape}; give a"
                             " gradient for every parameter")


def _not_updatable(param) -> str | None:
    """What keeps ``param`` from being updated in place, or None."""
    if isinstance(param, np.generic):
        return f"a NumPy scalar ({param.dtype})"
    if not isinstance(param, np.ndarray):
        return type(param).__name__
    if param.dtype.kind != "f":
        return f"an array of {param.dtype}"
    if not param.flags.writeable:
        return "a read-only array"
    return None


class UpdateRule:
    """Base of every rule. Settings are constructor arguments; state is arrays."""

    name = ""
    slots: tuple[str, ...] = ()
    squares_slots: tuple[str, ...] = ()  # slots that sum squares: never negative

    def __init__(self, lr: float):
        self.lr = lr
        self.steps = 0  # updates applied so far
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self._flat_state: dict[str, FlatArrays] | None = None
        self._block_views = None  # (param vector, grad vector, views): _blocks
        # For error messages: the checkpoint name of state stored under another.
        self._loaded_from: dict[str, str] = {}
        # One scratch array per parameter shape and dtype, reused by every update
        # so that a step allocates nothing. It holds no state between steps.
        self._scratch: dict[tuple, np.ndarray] = {}

    def step(self, params, grads) -> None:
        """Move every array of ``params`` in place using ``grads`` (same keys).

        When both are FlatArrays of one layout (a Model's), the update runs over
        their whole vectors, block by block, the state too kept as such vectors.
        """
        flat = isinstance(params, FlatArrays) and params.same_layout(grads)
        if not flat:
            _check_arrays(params, grads)  # before anything moves
        self.steps += 1
        if flat:
            self._step_vectors(params, grads)
        else:
            for name, param in params.items():
                if name not in self.state:
                    self.state[name] = {slot: np.zeros_like(param)
                                        for slot in self.slots}
                self.update(param, grads[name], self.state[name],
                            self.scratch(param))
        if self.steps % FLUSH_SUBNORMALS_EVERY == 0:
            self.flush_subnormals()

    def flush_subnormals(self) -> None:
        """Set the state's subnormal values to zero (see FLUSH_SUBNORMALS_EVERY)."""
        if self._flat_state is not None:
            arrays = [flat.vector for flat in self._flat_state.values()]
        else:
            arrays = [value for slots in self.state.values()
                      for value in slots.values()]
        for value in arrays:
            value[np.abs(value) < np.finfo(value.dtype).tiny] = 0

    def _step_vectors(self, params: FlatArrays, grads: FlatArrays) -> None:
        if self._flat_state is None:
            # First step, or state just loaded from a checkpoint: gather it into
            # vectors of the parameters' layout, then keep views by name.
            self._flat_state = {slot: params.zeros_like() for slot in self.slots}
            self._block_views = None
            for slot, flat in self._flat_state.items():
                for name in params:
                    if name in self.state:
                        flat[name][...] = self.state[name][slot]
            self.state = {name: {slot: self._flat_state[slot][name]
                                 for slot in self.slots} for name in params}
        # The update stays on the calling thread. Splitting it over threads (tried)
        # needs OpenBLAS's idle threads to stop spinning between products, and
        # then every product waits for its threads to wake up: a net loss at two
        # threads on the Intel machine (README, "Speed").
        for arguments in self._blocks(params, grads):
            self.update(*arguments)

    def _blocks(self, params: FlatArrays, grads: FlatArrays) -> list[tuple]:
        """``update``'s arguments for each block: views made once and kept, as
        making them anew costs a few microseconds a block, every step."""
        param, grad = params.vector, grads.vector
        cached = self._block_views
        if cached is None or cached[0] is not param or cached[1] is not grad:
            scratch = self.scratch(param)
            views = []
            for start in range(0, len(param), UPDATE_BLOCK):
                block = slice(start, start + UPDATE_BLOCK)
                views.append((param[block], grad[block],
                              {slot: flat.vector[block]
                               for slot, flat in self._flat_state.items()},
                              scratch[block]))
            self._block_views = (param, grad, views)
        return self._block_views[2]

    def scratch(self, like: np.ndarray) -> np.ndarray:
        key = (like.shape, like.dtype.str)
        if key not in self._scratch:
            self._scratch[key] = np.empty_like(like)
        return self._scratch[key]

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict,
               scratch: np.ndarray) -> None:
        """Update one array in place; ``scratch``: free space of its shape."""
        raise NotImplementedError

    def rms_scaled_step(self, param, numerator, squares, eps, step_size, scratch):
        """param -= step_size * numerator / (sqrt(squares) + eps), in place: the
        last stage that Adagrad, RMSProp and Adam share."""
        np.sqrt(squares, out=scratch)
        scratch += eps
        np.divide(numerator, scratch, out=scratch)
        scratch *= step_size
        param -= scratch

    def state_arrays(self) -> dict:
        """Flat ``{"<param>/<slot>": array}`` for the checkpoint."""
        return {
            f"{name}/{slot}": value
            for name, slots in self.state.items()
            for slot, value in slots.items()
        }

    def load_state_arrays(self, arrays: dict, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"its step count {steps!r} is not a count")
        self.steps = steps
        self.state = {}
        self._flat_state = None
        self._block_views = None
        self._loaded_from = {}
        for key, value in arrays.items():
            if "/" not in key:
                raise ValueError(f"optim/{key} names no parameter and slot")
            name, slot = key.rsplit("/", 1)
            self.state.setdefault(name, {})[slot] = value

    def check_state(self, params) -> None:
        """Raise ValueError naming the first problem of loaded state: each of
        ``params`` needs exactly this rule's slots, each of its shape and dtype,
        finite, and never negative where it sums squares; no other names."""
        extra = sorted(set(self.state) - set(params))
        if extra:
            raise ValueError(f"optim/{extra[0]}/... is for no parameter of the model")
        for name, param in params.items():
            slots = self.state.get(name, {})
            missing = sorted(set(self.slots) - set(slots))
            unknown = sorted(set(slots) - set(self.slots))
            if missing:
                raise ValueError(f"optim/{name}/{missing[0]} is missing")
            if unknown:
                raise ValueError(f"optim/{name}/{unknown[0]} is not kept by the"
                                 f" {self.name} rule")
            for slot, value in slots.items():
                key = self._loaded_from.get(f"{name}/{slot}", f"optim/{name}/{slot}")
                if value.shape != param.shape or value.dtype != param.dtype:
                    raise ValueError(f"{key} is {value.dtype} {value.shape}, the"
                                     f" parameter {param.dtype} {param.shape}")
                if not np.isfinite(value).all():
                    raise ValueError(f"{key} holds NaN or infinite values")
                if slot in self.squares_slots and (value < 0).any():
                    raise ValueError(f"{key} holds negative values, but it sums"
                                     " squares")

    def __getstate__(self) -> dict:
        # A copy gets its state as separate arrays (views of the flat vectors would
        # not survive copying as views).
        state = dict(self.__dict__)
        state["_flat_state"] = None
        state["_block_views"] = None
        state["_scratch"] = {}
        return state


class SGD(UpdateRule):
    """Vanilla gradient descent:  w <- w - lr g."""

    name = "sgd"

    def update(self, param, grad, state, scratch):
        param -= np.multiply(grad, self.lr, out=scratch)


class Momentum(UpdateRule):
    """SGD with momentum in velocity form (Polyak, 1964), mu = ``momentum`` (0.9):

        v <- mu v - lr g
        w <- w + v

    torch.optim.SGD(momentum=mu) keeps b <- mu b + g and steps w -= lr b; with a
    constant learning rate the two are the same (v = -lr b). When the rate changes
    they differ: here past velocity keeps the rate it was taken with.
    """

    name = "momentum"
    slots = ("velocity",)

    def __init__(self, lr: float, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = momentum

    def update(self, param, grad, state, scratch):
        velocity = state["velocity"]
        velocity *= self.momentum
        velocity -= np.multiply(grad, self.lr, out=scratch)
        param += velocity


class Nesterov(Momentum):
    """Nesterov's accelerated gradient (Nesterov, 1983; Sutskever et al., 2013), in
    the velocity form that evaluates the gradient at the current w:

        v_prev = v
        v <- mu v - lr g
        w <- w - mu v_prev + (1 + mu) v

    which, for a constant rate, is torch.optim.SGD(momentum=mu, nesterov=True):
    w -= lr (g + mu b) with b <- mu b + g.
    """

    name = "nesterov"
    slots = ("velocity",)

    def update(self, param, grad, state, scratch):
        velocity = state["velocity"]
        param -= np.multiply(velocity, self.momentum, out=scratch)
        velocity *= self.momentum
        velocity -= np.multiply(grad, self.lr, out=scratch)
        param += np.multiply(velocity, 1 + self.momentum, out=scratch)


class Adagrad(UpdateRule):
    """Adagrad (Duchi et al., 2011, https://jmlr.org/papers/v12/duchi11a.html):

        s <- s + g^2                       (sum of squared gradients, from 0)
        w <- w - lr g / (sqrt(s) + eps)

    eps = 1e-10 as in torch.optim.Adagrad, added after the root.
    """

    name = "adagrad"
    slots = squares_slots = ("sum_of_squares",)

    def __init__(self, lr: float = 1e-2, eps: float = 1e-10):
        super().__init__(lr)
        self.eps = eps

    def update(self, param, grad, state, scratch):
        total = state["sum_of_squares"]
        total += np.square(grad, out=scratch)
        self.rms_scaled_step(param, grad, total, self.eps, self.lr, scratch)


class RMSProp(UpdateRule):
    """RMSProp (Tieleman and Hinton, 2012, lecture 6.5 of "Neural Networks for
    Machine Learning"), with rho = ``decay`` (0.99):

        a <- rho a + (1 - rho) g^2         (a moving AVERAGE of squared gradients,
                                            from 0; it never grows past max g^2)
        w <- w - lr g / (sqrt(a) + eps)

    eps = 1e-8 added after the root, as torch.optim.RMSprop (whose alpha is rho).
    """

    name = "rmsprop"
    slots = squares_slots = ("mean_square",)

    def __init__(self, lr: float = 1e-3, decay: float = 0.99, eps: float = 1e-8):
        super().__init__(lr)
        self.decay, self.eps = decay, eps

    def update(self, param, grad, state, scratch):
        mean_square = state["mean_square"]
        mean_square *= self.decay
        np.square(grad, out=scratch)
        scratch *= 1 - self.decay
        mean_square += scratch
        self.rms_scaled_step(param, grad, mean_square, self.eps, self.lr, scratch)


class Adam(UpdateRule):
    """Adam (Kingma and Ba, 2015, https://arxiv.org/abs/1412.6980):

        m <- beta1 m + (1 - beta1) g           (first moment)
        v <- beta2 v + (1 - beta2) g^2         (second moment)
        w <- w - lr m_hat / (sqrt(v_hat) + eps)
        with m_hat = m / (1 - beta1^t) and v_hat = v / (1 - beta2^t)

    eps is added to sqrt(v_hat), as in the paper and torch.optim.Adam.

    The state is kept without the (1 - beta) factors, as decayed sums
    s1 = m / (1 - beta1) and s2 = v / (1 - beta2):

        s1 <- beta1 s1 + g,    s2 <- beta2 s2 + g^2

    which makes each a multiply and an add (two passes over the array instead of
    three); the factors join the scalars of the last step. The cost: s2 is up to
    1 / (1 - beta2) times v (1000 at the default), so in float32 it overflows for
    gradients above about 6e17, where torch's v holds until 1.8e19: the
    non-finite guard stops a run whose gradients grow past 6e17, which torch
    would carry on a little further.
    """

    name = "adam"
    slots = ("decayed_gradient_sum", "decayed_square_sum")
    squares_slots = ("decayed_square_sum",)

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def update(self, param, grad, state, scratch):
        s1, s2 = state["decayed_gradient_sum"], state["decayed_square_sum"]
        s1 *= self.beta1
        s1 += grad
        s2 *= self.beta2
        s2 += np.square(grad, out=scratch)

        # With c = 1 - beta^t and k = sqrt((1 - beta2) / c2), sqrt(v_hat) is
        # k sqrt(s2), so lr m_hat / (sqrt(v_hat) + eps) becomes
        # (lr (1 - beta1) / (c1 k)) s1 / (sqrt(s2) + eps / k): the bias corrections
        # and the factors are two scalars. Python floats (math.sqrt, not np.sqrt)
        # keep the arithmetic in the arrays' dtype: a NumPy float64 scalar would run
        # the float32 loops in float64.
        t = self.steps
        k = math.sqrt((1 - self.beta2) / (1 - self.beta2**t))
        step_size = self.lr * (1 - self.beta1) / ((1 - self.beta1**t) * k)
        self.rms_scaled_step(param, s1, s2, self.eps / k, step_size, scratch)

    def load_state_arrays(self, arrays: dict, steps: int) -> None:
        # Checkpoints written by earlier versions of this rule hold m and v
        # themselves, under these names.
        legacy = {"first_moment": ("decayed_gradient_sum", 1 - self.beta1),
                  "second_moment": ("decayed_square_sum", 1 - self.beta2)}
        converted, loaded_from = {}, {}
        for key, value in arrays.items():
            name, _, slot = key.rpartition("/")
            if slot in legacy:
                if value.dtype.kind != "f":
                    raise ValueError(f"optim/{key} is {value.dtype}, not floating"
                                     " point")
                slot, factor = legacy[slot]
                loaded_from[f"{name}/{slot}"] = f"optim/{key} (old name)"
                with np.errstate(all="ignore"):  # overflow: caught as inf later
                    value = value / value.dtype.type(factor)
            if f"{name}/{slot}" in converted:
                raise ValueError(f"optim/{name} holds {slot} under its old and its"
                                 " new name")
            converted[f"{name}/{slot}" if name else key] = value
        super().load_state_arrays(converted, steps)
        self._loaded_from = loaded_from


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019,
    https://arxiv.org/abs/1711.05101): before the Adam step,

        w <- w - lr * weight_decay * w

    which shrinks every parameter it is given (all of them, biases included, as
    torch.optim.AdamW does), independently of the gradient's scale. Use it instead
    of model.l2, not with it.
    """

    name = "adamw"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, beta1, beta2, eps)
        self.weight_decay = weight_decay

    def update(self, param, grad, state, scratch):
        param *= 1 - self.lr * self.weight_decay
        super().update(param, grad, state, scratch)


RULES = {
    rule.name: rule
    for rule in (SGD, Momentum, Nesterov, Adagrad, RMSProp, Adam, AdamW)
}


def build_rule(optimizer_config: dict):
    """The rule a resolved config's ``optimizer`` section names, with its settings
    (for ``lbfgs``, the settings of the full-batch solver)."""
    from nntrain.optim.lbfgs import LBFGS

    settings = {k: v for k, v in optimizer_config.items() if k != "name"}
    rule_class = LBFGS if optimizer_config["name"] == "lbfgs" else RULES[
        optimizer_config["name"]]
    return rule_class(**settings)
