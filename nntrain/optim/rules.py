"""Update rules: how a parameter moves given its gradient.

One base, ``UpdateRule``, owns the loop over parameters, the step count and the state
bookkeeping; each rule writes only ``update``, the maths for one array. State is kept
per parameter array (two layers of the same shape never share it) as named arrays,
``state[param name][slot]``, which a checkpoint saves as ``optim/<param>/<slot>``.
The learning rate is ``rule.lr``; the schedule sets it before each step.
Every update is in place on the parameter and on the preallocated state.
"""

import numpy as np


class UpdateRule:
    """Base of every rule. Settings are constructor arguments; state is arrays."""

    name = ""
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float):
        self.lr = lr
        self.steps = 0  # updates applied so far
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def step(self, params: dict, grads: dict) -> None:
        """Move every array of ``params`` in place using ``grads`` (same keys)."""
        self.steps += 1
        for name, param in params.items():
            if name not in self.state:
                self.state[name] = {slot: np.zeros_like(param) for slot in self.slots}
            self.update(param, grads[name], self.state[name])

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError

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
    """Vanilla gradient descent: w <- w - lr * g."""

    name = "sgd"

    def update(self, param, grad, state):
        param -= self.lr * grad


class Momentum(UpdateRule):
    """SGD with momentum, velocity form (Polyak, 1964):

        v <- mu * v - lr * g
        w <- w + v

    With a constant learning rate this equals torch.optim.SGD(momentum=mu), which
    keeps b = mu * b + g and steps w -= lr * b, since then v = -lr * b.
    """

    name = "momentum"
    slots = ("velocity",)

    def __init__(self, lr: float, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = momentum

    def update(self, param, grad, state):
        velocity = state["velocity"]
        velocity *= self.momentum
        velocity -= self.lr * grad
        param += velocity


class Adam(UpdateRule):
    """Adam (Kingma and Ba, 2015, https://arxiv.org/abs/1412.6980):

        m <- beta1 * m + (1 - beta1) * g           (first moment)
        v <- beta2 * v + (1 - beta2) * g^2         (second moment)
        w <- w - lr * m_hat / (sqrt(v_hat) + eps)
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
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * np.square(grad)

        t = self.steps
        step_size = self.lr / (1 - self.beta1**t)
        denominator = np.sqrt(v)
        denominator /= np.sqrt(1 - self.beta2**t)
        denominator += self.eps
        param -= step_size * (m / denominator)


RULES = {rule.name: rule for rule in (SGD, Momentum, Adam)}


def build_rule(optimizer_config: dict) -> UpdateRule:
    """The rule a resolved config's ``optimizer`` section names, with its settings."""
    settings = {k: v for k, v in optimizer_config.items() if k != "name"}
    return RULES[optimizer_config["name"]](**settings)
