"""Run records: one directory per run, and the standard callbacks that fill it.

    <run dir>/config.json          resolved flags, strategy, replicas, library versions
             history.csv           one row per epoch (CSVLogger; appended when a run resumes)
             tensorboard/          TensorBoard events
             checkpoints/backup/   BackupAndRestore (removed when training completes)
             checkpoints/early_stopping/  Algorithm 7.1 state, so a resumed run continues it
             learning_curves.png   loss / metric / learning rate per epoch
             metrics.json          final metrics (test set), best epoch, throughput, wall time

``Run.start`` seeds everything from ``--seed``, splits devices, builds the strategy and creates
the directory, which it holds until the run ends (``.lock``: a second training process on the
same directory, say a resume started while the first still runs, stops with a clear error);
``Run.callbacks`` returns the shared callbacks; ``Run.finish`` writes the metrics and the plot.
Under multi-worker training only the chief writes into the run directory; other workers write
into ``<run dir>/workers/<index>/``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from shared import distribute
from shared.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # Keras is imported when a run builds its callbacks, not with this module
    from shared import callbacks as cb


def library_versions(*extra: str) -> dict:
    """Python and installed distribution versions (tensorflow, keras, numpy, and ``extra``),
    read from package metadata: nothing is imported."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow", "keras", "numpy", *extra):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Python, NumPy and TensorFlow seeds from one value; deterministic kernels on request."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def peak_memory() -> dict:
    """This process's peak resident memory (``peak_rss_mb``, getrusage) and, when TensorFlow has
    GPUs, each one's peak allocation so far (``peak_device_memory_mb``, get_memory_info)."""
    import resource
    import sys

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    out = {"peak_rss_mb": round(kb / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            out["peak_device_memory_mb"] = [
                round(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] / 2**20, 1)
                for i in range(len(gpus))]
    return out


_HELD: dict = {}  # run directory (resolved) -> the open lock file this process holds


def hold_run_dir(run_dir: Path) -> None:
    """Take an exclusive lock on ``run_dir/.lock`` until the run releases it or this process
    exits. Two processes training into one directory would overwrite each other's checkpoints
    and history rows, so the second one stops here with the first one's pid. A process may take
    its own lock again (a run trained twice in one interpreter, as the tests do)."""
    key = Path(run_dir).resolve()
    if key in _HELD:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    from shared.errors import UserError

    f = open(Path(run_dir) / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{run_dir} is in use by a training process that is still running "
                        f"({holder}); stop it first, or choose another --run-dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    _HELD[key] = f


def release_run_dir(run_dir: Path) -> None:
    """Give up this process's lock on ``run_dir`` (a run trained in-process has ended)."""
    f = _HELD.pop(Path(run_dir).resolve(), None)
    if f is not None:
        f.close()  # closing the file releases its flock


@dataclass
class Run:
    app: str
    args: object
    dir: Path
    strategy: object
    is_chief: bool = True
    started: float = field(default_factory=time.time)
    early_stopping: cb.EarlyStopping | None = None
    backup: cb.AtomicBackupAndRestore | None = None
    throughput: cb.Throughput | None = None
    parent: "Run | None" = None
    stages: dict = field(default_factory=dict)

    @classmethod
    def start(cls, app: str, args, extra_config: dict | None = None) -> "Run":
        # Devices and collective ops must be configured before TensorFlow initializes its
        # runtime, so the strategy comes first and seeding after it.
        strategy = distribute.make_strategy(args.strategy, getattr(args, "devices", None))
        seed_everything(args.seed, getattr(args, "deterministic", True))
        chief = distribute.is_chief()
        root = Path(args.run_dir or Path("runs") / app)
        run_dir = root if chief else root / "workers" / str(distribute.task_info()[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        hold_run_dir(run_dir)
        run = cls(app=app, args=args, dir=run_dir, strategy=strategy, is_chief=chief)
        config = {
            "app": app,
            "args": {k: v for k, v in vars(args).items()},
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "global_batch_size": run.global_batch(getattr(args, "batch_size", 1)),
            "tf_config": os.environ.get("TF_CONFIG"),
            "libraries": library_versions(),
            "cpu": cpu_model(),
            **(extra_config or {}),
        }
        atomic_write_json(run_dir / "config.json", config)
        print(f"[{app}] run directory {run_dir} | strategy {config['strategy']} with "
              f"{config['replicas']} replica(s) | global batch {config['global_batch_size']}")
        return run

    def release(self) -> None:
        release_run_dir(self.dir)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def global_batch(self, per_replica: int) -> int:
        return int(per_replica) * self.replicas

    @property
    def history_csv(self) -> Path:
        return self.dir / "history.csv"

    def callbacks(
        self,
        monitor: str = "val_loss",
        patience: int | None = None,
        examples_per_step: int | None = None,
        probe: tuple | None = None,
        backup: bool = True,
        tensorboard: bool = True,
        extra: list | None = None,
    ) -> list:
        """The shared callbacks, in an order where each sees the logs the previous ones added:
        early stopping (between the two halves of PolyakWeights with --ema), plateau rule (if
        --schedule plateau), NaN termination, learning-rate and throughput logging, diagnostics
        on a probe batch, CSV, TensorBoard, backup."""
        import keras

        from shared import callbacks as cb

        args = self.args
        out: list = []
        patience = patience if patience is not None else getattr(args, "patience", None)
        # --ema: validation and early stopping see the averaged weights, which the run ends on.
        polyak = cb.PolyakWeights() if getattr(args, "ema", None) is not None else None
        if polyak is not None:
            out.append(polyak)
        if patience:
            # Every worker keeps its own early-stopping state (a non-chief's dir is its own): a
            # resumed worker that forgot (v, j) would stop at another epoch than the chief and
            # leave it blocked in an all-reduce.
            self.early_stopping = cb.EarlyStopping(
                monitor=monitor, patience=patience, restore_best=True,
                state_dir=self.dir / "checkpoints" / "early_stopping",
            )
            out.append(self.early_stopping)
        if polyak is not None:
            out.append(polyak.after)
        from shared.optim import OptimizerConfig, plateau_callback

        plateau = plateau_callback(
            OptimizerConfig(schedule=getattr(args, "schedule", "constant"),
                            plateau_factor=getattr(args, "plateau_factor", 0.1),
                            plateau_patience=getattr(args, "plateau_patience", None)),
            monitor, patience)
        if plateau is not None:
            out.append(plateau)
        out.append(cb.TerminateOnNaN())
        out.append(cb.LearningRateLogger())
        if examples_per_step:
            self.throughput = cb.Throughput(examples_per_step)
            out.append(self.throughput)
        if probe is not None:
            out.append(cb.DeadReLUMonitor(probe[0]))
            if len(probe) > 1:
                out.append(cb.GradientNormMonitor(probe[0], probe[1],
                                                  curvature=getattr(args, "curvature", False)))
        out.extend(extra or [])
        # A resumed run appends to its history (cut back to the epochs the backup holds, in
        # case the kill fell between the history row and the backup); a fresh one starts anew.
        meta = self.dir / "checkpoints" / "backup" / "training_metadata.json"
        resuming = meta.exists() and self.history_csv.exists()
        if resuming:
            self._truncate_history(json.loads(meta.read_text()).get("epoch", 0))
        out.append(keras.callbacks.CSVLogger(str(self.history_csv), append=resuming))
        if tensorboard:
            histograms = getattr(args, "histograms", 0) or 0  # --histograms N: every N epochs
            out.append(keras.callbacks.TensorBoard(str(self.dir / "tensorboard"),
                                                   histogram_freq=histograms,
                                                   write_graph=bool(histograms)))
            if histograms and probe is not None:  # the probe batch's activations beside them
                out.append(cb.ActivationHistograms(probe[0], self.dir / "tensorboard" /
                                                   "activations", every=histograms))
        if backup:
            self.backup = cb.AtomicBackupAndRestore(
                str(self.dir.parent.parent / "checkpoints" / "backup") if not self.is_chief
                else str(self.dir / "checkpoints" / "backup"),
                is_chief=self.is_chief,
            )
            out.append(self.backup)
        return out

    def _truncate_history(self, epochs: int) -> None:
        lines = self.history_csv.read_text().splitlines(keepends=True)
        if len(lines) > epochs + 1:
            atomic_write_text(self.history_csv, "".join(lines[: epochs + 1]))

    def stage(self, name: str) -> "Run":
        """A training stage of this run (e.g. VGG16's feature extraction, then fine-tuning): a
        sub-run in ``<run dir>/<name>/`` with its own history, early stopping, backup and
        learning curves. Its ``finish`` records the stage's summary in this run's record."""
        d = self.dir / name
        d.mkdir(parents=True, exist_ok=True)
        sub = Run(app=f"{self.app}/{name}", args=self.args, dir=d, strategy=self.strategy,
                  is_chief=self.is_chief, parent=self)
        return sub

    def finish(self, metrics: dict, plot_metrics: tuple[str, ...] = (),
               extra: dict | None = None) -> dict:
        """Write metrics.json (and the learning-curve plot) and return the record. A stage's
        record also goes into its parent run's ``stages``."""
        record = {
            "app": self.app,
            "metrics": metrics,
            "wall_seconds": round(time.time() - self.started, 2),
            "replicas": self.replicas,
        }
        if self.stages:
            record["stages"] = self.stages
        record.update(extra or {})
        if self.early_stopping is not None:
            record["early_stopping"] = self.early_stopping.summary()
        if self.backup is not None:
            record["resumed_from_epoch"] = self.backup.resumed_from_epoch
        if self.throughput is not None and self.throughput.history:
            rates = self.throughput.history
            # The first epoch includes tracing/compilation; report the median of the rest.
            steady = sorted(rates[1:] or rates)
            record["examples_per_sec"] = steady[len(steady) // 2]
        record.update(peak_memory())
        if self.history_csv.exists():
            import pandas as pd

            try:
                hist = pd.read_csv(self.history_csv)
                record["epochs_run"] = int(len(hist))
                if self.is_chief:
                    from shared.plots import learning_curves

                    learning_curves(hist, self.dir / "learning_curves.png", plot_metrics,
                                    title=self.app,
                                    best_epoch=record.get("early_stopping", {}).get("best_epoch"))
            except (pd.errors.EmptyDataError, ValueError):
                pass
        atomic_write_json(self.dir / "metrics.json", record)
        if self.parent is not None:
            self.parent.stages[self.dir.name] = {k: v for k, v in record.items() if k != "app"}
        ckpt = self.dir / "checkpoints"
        if ckpt.is_dir() and not any(ckpt.iterdir()):
            ckpt.rmdir()
        return record
