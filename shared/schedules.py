"""Learning-rate schedules, as plain ``keras.optimizers.schedules.LearningRateSchedule``s.

``k`` is the optimizer step (``optimizer.iterations``), so a schedule resumes exactly where a
restored optimizer left off. Each class can be passed to any Keras optimizer in your own code::

    opt = keras.optimizers.SGD(learning_rate=LinearDecay(0.1, 0.001, tau=10_000))

The plateau rule (divide by a factor when validation stops improving) depends on validation, not
on k, so it is a callback: :class:`shared.callbacks.DivideOnPlateau`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from shared.errors import UserError

Schedule = keras.optimizers.schedules.LearningRateSchedule


def _k(step):
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable("ksuite")
class StepDecay(Schedule):
    """eps_k = eps_0 * factor ** floor(k / every): drop by ``factor`` every ``every`` steps
    (the "step" schedule of Krizhevsky et al. 2012 / He et al. 2016: divide by 10 at fixed
    points)."""

    def __init__(self, initial: float, factor: float = 0.1, every: int = 10_000):
        if every <= 0:
            raise UserError("StepDecay: `every` must be positive")
        self.initial, self.factor, self.every = float(initial), float(factor), int(every)

    def __call__(self, step):
        return self.initial * ops.power(self.factor, ops.floor(_k(step) / self.every))

    def get_config(self):
        return {"initial": self.initial, "factor": self.factor, "every": self.every}


@keras.saving.register_keras_serializable("ksuite")
class ExponentialDecay(Schedule):
    """eps_k = eps_0 * rate ** (k / decay_steps), smooth (no staircase)."""

    def __init__(self, initial: float, rate: float = 0.96, decay_steps: int = 1000):
        if decay_steps <= 0:
            raise UserError("ExponentialDecay: `decay_steps` must be positive")
        self.initial, self.rate, self.decay_steps = float(initial), float(rate), int(decay_steps)

    def __call__(self, step):
        return self.initial * ops.power(self.rate, _k(step) / self.decay_steps)

    def get_config(self):
        return {"initial": self.initial, "rate": self.rate, "decay_steps": self.decay_steps}


@keras.saving.register_keras_serializable("ksuite")
class InverseTimeDecay(Schedule):
    """eps_k = eps_0 / (1 + decay * k): what the legacy Keras optimizers' ``decay=`` argument
    did, applied at every step (keras 2 ``optimizer_v1``: ``lr * 1 / (1 + decay * iterations)``),
    the schedule the course's code uses."""

    def __init__(self, initial: float, decay: float = 1e-6):
        if decay < 0:
            raise UserError("InverseTimeDecay: `decay` must be >= 0")
        self.initial, self.decay = float(initial), float(decay)

    def __call__(self, step):
        return self.initial / (1.0 + self.decay * _k(step))

    def get_config(self):
        return {"initial": self.initial, "decay": self.decay}


@keras.saving.register_keras_serializable("ksuite")
class LinearDecay(Schedule):
    """Goodfellow et al. (2016) §8.3.1, eq. 8.14: eps_k = (1 - a) eps_0 + a eps_tau with
    a = k / tau, for k <= tau; constant eps_tau after. The book suggests eps_tau ~ 1% of eps_0
    and tau = a few hundred passes through the training set."""

    def __init__(self, initial: float, final: float | None = None, tau: int = 10_000):
        if tau <= 0:
            raise UserError("LinearDecay: `tau` must be positive")
        self.initial = float(initial)
        self.final = float(final) if final is not None else 0.01 * float(initial)
        self.tau = int(tau)

    def __call__(self, step):
        a = ops.minimum(_k(step) / self.tau, 1.0)
        return (1.0 - a) * self.initial + a * self.final

    def get_config(self):
        return {"initial": self.initial, "final": self.final, "tau": self.tau}


