"""One road for the learning rate: a small config of plain values -> a Keras optimizer.

Every app's optimizer comes from :func:`make_optimizer` (the GAN's two players and the DQN's
Q-network too); the learning-rate schedule and the plateau rule are decided here once. The config
is built from the parsed flags by :meth:`OptimizerConfig.from_args` at the edge (the runner), so no
``args`` travels into the code below it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta")
# The `--schedule` choices; shared/schedules.py builds them (Keras is imported only there).
SCHEDULES = ("constant", "step", "exponential", "inverse_time", "linear", "cosine", "triangular",
             "slanted", "plateau")


# OptimizerConfig field <- the shared flag's dest (shared/flags.py), when the flag is given.
_FLAGS = {"global_clipnorm": "clip_global_norm", "momentum": "momentum", "beta_1": "beta1",
          "beta_2": "beta2", "decay_factor": "decay_factor", "decay_every": "decay_every",
          "exponential_rate": "exponential_rate", "plateau_factor": "plateau_factor",
          "plateau_patience": "plateau_patience", "ema_momentum": "ema"}


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
    initial_accumulator: float = 0.1  # AdaGrad's starting sum of squares (Keras default)
    adadelta_rho: float = 0.95  # Adadelta's decay (Zeiler 2012 §4.1: 0.95; Keras default)
    decay_factor: float = 0.1  # `step`: x0.1 at each drop (He et al. 2016, divide by 10)
    decay_every: float | None = None  # `step`: drop every N epochs (None: every third of the run)
    exponential_rate: float = 0.96  # `exponential`: x0.96 per epoch (TensorFlow tutorials)
    plateau_factor: float = 0.1  # `plateau`: divide by 10 (Goodfellow §8.3 / He et al. 2016)
    plateau_patience: int | None = None  # `plateau`: epochs to wait (None: half of --patience)
    # Decoupled weight decay (Loshchilov & Hutter 2019): w -= lr_k x weight_decay x w at each step,
    # outside the gradient; None: none (adamw: Keras' 0.004). Variables named in
    # ``no_weight_decay`` are left out.
    weight_decay: float | None = None
    no_weight_decay: tuple = ()
    # Polyak averaging (Goodfellow et al. §8.7.3; Polyak & Juditsky 1992): the optimizer keeps an
    # exponential moving average of every weight and fit() ends by loading it (Keras' use_ema).
    ema_momentum: float | None = None

    @classmethod
    def from_args(cls, args, steps_per_epoch: int, **overrides) -> "OptimizerConfig":
        """The shared flags' values (``--optimizer``, ``--learning-rate``, ``--schedule``,
        ``--epochs``, ``--clipnorm``, ``--clip-global-norm``, ``--momentum``, ``--beta1``,
        ``--beta2``, the schedules' ``--decay-factor``, ``--decay-every``,
        ``--exponential-rate``, ``--plateau-factor``, ``--plateau-patience``), then an app's
        ``overrides``. A flag a parser lacks keeps the field's default. ``--clip-global-norm``
        replaces the per-variable ``--clipnorm`` (Keras takes one of the two)."""
        values = dict(name=args.optimizer, learning_rate=args.learning_rate,
                      schedule=args.schedule, epochs=args.epochs,
                      steps_per_epoch=max(1, int(steps_per_epoch)),
                      clipnorm=getattr(args, "clipnorm", None))
        for field_name, flag in _FLAGS.items():
            value = getattr(args, flag, None)
            if value is not None:
                values[field_name] = value
        if values.get("global_clipnorm"):
            values["clipnorm"] = None
        values.update(overrides)
        return cls(**values)

    def scaled(self, factor: float) -> "OptimizerConfig":
        """The same optimizer at ``factor`` times the learning rate (e.g. a fine-tuning stage)."""
        return replace(self, learning_rate=self.learning_rate * factor)


def learning_rate(config: OptimizerConfig):
    """The learning rate (a float, or a schedule over the optimizer's step counter)."""
    from shared.schedules import make_schedule

    options = {"factor": config.decay_factor, "rate": config.exponential_rate}
    if config.decay_every is not None:  # epochs -> optimizer steps
        options["every"] = max(1, round(config.decay_every * config.steps_per_epoch))
    if config.final_learning_rate is not None:
        options["final"] = config.final_learning_rate
    return make_schedule(config.schedule, config.learning_rate, config.steps_per_epoch,
                         config.epochs, **options)


def make_optimizer(config: OptimizerConfig):
    """The Keras optimizer the config names, with its learning-rate schedule."""
    optimizer = _make_optimizer(config)
    if config.no_weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(config.no_weight_decay))
    return optimizer


def _make_optimizer(config: OptimizerConfig):
    import keras

    lr = learning_rate(config)
    kw = {}
    if config.clipnorm and config.global_clipnorm:
        raise UserError("clip either each gradient (--clipnorm) or the global norm "
                        "(--clip-global-norm), not both")
    if config.clipnorm:
        kw["clipnorm"] = config.clipnorm
    if config.global_clipnorm:
        kw["global_clipnorm"] = config.global_clipnorm
    if config.ema_momentum is not None:
        kw.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.weight_decay is not None:
        if config.name not in ("sgd", "momentum", "nesterov", "adam", "adamw"):
            raise UserError(f"weight decay is not wired for --optimizer {config.name}")
        kw["weight_decay"] = config.weight_decay
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
    if name == "adagrad":  # Duchi et al. 2011
        return keras.optimizers.Adagrad(lr, initial_accumulator_value=config.initial_accumulator,
                                        epsilon=config.epsilon, **kw)
    if name == "adadelta":  # Zeiler 2012
        return keras.optimizers.Adadelta(lr, rho=config.adadelta_rho, epsilon=config.epsilon,
                                         **kw)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def plateau_callback(config: OptimizerConfig, monitor: str, patience: int | None):
    """The divide-on-plateau rule (the `plateau` schedule), or None for other schedules: x
    ``plateau_factor`` (default 0.1) after ``plateau_patience`` epochs without improvement
    (default half of early stopping's patience, so it acts before training stops)."""
    if config.schedule != "plateau":
        return None
    from shared.callbacks import DivideOnPlateau

    wait = config.plateau_patience or max(1, (patience or 4) // 2)
    return DivideOnPlateau(monitor=monitor, factor=config.plateau_factor, patience=wait)


__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimizerConfig", "learning_rate", "make_optimizer",
           "plateau_callback"]
