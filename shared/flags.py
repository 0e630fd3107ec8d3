"""Command-line flags every app shares, spelled the same everywhere, and the optimizer they build.

Shared: ``--epochs N``, ``--batch-size B`` (per replica), ``--learning-rate``, ``--optimizer``,
``--schedule``, ``--patience``, ``--limit N`` (only the first N training examples), ``--seed S``,
``--run-dir DIR``, ``--export-dir DIR`` (default ``saved_models/``), ``--no-export``,
``--gate-margin M``, ``--strategy``, ``--devices``. An app adds its own flags and sets its own
(cited) defaults with ``parser.set_defaults``.
"""

from __future__ import annotations

import argparse

from shared.distribute import STRATEGIES
from shared.errors import UserError
from shared.schedules import SCHEDULES, make_schedule

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")


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


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def make_optimizer(args, steps_per_epoch: int):
    """The optimizer named by ``--optimizer`` with the ``--schedule`` learning rate."""
    import keras

    lr = make_schedule(args.schedule, args.learning_rate, steps_per_epoch, args.epochs)
    clip = {"clipnorm": args.clipnorm} if getattr(args, "clipnorm", None) else {}
    name = args.optimizer
    if name == "sgd":
        return keras.optimizers.SGD(lr, **clip)
    if name == "momentum":  # 0.9: Sutskever et al. 2013; the course's default momentum
        return keras.optimizers.SGD(lr, momentum=0.9, **clip)
    if name == "nesterov":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **clip)
    if name == "rmsprop":  # rho 0.9 (Hinton's lecture 6e; Keras default)
        return keras.optimizers.RMSprop(lr, **clip)
    if name == "adam":  # beta1 0.9, beta2 0.999, eps 1e-7 (Kingma & Ba 2015; Keras defaults)
        return keras.optimizers.Adam(lr, **clip)
    if name == "adamw":  # weight decay 0.004 (Keras default; Loshchilov & Hutter 2019)
        return keras.optimizers.AdamW(lr, **clip)
    raise UserError(f"unknown optimizer {name!r}")
