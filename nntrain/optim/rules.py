"""Update rules: how a parameter moves given its gradient.

One base, ``UpdateRule``, owns the loop over parameters, the step count and the state
bookkeeping; each rule writes only ``update``, the maths for one array, documented
with its paper and defaults. State is kept per parameter array (two layers of the
same shape never share it) as named arrays, ``state[param name][slot]``, which a
checkpoint saves as ``optim/<param>/<slot>`` beside the step count.

The learning rate is ``rule.lr``; the schedule sets it before each step. Every update
is in place on the parameter and on the preallocated state, and every rule agrees
with its ``torch.optim`` counterpart to rounding (tests/test_torch_parity.py), with
the conventions noted in each docstring. Notation: w parameter, g gradient, t the
1-based step count, lr the learning rate.
"""

import math

import numpy as np


class UpdateRule:
    """Base of every rule. Settings are constructor arguments; state is arrays."""

    name = ""
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float):
        self.lr = lr
        self.steps = 0  # updates applied so far
        self.state: dict[str, dict[str, np.ndarray]] = {}
        # One scratch array per parameter shape and dtype, reused by every update
        # so that a step allocates nothing. It holds no state between steps.
        self._scratch: dict[tuple, np.ndarray] = {}

    def step(self, params: dict, grads: dict) -> None:
        """Move every array of ``params`` in place using ``grads`` (same keys)."""
        self.steps += 1
        for name, param in params.items():
            if name not in self.state:
                self.state[name] = {slot: np.zeros_like(param) for slot in self.slots}
            self.update(param, grads[name], self.state[name])

    def scratch(self, like: np.ndarray) -> np.ndarray:
        key = (like.shape, like.dtype.str)
        if key not in self._scratch:
            self._scratch[key] = np.empty_like(like)
        return self._scratch[key]

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict) -> None:
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
        self.steps = steps
        self.state = {}
        for key, value in arrays.items():
            name, slot = key.rsplit("/", 1)
            self.state.setdefault(name, {})[slot] = value


class SGD(UpdateRule):
    """Vanilla gradient descent:  w <- w - lr g."""

    name = "sgd"

    def update(self, param, grad, state):
        step = np.multiply(grad, self.lr, out=self.scratch(grad))
        param -= step


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

    def update(self, param, grad, state):
        velocity = state["velocity"]
        velocity *= self.momentum
        velocity -= np.multiply(grad, self.lr, out=self.scratch(grad))
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

    def update(self, param, grad, state):
        velocity = state["velocity"]
        scratch = self.scratch(grad)
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
    slots = ("sum_of_squares",)

    def __init__(self, lr: float = 1e-2, eps: float = 1e-10):
        super().__init__(lr)
        self.eps = eps

    def update(self, param, grad, state):
        total = state["sum_of_squares"]
        scratch = self.scratch(grad)
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
    slots = ("mean_square",)

    def __init__(self, lr: float = 1e-3, decay: float = 0.99, eps: float = 1e-8):
        super().__init__(lr)
        self.decay, self.eps = decay, eps

    def update(self, param, grad, state):
        mean_square = state["mean_square"]
        scratch = self.scratch(grad)
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
    """

    name = "adam"
    slots = ("first_moment", "second_moment")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def update(self, param, grad, state):
        m, v = state["first_moment"], state["second_moment"]
        scratch = self.scratch(grad)
        m *= self.beta1
        m += np.multiply(grad, 1 - self.beta1, out=scratch)
        v *= self.beta2
        np.square(grad, out=scratch)
        scratch *= 1 - self.beta2
        v += scratch

        # lr m_hat / (sqrt(v_hat) + eps) = (lr sqrt(c2) / c1) m / (sqrt(v) + eps
        # sqrt(c2)) with c = 1 - beta^t: the bias corrections become two scalars,
        # which saves a pass over the array. Python floats (math.sqrt, not np.sqrt)
        # keep the arithmetic in the arrays' dtype: a NumPy float64 scalar would run
        # the float32 loops in float64.
        t = self.steps
        root_c2 = math.sqrt(1 - self.beta2**t)
        step_size = self.lr * root_c2 / (1 - self.beta1**t)
        self.rms_scaled_step(param, m, v, self.eps * root_c2, step_size, scratch)


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

    def update(self, param, grad, state):
        param *= 1 - self.lr * self.weight_decay
        super().update(param, grad, state)


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
