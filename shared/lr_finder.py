"""The learning-rate range test: pick the initial learning rate from one short run.

Goodfellow et al. (§8.3, §11.4.1) advise choosing the initial rate by watching the first ~100
iterations; Smith (2017, "Cyclical Learning Rates for Training Neural Networks", §3.3) turned that
into the *LR range test*: train for a few steps while the rate grows from tiny to huge and read
the loss against the rate. At a tiny rate the loss stays flat, then it falls, then it blows up.

Reusable in any ``fit()``::

    finder = LRFinder(LRRangeSchedule(1e-7, 10.0, steps=100))
    model.compile(optimizer=keras.optimizers.Adam(finder.schedule), loss=...)
    model.fit(train, epochs=100, callbacks=[finder], verbose=0)   # stops itself
    result = finder.result()            # lrs, losses, smoothed, suggestion
    plot_range_test(result, "lr_find.png")

(or :func:`install_schedule` on an already compiled model's optimizer, as ``ksuite lr-find``
does). The test changes the weights: train the real run from a fresh model.

The suggestion (:func:`suggest`), stated next to its value in every record:

- ``steepest``: the rate where the smoothed loss falls fastest per unit of log rate, searched
  only in the falling part (before the smoothed minimum) -- fastai's ``lr_find`` suggestion
  (fastai v1 ``Recorder.plot(suggestion=True)``, "min numerical gradient"; Smith 2017 §3.3
  picks the rate where the loss starts to fall fast);
- ``min_over_10``: one tenth of the rate at the smoothed minimum (fastai's ``lr_min``; Smith
  2018, "A disciplined approach...", §4.1: the maximum rate is near the minimum, train below it).

The loss is smoothed by an exponential moving average with bias correction (beta 0.98) and the
test stops when the smoothed loss exceeds 4x the best one (both fastai's ``LRFinder`` values,
Gugger 2018, "How do you find a good learning rate").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import keras
import numpy as np
from keras import ops

from shared.errors import UserError

# Defaults: fastai's lr_find (start 1e-7, end 10, 100 iterations; smoothing 0.98, stop at 4x).
MIN_LR, MAX_LR, STEPS = 1e-7, 10.0, 100
BETA, DIVERGE = 0.98, 4.0

RULES = {
    "steepest": "lr at the steepest descent of the smoothed loss vs log lr, before its minimum "
                "(fastai lr_find; Smith 2017 §3.3)",
    "min_over_10": "one tenth of the lr at the smoothed loss's minimum (fastai lr_min; "
                   "Smith 2018 §4.1)",
}


@keras.saving.register_keras_serializable("ksuite")
class LRRangeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """eps_k = min_lr * (max_lr / min_lr) ** (k / (steps - 1)): exponential growth from
    ``min_lr`` (step 0) to ``max_lr`` (step ``steps - 1``), held at ``max_lr`` afterwards."""

    def __init__(self, min_lr: float = MIN_LR, max_lr: float = MAX_LR, steps: int = STEPS):
        if not 0 < min_lr < max_lr:
            raise UserError(f"the LR range needs 0 < min < max (got {min_lr} and {max_lr})")
        if steps < 2:
            raise UserError("the LR range test needs at least 2 steps")
        self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), int(steps)

    def __call__(self, step):
        k = ops.minimum(ops.cast(step, "float32"), float(self.steps - 1))
        return self.min_lr * ops.power(self.max_lr / self.min_lr, k / float(self.steps - 1))

    def value(self, step: int) -> float:
        """The same value in plain Python (for records and tests)."""
        k = min(step, self.steps - 1)
        return self.min_lr * (self.max_lr / self.min_lr) ** (k / (self.steps - 1))

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps}


def install_schedule(optimizer, schedule) -> None:
    """Replace a (compiled, not yet stepped) optimizer's learning rate by ``schedule`` -- the
    optimizer keeps everything else (momentum, betas, clipping). Loss-scale wrappers too."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if int(ops.convert_to_numpy(inner.iterations)) != 0:
        raise UserError("the LR range test needs an optimizer that has not stepped yet")
    inner.learning_rate = schedule


