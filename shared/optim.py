"""One road for the learning rate: a small config of plain values -> a Keras optimizer.

Every app's optimizer comes from :func:`make_optimizer` (the GAN's two players and the DQN's
Q-network too); the learning-rate schedule and the plateau rule are decided here once. The config
is built from the parsed flags by :meth:`OptimizerConfig.from_args` at the edge (the runner), so no
``args`` travels into the code below it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
# The `--schedule` choices; shared/schedules.py builds them (Keras is imported only there).
SCHEDULES = ("constant", "step", "exponential", "inverse_time", "linear", "cosine", "plateau")


@dataclass(frozen=True)
class OptimizerConfig:
    """What an optimizer needs, as plain values. ``steps_per_epoch x epochs`` is the horizon of
    the schedules that decay over the run."""

    name: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    epochs: int = 1
    steps_per_epoch: int = 1
    clipnorm: float | None = None  # per-variable L2 clipping (Keras' clipnorm)
    global_clipnorm: float | None = None  # clip the whole gradient's norm (Pascanu et al. 2013)
    momentum: float = 0.9  # Sutskever et al. 2013; the course's default momentum
    beta_1: float = 0.9  # Kingma & Ba 2015 (Keras default)
    beta_2: float = 0.999  # Kingma & Ba 2015 (Keras default)
    rho: float = 0.9  # RMSprop's decay (Hinton's lecture 6e; Keras default)
    epsilon: float = 1e-7  # Keras' default for Adam and RMSprop
    centered: bool = False  # RMSprop normalised by the gradient's variance (Graves 2013)
    final_learning_rate: float | None = None  # the `linear` schedule's floor (default 1% of lr)

    @classmethod
    def from_args(cls, args, steps_per_epoch: int, **overrides) -> "OptimizerConfig":
        """The shared flags' values (``--optimizer``, ``--learning-rate``, ``--schedule``,
        ``--epochs``, ``--clipnorm``), then an app's ``overrides``."""
        values = dict(name=args.optimizer, learning_rate=args.learning_rate,
                      schedule=args.schedule, epochs=args.epochs,
                      steps_per_epoch=max(1, int(steps_per_epoch)),
                      clipnorm=getattr(args, "clipnorm", None))
        values.update(overrides)
        return cls(**values)

    def scaled(self, factor: float) -> "OptimizerConfig":
        """The same optimizer at ``factor`` times the learning rate (e.g. a fine-tuning stage)."""
        return replace(self, learning_rate=self.learning_rate * factor)


def learning_rate(config: OptimizerConfig):
    """The learning rate (a float, or a schedule over the optimizer's step counter)."""
    from shared.schedules import make_schedule

    options = {}
    if config.final_learning_rate is not None:
        options["final"] = config.final_learning_rate
    return make_schedule(config.schedule, config.learning_rate, config.steps_per_epoch,
                         config.epochs, **options)


def make_optimizer(config: OptimizerConfig):
    """The Keras optimizer the config names, with its learning-rate schedule."""
    import keras

    lr = learning_rate(config)
    kw = {}
    if config.clipnorm:
        kw["clipnorm"] = config.clipnorm
    if config.global_clipnorm:
        kw["global_clipnorm"] = config.global_clipnorm
    name = config.name
    if name == "sgd":
        return keras.optimizers.SGD(lr, **kw)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=name == "nesterov",
                                    **kw)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, rho=config.rho, epsilon=config.epsilon,
                                        centered=config.centered, **kw)
    if name == "adam":
        return keras.optimizers.Adam(lr, beta_1=config.beta_1, beta_2=config.beta_2,
                                     epsilon=config.epsilon, **kw)
    if name == "adamw":  # weight decay 0.004 (Keras default; Loshchilov & Hutter 2019)
        return keras.optimizers.AdamW(lr, beta_1=config.beta_1, beta_2=config.beta_2,
                                      epsilon=config.epsilon, **kw)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def plateau_callback(config: OptimizerConfig, monitor: str, patience: int | None):
    """The divide-by-10-on-plateau rule (the `plateau` schedule), or None for other schedules:
    the plateau waits half of early stopping's patience, so it acts before training stops."""
    if config.schedule != "plateau":
        return None
    from shared.callbacks import DivideOnPlateau

    return DivideOnPlateau(monitor=monitor, factor=0.1, patience=max(1, (patience or 4) // 2))


__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimizerConfig", "learning_rate", "make_optimizer",
           "plateau_callback"]
