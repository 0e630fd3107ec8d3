"""Training callbacks every app uses, as plain ``keras.callbacks.Callback``s.

Reuse any of them in your own ``model.fit(..., callbacks=[...])``. The GAN (custom
``train_step``) gets them through ``fit()``; the DQN's custom loop drives them through a
``keras.callbacks.CallbackList`` with the same hooks.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from shared.diagnostics import (  # noqa: F401 (re-exported: users import them from here)
    ActivationHistograms,
    DeadReLUMonitor,
    GradientNormMonitor,
)
from shared.io import atomic_write_text


class EarlyStopping(keras.callbacks.Callback):
    """Early stopping exactly as Goodfellow et al. (2016), Algorithm 7.1.

    After each evaluation (one epoch: n = steps per epoch), if the monitored value v' improves
    on the best v: j <- 0, theta* <- theta, i* <- i, v <- v'; otherwise j <- j + 1. Training
    stops when j reaches the patience p. When training ends -- because patience ran out *or*
    because the epochs ran out -- the best parameters theta* are restored (``restore_best``).

    After training: ``best_epoch`` (1-based epoch of i*), ``best_step`` (i* in optimizer steps),
    ``best_value`` (v), ``stopped_epoch`` (1-based epoch where patience ran out, or 0).

    ``state_dir``: when given, (v, i*, j, theta*) are kept there, written atomically after every
    epoch, so that a run resumed by BackupAndRestore continues the same early-stopping
    procedure; the folder is removed when training ends normally.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 0.0,
        restore_best: bool = True,
        state_dir: str | os.PathLike | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        if patience < 1:
            raise ValueError("patience must be >= 1")
        if mode not in ("auto", "min", "max"):
            raise ValueError("mode must be auto, min or max")
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("return")) else "min"
        self.monitor, self.patience, self.mode = monitor, int(patience), mode
        self.min_delta, self.restore_best, self.verbose = abs(min_delta), restore_best, verbose
        self.state_dir = Path(state_dir) if state_dir else None
        self._reset()

    def _reset(self):
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_step = 0
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self._steps = 0

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    # -- persistence for resumed runs ------------------------------------------------------
    def _save_state(self):
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.best_weights is not None and self.wait == 0:
            tmp = self.state_dir / "best.tmp.npz"
            with open(tmp, "wb") as f:
                np.savez(f, *self.best_weights)
            os.replace(tmp, self.state_dir / "best.npz")
        state = {k: getattr(self, k) for k in
                 ("best_value", "best_epoch", "best_step", "wait", "_steps")}
        atomic_write_text(self.state_dir / "state.json", json.dumps(state))

    def _load_state(self):
        if self.state_dir is None or not (self.state_dir / "state.json").exists():
            return
        state = json.loads((self.state_dir / "state.json").read_text())
        for k, v in state.items():
            setattr(self, k, v)
        if (self.state_dir / "best.npz").exists():
            with np.load(self.state_dir / "best.npz") as f:
                self.best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]

    # -- Keras hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._reset()
        self._load_state()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r} but the logs only have "
                f"{sorted(logs)}; pass validation data or change `monitor`"
            )
        value = float(value)
        if self._improved(value):
            self.best_value, self.best_epoch, self.wait = value, epoch + 1, 0
            self.best_step = self._steps
            if self.restore_best:
                self.best_weights = [np.array(w) for w in self.model.get_weights()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch + 1
                self.model.stop_training = True
        logs["best_epoch"] = self.best_epoch
        self._save_state()

    def on_train_end(self, logs=None):
        if self.restore_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                print(
                    f"EarlyStopping: restored the best weights, epoch {self.best_epoch} "
                    f"(training step {self.best_step:,}), {self.monitor}={self.best_value:.5f}"
                    + (f"; stopped at epoch {self.stopped_epoch}" if self.stopped_epoch else "")
                )
        if self.state_dir is not None and self.state_dir.exists():
            for f in self.state_dir.iterdir():
                f.unlink()
            self.state_dir.rmdir()

    def summary(self) -> dict:
        return {
            "monitor": self.monitor,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "stopped_epoch": self.stopped_epoch,
        }


class DivideOnPlateau(keras.callbacks.Callback):
    """Divide the learning rate by ``1/factor`` (default 10) when ``monitor`` has not improved for
    ``patience`` epochs -- the rule of Krizhevsky et al. (2012) and He et al. (2016), "divide by
    10 when the error plateaus". Needs an optimizer with a plain (non-schedule) learning rate."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=3, min_lr=1e-6, mode="auto",
                 verbose=1):
        super().__init__()
        if not 0 < factor < 1:
            raise ValueError("factor must be in (0, 1)")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor, self.factor, self.patience, self.min_lr = monitor, factor, patience, min_lr
        self.mode, self.verbose = mode, verbose
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            return
        better = value < self.best if self.mode == "min" else value > self.best
        if better:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            new_lr = max(lr * self.factor, self.min_lr)
            if new_lr < lr:
                self.model.optimizer.learning_rate = new_lr
                if self.verbose:
                    print(f"DivideOnPlateau: learning rate {lr:.3g} -> {new_lr:.3g}")
            self.wait = 0


class TerminateOnNaN(keras.callbacks.Callback):
    """Stop at the first batch where a loss is NaN or infinite; ``terminated_at`` = that batch.
    Every logged quantity whose name ends in ``loss`` is watched (``loss``, and e.g. a GAN's
    ``d_loss`` / ``g_loss``)."""

    def __init__(self):
        super().__init__()
        self.terminated_at = None

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and value is not None and not math.isfinite(float(value)):
                self.terminated_at = batch
                print(f"TerminateOnNaN: {key} is {value} at batch {batch}; stopping")
                self.model.stop_training = True
                return


class LearningRateLogger(keras.callbacks.Callback):
    """Put the optimizer's current learning rate into the epoch logs as ``lr``."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Training examples per second, per epoch, into the logs as ``examples_per_sec`` (training
    phase only, validation excluded) and ``epoch_seconds`` (whole epoch)."""

    def __init__(self, examples_per_step: int):
        super().__init__()
        self.examples_per_step = int(examples_per_step)
        self.history: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._train_end = None
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_test_begin(self, logs=None):
        if getattr(self, "_t0", None) is not None and self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        train_seconds = (self._train_end or end) - self._t0
        steps = self._steps or (self.params or {}).get("steps") or 0
        rate = steps * self.examples_per_step / max(train_seconds, 1e-9)
        self.history.append(rate)
        if logs is not None:
            logs["examples_per_sec"] = rate
            logs["epoch_seconds"] = end - self._t0


class PolyakWeights(keras.callbacks.Callback):
    """Make the optimizer's moving average of the weights (``use_ema=True``, the ``--ema`` flag;
    Polyak averaging, Goodfellow et al. 8.7.3) the weights that are validated, kept as the best
    and restored. Keras alone validates the trained weights, and EarlyStopping's restore at the
    end replaces the average that ``fit()`` ends on, so the average would never be used.

    Validation runs on the average (swapped in for it, swapped out after). At each epoch's end
    the average sits in the model from this callback until its ``after`` callback, placed after
    EarlyStopping, puts the trained weights back: ``[polyak, EarlyStopping(...), polyak.after,
    ..., backup]``. The backup then holds the trained weights and the average in the optimizer,
    as training left them. Does nothing for an optimizer without ``use_ema``."""

    def __init__(self):
        super().__init__()
        self.swapped = False  # True while the model holds the average
        self.after = _PolyakSwapBack(self)

    def _pairs(self):
        opt = getattr(self.model, "optimizer", None)
        opt = getattr(opt, "inner_optimizer", opt)  # under a LossScaleOptimizer
        if not getattr(opt, "use_ema", False):
            return []
        return list(zip(opt._trainable_variables,
                        getattr(opt, "_model_variables_moving_average", [])))

    def swap(self):
        for var, average in self._pairs():
            value = keras.ops.convert_to_numpy(var)
            var.assign(average)
            average.assign(value)
        self.swapped = not self.swapped

    def on_test_begin(self, logs=None):
        if not self.swapped:
            self.swap()

    def on_test_end(self, logs=None):
        if self.swapped:
            self.swap()

    def on_epoch_end(self, epoch, logs=None):
        if not self.swapped:
            self.swap()


class _PolyakSwapBack(keras.callbacks.Callback):
    """PolyakWeights' second half: put the trained weights back at the epoch's end."""

    def __init__(self, owner: PolyakWeights):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        if self.owner.swapped:
            self.owner.swap()


class StopAtStep(keras.callbacks.Callback):
    """Stop ``fit`` after exactly ``steps`` optimizer steps (Algorithm 7.2's i*), counted by
    the optimizer, so a resumed run stops at the same step."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = int(steps)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (resume a killed ``fit()`` from its last completed epoch), with
    the backup written atomically (temporary file, then rename) so a kill during the save never
    leaves half a checkpoint, and written by the chief worker only under multi-worker training
    (every worker reads the chief's backup on restart)."""

    def __init__(self, backup_dir, is_chief: bool = True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.is_chief = is_chief
        self.resumed_from_epoch = 0

    def on_train_begin(self, logs=None):
        # Keras sets model._initial_epoch on a restore and never clears it: without this, a
        # later fit() of the same model (a fine-tuning phase) would skip that many epochs.
        self.model._initial_epoch = None
        super().on_train_begin(logs)
        self.resumed_from_epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
        if self.resumed_from_epoch:
            print(f"BackupAndRestore: resuming from the end of epoch {self.resumed_from_epoch} "
                  f"({self.backup_dir})")

    def _save_model(self):
        if not self.is_chief:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = self._weights_path + ".tmp.weights.h5"
        self.model.save_weights(filepath=tmp, overwrite=True)
        os.replace(tmp, self._weights_path)
        meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        atomic_write_text(self._training_metadata_path, json.dumps(meta))

    def on_train_end(self, logs=None):
        if self.is_chief:
            super().on_train_end(logs)


class GradualUnfreezing(keras.callbacks.Callback):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018, §3.3) on a ``LayerRateAdam``
    (shared/layer_rates.py): in the first ``start`` epochs only the layers the optimizer does not
    name train; then each epoch unfreezes the next layer of ``order`` (top to bottom) at its
    discriminative rate (the optimizer's ``layer_rates``); layers not yet reached have rate 0.
    The rates depend on the epoch only, so a resumed run sets them as the first sitting did."""

    def __init__(self, order: list[str], start: int = 1):
        super().__init__()
        self.order, self.start = list(order), int(start)

    def unfrozen(self, epoch: int) -> list[str]:
        return self.order[: max(0, epoch - self.start + 1)]

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if not opt.built:  # the rate variables are made when the optimizer builds
            opt.build(self.model.trainable_variables)
        on = self.unfrozen(epoch)
        for layer in self.order:
            opt.set_multiplier(layer, opt.layer_rates[layer] if layer in on else 0.0)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["unfrozen_layers"] = len(self.unfrozen(epoch))
