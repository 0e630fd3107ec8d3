"""Command-line flags every app shares, spelled the same everywhere.

Shared: ``--epochs N``, ``--batch-size B`` (per replica), ``--learning-rate``, ``--optimizer``,
``--schedule``, ``--patience``, ``--limit N`` (only the first N training examples), ``--seed S``,
``--run-dir DIR``, ``--export-dir DIR`` (default ``saved_models/``), ``--no-export``,
``--gate-margin M``, ``--strategy``, ``--devices``. An app adds its own flags and its own (cited)
defaults through its declaration (shared/app.py); the optimizer they name is built by
shared/optim.py.
"""

from __future__ import annotations

import argparse

import sys

from shared.distribute import STRATEGIES
from shared.optim import OPTIMIZERS, SCHEDULES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``error: ...``) and exit 2."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = parser.add_argument_group("training (shared by every app)")
    g.add_argument("--epochs", type=positive_int, default=10, help="maximum number of epochs")
    g.add_argument("--batch-size", type=positive_int, default=128,
                   help="batch size per replica (global batch = this x replicas)")
    g.add_argument("--learning-rate", type=positive_float, default=1e-3, help="initial learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule (see shared/schedules.py)")
    g.add_argument("--patience", type=positive_int, default=5,
                   help="early stopping patience p in epochs (Goodfellow et al. Algorithm 7.1)")
    g.add_argument("--monitor", default="val_loss",
                   help="validation quantity early stopping watches (val_loss, val_accuracy, ...)")
    g.add_argument("--clipnorm", type=positive_float, default=None,
                   help="clip each gradient to this L2 norm")
    g.add_argument("--limit", type=positive_int, default=None,
                   help="use only the first N training examples")
    g.add_argument("--seed", type=int, default=42, help="seed for every random choice")
    g.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                   help="allow non-deterministic (faster) kernels")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                   help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch")
    o = parser.add_argument_group("outputs")
    o.add_argument("--run-dir", default=None,
                   help="run directory (config, history, metrics, plots, checkpoints); "
                        "default runs/<app>. Re-running an interrupted command resumes it")
    o.add_argument("--export-dir", default="saved_models",
                   help="SavedModels go to <export-dir>/<model name>/<version>/")
    o.add_argument("--no-export", dest="export", action="store_false", help="skip the export")
    o.add_argument("--gate-margin", type=float, default=None,
                   help="refuse to publish if the test metric is worse than the latest published "
                        "version's by more than this")
    d = parser.add_argument_group("distribution")
    d.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute strategy; multi_worker reads TF_CONFIG")
    d.add_argument("--devices", type=positive_int, default=None,
                   help="split the CPU into N logical devices (to exercise multi-device code "
                        "without GPUs), or use the first N GPUs")
    return parser