@keras.saving.register_keras_serializable("ksuite")
class WarmupCosine(Schedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps (Goyal et al. 2017), then cosine
    annealing to ``floor`` at ``total`` steps (Loshchilov & Hutter 2017, without restarts)."""

    def __init__(self, peak: float, total: int, warmup: int = 0, floor: float = 0.0):
        if total <= 0 or warmup < 0 or warmup > total:
            raise UserError("WarmupCosine: need 0 <= warmup <= total and total > 0")
        self.peak, self.total, self.warmup, self.floor = (float(peak), int(total), int(warmup),
                                                          float(floor))

    def __call__(self, step):
        k = _k(step)
        warm = self.peak * k / max(self.warmup, 1)
        progress = ops.clip((k - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
        cosine = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(k < self.warmup, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup, "floor": self.floor}


@keras.saving.register_keras_serializable("ksuite")
class Triangular(Schedule):
    """Piecewise linear: ``start x peak`` at step 0, up to ``peak`` at ``rise`` of the run, down to
    ``end x peak`` at ``total`` steps (Smith 2017's triangular / one-cycle policy; airbench94's
    ``triangle(start=0.2, end=0.07, peak=0.23)``, Jordan 2024)."""

    def __init__(self, peak: float, total: int, start: float = 0.2, end: float = 0.07,
                 rise: float = 0.23):
        if total <= 0 or not 0 < rise < 1:
            raise UserError("Triangular: need total > 0 and 0 < rise < 1")
        self.peak, self.total, self.start, self.end, self.rise = (
            float(peak), int(total), float(start), float(end), float(rise))

    def __call__(self, step):
        t = ops.clip(_k(step) / self.total, 0.0, 1.0)
        up = self.start + (1.0 - self.start) * t / self.rise
        down = 1.0 + (self.end - 1.0) * (t - self.rise) / (1.0 - self.rise)
        return self.peak * ops.where(t < self.rise, up, down)

    def get_config(self):
        return {"peak": self.peak, "total": self.total, "start": self.start, "end": self.end,
                "rise": self.rise}


from shared.optim import SCHEDULES  # noqa: E402 (the flag choices, defined without Keras)


def make_schedule(name: str, lr: float, steps_per_epoch: int, epochs: int, **options):
    """The ``--schedule`` flag: a learning-rate value or schedule for the optimizer.

    Defaults, per schedule (overridable through ``options``):
    - step: x0.1 every third of training (the divide-by-10 rule of He et al. 2016);
    - exponential: x0.96 per epoch (the TensorFlow tutorials' decay_rate);
    - inverse_time: decay 1e-6 per step (the course's Keras ``decay=1e-6``, as in keras
      cifar10_cnn);
    - linear: to 1% of lr at the end of training (Goodfellow §8.3.1);
    - cosine: 5% of training as warm-up, cosine to 0;
    - triangular: 0.2 x lr -> lr at 23% of training -> 0.07 x lr (airbench94, Jordan 2024);
    - slanted: lr/32 -> lr at 10% of training -> lr/32 (Howard & Ruder 2018, ULMFiT's slanted
      triangular rates, cut_frac 0.1, ratio 32);
    - constant / plateau: a constant value (plateau adds DivideOnPlateau, see callbacks).
    """
    total = max(1, steps_per_epoch * epochs)
    if name in ("constant", "plateau"):
        return float(lr)
    if name == "step":
        return StepDecay(lr, options.get("factor", 0.1), options.get("every", max(1, total // 3)))
    if name == "exponential":
        return ExponentialDecay(lr, options.get("rate", 0.96),
                                options.get("decay_steps", steps_per_epoch))
    if name == "inverse_time":
        return InverseTimeDecay(lr, options.get("decay", 1e-6))
    if name == "linear":
        return LinearDecay(lr, options.get("final", 0.01 * lr), options.get("tau", total))
    if name == "cosine":
        return WarmupCosine(lr, total, options.get("warmup", total // 20),
                            options.get("floor", 0.0))
    if name == "triangular":
        return Triangular(lr, total)
    if name == "slanted":  # ULMFiT's slanted triangular rates: cut_frac 0.1, ratio 32
        return Triangular(lr, total, start=1 / 32, end=1 / 32, rise=0.1)
    raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
