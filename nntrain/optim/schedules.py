"""Learning-rate schedules: the rate to use for the update about to happen.

A schedule is asked ``rate(epoch, iteration)`` before every update, with the 1-based
epoch in progress and the number of updates done before this one, so every schedule
counts the same iterations, in epochs mode and in iterations mode alike.
"""


class Constant:
    """The base learning rate, always."""

    name = "constant"

    def __init__(self, base_lr: float):
        self.base_lr = base_lr

    def rate(self, epoch: int, iteration: int) -> float:
        return self.base_lr


SCHEDULES = {schedule.name: schedule for schedule in (Constant,)}


def build_schedule(schedule_config: dict, base_lr: float):
    settings = {k: v for k, v in schedule_config.items() if k != "name"}
    return SCHEDULES[schedule_config["name"]](base_lr, **settings)
