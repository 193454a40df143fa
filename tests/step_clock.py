"""A clock for tests that must not depend on the machine's speed."""


class StepClock:
    """Advances by `step` seconds each time it is read: a time budget then ends after a fixed amount of
    work, however fast or loaded the machine is."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now