@dataclass
class RangeTest:
    """What one range test recorded: per step, the rate used, the loss and the smoothed loss."""

    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    stopped: str = ""  # why it ended: "diverged at step k", "non-finite loss at step k", "done"
    suggestion: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class LRFinder(keras.callbacks.Callback):
    """Records the learning rate and the loss of each training step, smooths the loss, and
    stops training when it diverges (smoothed > ``diverge`` x best, or a non-finite loss) or
    after ``schedule.steps`` steps. The per-step loss is exact: the loss tracker is reset after
    each step (Keras logs the running mean of the epoch otherwise), so epoch-level metrics of
    the same ``fit`` are meaningless -- this is a probe run, not training."""

    def __init__(self, schedule: LRRangeSchedule | None = None, steps: int | None = None,
                 beta: float = BETA, diverge: float = DIVERGE):
        super().__init__()
        self.schedule = schedule
        self.steps = steps or (schedule.steps if schedule is not None else None)
        if not 0 <= beta < 1:
            raise UserError("the smoothing factor must be in [0, 1)")
        if diverge <= 1:
            raise UserError("the divergence factor must be above 1")
        self.beta, self.diverge = float(beta), float(diverge)
        self._reset()

    def _reset(self):
        self.record = RangeTest()
        self._avg, self._best, self._lr = 0.0, math.inf, None

    def on_train_begin(self, logs=None):
        self._reset()
        self.model.reset_metrics()

    def on_train_batch_begin(self, batch, logs=None):
        # Before the step: the optimizer's rate is the one this step will use.
        self._lr = float(self.model.optimizer.learning_rate)

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        self.model.reset_metrics()  # the next step's "loss" is that step's alone
        k = len(self.record.losses)
        if not math.isfinite(loss):
            self.record.stopped = f"non-finite loss at step {k}"
            self.model.stop_training = True
            return
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (k + 1))  # bias correction
        self.record.lrs.append(self._lr)
        self.record.losses.append(loss)
        self.record.smoothed.append(smooth)
        self._best = min(self._best, smooth)
        if k > 0 and smooth > self.diverge * self._best:
            self.record.stopped = (f"diverged at step {k}: smoothed loss {smooth:.4g} > "
                                   f"{self.diverge:g}x the best {self._best:.4g}")
            self.model.stop_training = True
        elif self.steps and k + 1 >= self.steps:
            self.record.stopped = f"done: {k + 1} steps"
            self.model.stop_training = True

    def result(self, rule: str = "steepest") -> RangeTest:
        """The record, with its suggestion (:func:`suggest`)."""
        if not self.record.stopped:
            self.record.stopped = f"done: {len(self.record.losses)} steps"
        self.record.suggestion = suggest(self.record.lrs, self.record.smoothed, rule)
        return self.record


def suggest(lrs, smoothed, rule: str = "steepest", skip_start: int | None = None) -> dict:
    """The suggested initial learning rate from a range test's smoothed losses, with both
    rules' values (module docstring) and the chosen rule's text beside its value.
    ``skip_start`` first points are not searched (the average is still settling; fastai skips
    10 of 100: default min(10, n // 10))."""
    if rule not in RULES:
        raise UserError(f"unknown suggestion rule {rule!r}; choose one of {', '.join(RULES)}")
    lrs, smoothed = np.asarray(lrs, dtype="float64"), np.asarray(smoothed, dtype="float64")
    n = len(lrs)
    if n < 3:
        raise UserError(f"the range test recorded {n} step(s): too few for a suggestion "
                        "(more --steps, or a lower --min-lr)")
    skip = min(10, n // 10) if skip_start is None else skip_start
    i_min = int(np.argmin(smoothed[skip:])) + skip
    out = {"lr_at_min": float(lrs[i_min]), "min_over_10": float(lrs[i_min] / 10)}
    falling = slice(skip, i_min + 1)
    if i_min - skip >= 2:
        slopes = np.gradient(smoothed, np.log(lrs))[falling]
        i_steep = int(np.argmin(slopes)) + skip
        out["steepest"] = float(lrs[i_steep])
        out["steepest_step"] = i_steep
    else:  # no falling part to search: the minimum's rule
        out["steepest"] = out["min_over_10"]
        out["steepest_step"] = None
    out["rule"] = rule
    out["rule_text"] = RULES[rule]
    out["lr"] = out[rule]
    return out


def run_range_test(model, train, min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                   steps: int = STEPS, beta: float = BETA, diverge: float = DIVERGE,
                   rule: str = "steepest", callbacks: list | None = None) -> RangeTest:
    """The range test on a compiled ``model`` over ``train`` (anything ``fit`` takes: a
    ``tf.data.Dataset`` of batches, a generator...): the optimizer's rate replaced by the range
    schedule, one step per batch, repeating the data as needed, until divergence or ``steps``."""
    schedule = LRRangeSchedule(min_lr, max_lr, steps)
    install_schedule(model.optimizer, schedule)
    finder = LRFinder(schedule, beta=beta, diverge=diverge)
    # Each epoch has at least one batch, so `steps` epochs are enough; the finder stops it.
    model.fit(train, epochs=steps, callbacks=[finder, *(callbacks or [])], shuffle=False,
              verbose=0)
    return finder.result(rule)


def plot_range_test(result: RangeTest, path, title: str = ""):
    """Loss (raw, faint; smoothed, bold) against the learning rate on a log axis, with the
    suggestion and the minimum's rule marked."""
    from shared.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", lw=2, label="smoothed loss")
    s = result.suggestion
    if s:
        ax.axvline(s["lr"], color="tab:red", ls="--",
                   label=f"suggestion {s['lr']:.3g} ({s['rule']})")
        other = "min_over_10" if s["rule"] == "steepest" else "steepest"
        ax.axvline(s[other], color="tab:grey", ls=":", label=f"{other} {s[other]:.3g}")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # keep the fall readable: cut the divergence's tail off the y axis
        low, start = min(finite + [v for v in result.losses if math.isfinite(v)]), finite[0]
        ax.set_ylim(low - 0.05 * abs(low), max(start, low) * 1.5 + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path, title or "learning-rate range test")


__all__ = [
    "BETA",
    "DIVERGE",
    "MAX_LR",
    "MIN_LR",
    "RULES",
    "STEPS",
    "LRFinder",
    "LRRangeSchedule",
    "RangeTest",
    "install_schedule",
    "plot_range_test",
    "run_range_test",
    "suggest",
]
