"""Command-line flags every app shares, spelled the same everywhere.

Shared: ``--epochs N``, ``--batch-size B`` (per replica), ``--learning-rate``, ``--optimizer``,
``--schedule``, ``--patience``, ``--limit N`` (only the first N training examples), ``--seed S``,
``--run-dir DIR``, ``--export-dir DIR`` (default ``saved_models/``), ``--no-export``,
``--gate-margin M``, ``--strategy``, ``--devices``, ``--precision``, ``--jit-compile``
(shared/precision.py); the optimizer's and schedules' parameters
(``--momentum``, ``--beta1``/``--beta2``, ``--clip-global-norm``, ``--decay-factor``,
``--decay-every``, ``--exponential-rate``) and the
weight-norm penalties (``--l2``, ``--l1``, ``--max-norm``, shared/regularizers.py). An app
adds its own flags and its own (cited)
defaults through its declaration (shared/app.py); the optimizer they name is built by
shared/optim.py.
"""

from __future__ import annotations

import argparse

import sys

from shared.distribute import STRATEGIES
from shared.optim import OPTIMIZERS, SCHEDULES
from shared.precision import PRECISIONS


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text} must be {what}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def unit_float(text: str) -> float:
    """A number in [0, 1) (momentum, Adam's betas)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def fraction(text: str) -> float:
    """A factor in (0, 1) (a learning-rate drop)."""
    value = positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be in (0, 1)")
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
    g.add_argument("--learning-rate", type=positive_float, default=1e-3,
                   help="initial learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule (see shared/schedules.py)")
    g.add_argument("--patience", type=positive_int, default=5,
                   help="early stopping patience p in epochs (Goodfellow et al. Algorithm 7.1)")
    g.add_argument("--monitor", default="val_loss",
                   help="validation quantity early stopping watches (val_loss, val_accuracy, ...)")
    g.add_argument("--retrain-on-all", action="store_true",
                   help="then retrain on train + validation for the best step count "
                        "(Goodfellow et al. Algorithm 7.2)")
    g.add_argument("--clipnorm", type=positive_float, default=None,
                   help="clip each gradient to this L2 norm")
    p = parser.add_argument_group("optimizer, schedule and regularization (shared by every app)")
    parser.optimizer_group = p  # add_optimizer_betas adds --beta1/--beta2 here
    p.add_argument("--momentum", type=unit_float, default=0.9, metavar="MU",
                   help="SGD momentum of --optimizer momentum/nesterov (Sutskever et al. 2013)")
    p.add_argument("--clip-global-norm", type=positive_float, default=None, metavar="NORM",
                   help="clip the whole gradient's norm (Pascanu et al. 2013); replaces --clipnorm")
    p.add_argument("--decay-factor", type=positive_float, default=0.1, metavar="F",
                   help="--schedule step: multiply lr by this at each drop (He et al. 2016: 0.1)")
    p.add_argument("--decay-every", type=positive_float, default=None, metavar="N",
                   help="--schedule step: drop every N epochs (None: every third of the run)")
    p.add_argument("--exponential-rate", type=positive_float, default=0.96, metavar="R",
                   help="--schedule exponential: multiply lr by this per epoch (TF tutorials)")
    p.add_argument("--plateau-factor", type=fraction, default=0.1, metavar="F",
                   help="--schedule plateau: multiply lr by this on a plateau (He et al. 2016)")
    p.add_argument("--plateau-patience", type=positive_int, default=None, metavar="P",
                   help="--schedule plateau: epochs without improvement (None: half --patience)")
    p.add_argument("--ema", type=unit_float, default=None, metavar="M",
                   help="validate and end on an exponential moving average of the weights, "
                        "momentum M (Polyak averaging, Goodfellow et al. 8.7.3; e.g. 0.999)")
    p.add_argument("--adversarial", type=nonnegative_float, default=None, metavar="EPS",
                   help="also train on adversarial examples of size EPS, 0 = off (Goodfellow "
                        "et al. 2015; shared/adversarial.py)")
    p.add_argument("--l2", type=positive_float, default=None, metavar="LAMBDA",
                   help="add l2 * sum(w^2) of every kernel to the loss (biases, BN excluded)")
    p.add_argument("--l1", type=positive_float, default=None, metavar="LAMBDA",
                   help="add l1 * sum(|w|) of every kernel to the loss (biases, BN excluded)")
    p.add_argument("--max-norm", type=positive_float, default=None, metavar="C",
                   help="after each step, rescale each unit's incoming weights to norm <= this "
                        "(Srivastava et al. 2014)")
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
    diag = parser.add_argument_group("diagnostics")
    diag.add_argument("--histograms", type=positive_int, default=None, metavar="N",
                      help="TensorBoard: the model graph, weight and activation histograms "
                           "every N epochs")
    diag.add_argument("--curvature", action="store_true",
                      help="log g'Hg along the gradient on the probe batch (Goodfellow §4.3.1)")
    f = parser.add_argument_group("speed (shared by every app; shared/precision.py)")
    f.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="Keras dtype policy; auto: the app's measured default for the device kind")
    f.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the training step with XLA (unset: Keras' auto, off on CPUs)")
    d = parser.add_argument_group("distribution")
    d.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute strategy; multi_worker reads TF_CONFIG")
    d.add_argument("--devices", type=positive_int, default=None,
                   help="split the CPU into N logical devices (to exercise multi-device code "
                        "without GPUs), or use the first N GPUs")
    return parser


def add_optimizer_betas(parser) -> None:
    """Adam's ``--beta1``/``--beta2`` (Kingma & Ba 2015: 0.9, 0.999), added after the app's own
    flags so that an app declaring its own (DCGAN's ``--beta1`` 0.5, Radford et al.) keeps it."""
    group = getattr(parser, "optimizer_group", parser)
    for flag, default, cite in (("--beta1", 0.9, "0.9"), ("--beta2", 0.999, "0.999")):
        if flag in parser._option_string_actions:  # the app's own flag wins
            continue
        group.add_argument(flag, type=unit_float, default=default, metavar="BETA",
                           help=f"Adam/AdamW {flag[2:]} (Kingma & Ba 2015: {cite})")
