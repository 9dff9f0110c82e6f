"""Learning-rate schedules: the rate to use for the update about to happen.

A schedule is asked ``rate(epoch, iteration)`` before every update, with the 1-based
epoch in progress and the number of updates done before this one, so every schedule
counts the same iterations, in epochs mode and in iterations mode alike (where the
Solver's "epoch" is the ``train.eval_every`` period in progress: an epoch's updates
by default). Per-epoch schedules give epoch e the rate for e: halving each epoch
from 1.0 gives 1.0, 0.5, 0.25 for epochs 1, 2, 3. ``observe(value)`` is told the
monitored metric after each evaluation (only ``plateau`` uses it); ``state()`` /
``load_state()`` carry what a resumed run needs.
"""

import math


class Schedule:
    name = ""

    def __init__(self, base_lr: float):
        self.base_lr = base_lr

    def rate(self, epoch: int, iteration: int) -> float:
        raise NotImplementedError

    def observe(self, value: float, improved: bool) -> None:
        """The monitored metric after an evaluation; most schedules ignore it."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class Constant(Schedule):
    """The base learning rate, always."""

    name = "constant"

    def rate(self, epoch, iteration):
        return self.base_lr


class Step(Schedule):
    """lr * gamma ^ floor((epoch - 1) / step_epochs): multiply by gamma every
    ``step_epochs`` epochs."""

    name = "step"

    def __init__(self, base_lr, step_epochs=10, gamma=0.1):
        super().__init__(base_lr)
        self.step_epochs, self.gamma = step_epochs, gamma

    def rate(self, epoch, iteration):
        return self.base_lr * self.gamma ** ((epoch - 1) // self.step_epochs)


class Exponential(Schedule):
    """lr * gamma ^ (epoch - 1): multiply by gamma every epoch."""

    name = "exponential"

    def __init__(self, base_lr, gamma=0.95):
        super().__init__(base_lr)
        self.gamma = gamma

    def rate(self, epoch, iteration):
        return self.base_lr * self.gamma ** (epoch - 1)


class InverseTime(Schedule):
    """lr / (1 + decay * (epoch - 1)): the 1/t decay, per epoch."""

    name = "inverse_time"

    def __init__(self, base_lr, decay=0.5):
        super().__init__(base_lr)
        self.decay = decay

    def rate(self, epoch, iteration):
        return self.base_lr / (1 + self.decay * (epoch - 1))


class Cosine(Schedule):
    """Half a cosine from lr down to ``floor`` over the run's updates (Loshchilov and
    Hutter, 2017, https://arxiv.org/abs/1608.03983, without restarts), after an
    optional linear warmup from lr / warmup to lr over ``warmup`` updates:

        t < warmup:  lr * (t + 1) / warmup
        otherwise:   floor + (lr - floor) * (1 + cos(pi * (t - warmup) / T)) / 2,
                     T = total - warmup updates, t the updates done so far.
    """

    name = "cosine"

    def __init__(self, base_lr, floor=0.0, warmup=0, total_iterations=1):
        super().__init__(base_lr)
        self.floor, self.warmup = floor, warmup
        self.total = max(total_iterations, warmup + 1)

    def rate(self, epoch, iteration):
        if iteration < self.warmup:
            return self.base_lr * (iteration + 1) / self.warmup
        progress = (iteration - self.warmup) / (self.total - self.warmup)
        cosine = (1 + math.cos(math.pi * min(progress, 1.0))) / 2
        return self.floor + (self.base_lr - self.floor) * cosine


class Plateau(Schedule):
    """Multiply the rate by ``factor`` when the monitored metric (train.monitor) has
    not improved for ``patience`` evaluations in a row, down to ``floor``. Any gain
    counts; torch's ReduceLROnPlateau(patience=patience - 1, threshold=0, eps=0)
    gives the same rates."""

    name = "plateau"

    def __init__(self, base_lr, factor=0.1, patience=3, floor=0.0):
        super().__init__(base_lr)
        self.factor, self.patience, self.floor = factor, patience, floor
        self.current = base_lr
        self.bad_evaluations = 0

    def rate(self, epoch, iteration):
        return self.current

    def observe(self, value, improved):
        self.bad_evaluations = 0 if improved else self.bad_evaluations + 1
        if self.bad_evaluations >= self.patience:
            self.current = max(self.current * self.factor, self.floor)
            self.bad_evaluations = 0

    def state(self):
        return {"current": self.current, "bad_evaluations": self.bad_evaluations}

    def load_state(self, state):
        self.current = state["current"]
        self.bad_evaluations = state["bad_evaluations"]


SCHEDULES = {
    schedule.name: schedule
    for schedule in (Constant, Step, Exponential, InverseTime, Cosine, Plateau)
}


def build_schedule(schedule_config: dict, base_lr: float, total_iterations: int = 1):
    """The schedule a resolved config's ``schedule`` section names."""
    settings = {k: v for k, v in schedule_config.items() if k != "name"}
    if schedule_config["name"] == "cosine":
        settings["total_iterations"] = total_iterations
    return SCHEDULES[schedule_config["name"]](base_lr, **settings)
