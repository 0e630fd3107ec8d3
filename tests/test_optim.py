"""The optimizer factory's parameters (issue 30): schedules' factors and intervals, the plateau
rule, momentum, Adam's betas, AdaGrad/Adadelta, global-norm clipping; defaults = the values that
were hard-wired before, so every app's numbers are unchanged."""

from __future__ import annotations

import math

import keras
import pytest

from shared.errors import UserError
from shared.optim import OptimizerConfig, learning_rate, make_optimizer, plateau_callback


def lr_at(config: OptimizerConfig, step: int) -> float:
    schedule = learning_rate(config)
    if isinstance(schedule, float):
        return schedule
    return float(keras.ops.convert_to_numpy(schedule(step)))


def _parse(app_name: str, *argv):
    import importlib

    return importlib.import_module(f"apps.{app_name}.train").APP.parse(list(argv))


# -- schedules with the new parameters ----------------------------------------------------------


def test_step_decay_halves_every_n_epochs():
    c = OptimizerConfig("sgd", 0.1, "step", epochs=10, steps_per_epoch=10, decay_factor=0.5,
                        decay_every=2)
    assert lr_at(c, 0) == pytest.approx(0.1)
    assert lr_at(c, 19) == pytest.approx(0.1)  # epoch 2 not done yet
    assert lr_at(c, 20) == pytest.approx(0.05)
    assert lr_at(c, 45) == pytest.approx(0.025)
    assert lr_at(c, 99) == pytest.approx(0.1 * 0.5 ** 4)


def test_step_decay_fractional_epochs_and_the_old_default():
    half = OptimizerConfig("sgd", 1.0, "step", epochs=4, steps_per_epoch=10, decay_every=0.5)
    assert lr_at(half, 4) == pytest.approx(1.0) and lr_at(half, 5) == pytest.approx(0.1)
    # defaults: x0.1 every third of the run (30 steps -> every 10), as hard-wired before
    old = OptimizerConfig("sgd", 1.0, "step", epochs=3, steps_per_epoch=10)
    assert (old.decay_factor, old.decay_every) == (0.1, None)
    assert [lr_at(old, k) for k in (9, 10, 20)] == pytest.approx([1.0, 0.1, 0.01])


def test_exponential_rate_per_epoch():
    c = OptimizerConfig("sgd", 0.2, "exponential", epochs=5, steps_per_epoch=8,
                        exponential_rate=0.5)
    assert lr_at(c, 8) == pytest.approx(0.1)
    assert lr_at(c, 4) == pytest.approx(0.2 * math.sqrt(0.5), rel=1e-5)
    assert lr_at(c, 24) == pytest.approx(0.025)
    default = OptimizerConfig("sgd", 0.2, "exponential", epochs=5, steps_per_epoch=8)
    assert lr_at(default, 8) == pytest.approx(0.2 * 0.96)  # the old hard-wired 0.96


def test_plateau_factor_and_patience():
    c = OptimizerConfig(schedule="plateau", plateau_factor=0.5, plateau_patience=3)
    cb = plateau_callback(c, "val_loss", patience=10)
    assert (cb.factor, cb.patience, cb.monitor) == (0.5, 3, "val_loss")
    # defaults as before: divide by 10 after half of early stopping's patience
    cb = plateau_callback(OptimizerConfig(schedule="plateau"), "val_accuracy", patience=6)
    assert (cb.factor, cb.patience) == (0.1, 3)
    assert plateau_callback(OptimizerConfig(schedule="step"), "val_loss", 6) is None


# -- optimizers ---------------------------------------------------------------------------------


def test_optimizer_classes_and_hyperparameters():
    def make(name, **kw):
        return make_optimizer(OptimizerConfig(name, 0.01, **kw))

    sgd = make("momentum", momentum=0.8)
    assert type(sgd) is keras.optimizers.SGD and sgd.momentum == pytest.approx(0.8)
    assert not sgd.nesterov
    nesterov = make("nesterov", momentum=0.95)
    assert nesterov.nesterov and nesterov.momentum == pytest.approx(0.95)
    assert make("sgd").momentum == 0.0
    adam = make("adam", beta_1=0.5, beta_2=0.99)
    assert type(adam) is keras.optimizers.Adam
    assert (adam.beta_1, adam.beta_2) == pytest.approx((0.5, 0.99))
    adamw = make("adamw", beta_1=0.8)
    assert type(adamw) is keras.optimizers.AdamW and adamw.beta_1 == pytest.approx(0.8)
    adagrad = make("adagrad")
    assert type(adagrad) is keras.optimizers.Adagrad
    assert adagrad.initial_accumulator_value == pytest.approx(0.1)
    assert adagrad.epsilon == pytest.approx(1e-7)
    adadelta = make("adadelta")
    assert type(adadelta) is keras.optimizers.Adadelta and adadelta.rho == pytest.approx(0.95)
    assert float(keras.ops.convert_to_numpy(adadelta.learning_rate)) == pytest.approx(0.01)


def test_clipping_per_variable_or_global():
    per = make_optimizer(OptimizerConfig("adam", clipnorm=1.0))
    assert (per.clipnorm, per.global_clipnorm) == (1.0, None)
    glob = make_optimizer(OptimizerConfig("adam", global_clipnorm=2.0))
    assert (glob.clipnorm, glob.global_clipnorm) == (None, 2.0)
    with pytest.raises(UserError, match="not both"):
        make_optimizer(OptimizerConfig("adam", clipnorm=1.0, global_clipnorm=2.0))


def test_global_clipping_clips_the_whole_gradient():
    opt = make_optimizer(OptimizerConfig("sgd", 1.0, global_clipnorm=1.0))
    a, b = keras.Variable([0.0, 0.0]), keras.Variable([0.0])
    opt.apply([keras.ops.array([3.0, 0.0]), keras.ops.array([4.0])], [a, b])  # norm 5 -> 1
    assert keras.ops.convert_to_numpy(a).tolist() == pytest.approx([-0.6, 0.0])
    assert keras.ops.convert_to_numpy(b).tolist() == pytest.approx([-0.8])


# -- the flags -> OptimizerConfig ---------------------------------------------------------------


def test_flags_reach_the_config():
    args = _parse("mnist_mlp", "--optimizer", "nesterov", "--momentum", "0.8", "--beta1", "0.7",
                  "--beta2", "0.99", "--schedule", "step", "--decay-factor", "0.5",
                  "--decay-every", "2", "--exponential-rate", "0.9", "--clip-global-norm", "3")
    c = OptimizerConfig.from_args(args, 7)
    assert (c.name, c.momentum, c.beta_1, c.beta_2) == ("nesterov", 0.8, 0.7, 0.99)
    assert (c.decay_factor, c.decay_every, c.exponential_rate) == (0.5, 2.0, 0.9)
    assert (c.global_clipnorm, c.clipnorm, c.steps_per_epoch) == (3.0, None, 7)


def test_defaults_equal_the_old_hard_wired_values():
    args = _parse("mnist_mlp", "--recipe", "keras")  # the default before issue 32
    c = OptimizerConfig.from_args(args, 10)
    assert c == OptimizerConfig(name="rmsprop", learning_rate=1e-3, schedule="linear",
                                epochs=15, steps_per_epoch=10)
    # the same numbers as before issue 30
    assert (c.momentum, c.beta_1, c.beta_2, c.decay_factor, c.decay_every,
            c.exponential_rate, c.plateau_factor, c.plateau_patience,
            c.global_clipnorm) == (0.9, 0.9, 0.999, 0.1, None, 0.96, 0.1, None, None)


def test_global_clip_replaces_an_apps_default_clipnorm():
    args = _parse("sentiment_gru", "--clip-global-norm", "2")  # its default --clipnorm is 1.0
    c = OptimizerConfig.from_args(args, 10)
    assert (c.clipnorm, c.global_clipnorm) == (None, 2.0)
    assert OptimizerConfig.from_args(_parse("sentiment_gru"), 10).clipnorm == 1.0


def test_dcgan_keeps_its_own_beta1():
    args = _parse("dcgan")
    assert args.beta1 == 0.5 and args.beta2 == 0.999  # Radford et al. §4; Kingma & Ba
    assert _parse("dcgan", "--beta1", "0.4").beta1 == 0.4
    c = OptimizerConfig.from_args(args, 10, beta_1=args.beta1)
    assert (c.beta_1, c.beta_2) == (0.5, 0.999)


@pytest.mark.parametrize("argv", [["--momentum", "1"], ["--beta2", "1.5"],
                                  ["--decay-every", "0"],
                                  ["--optimizer", "adamax"], ["--l2", "-1"]])
def test_bad_values_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse("mnist_mlp", *argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_has_one_line_per_new_flag():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _parse("mnist_mlp", "--help")
    text = out.getvalue()
    for flag in ("--momentum", "--beta1", "--beta2", "--clip-global-norm", "--decay-factor",
                 "--decay-every", "--exponential-rate", "--l2", "--l1", "--max-norm"):
        assert flag in text, flag
    assert "adagrad" in text and "adadelta" in text


def test_plateau_flags_reach_the_runs_callback(tmp_path):
    """--plateau-factor / --plateau-patience reach the DivideOnPlateau that Run.callbacks adds."""
    from apps.mnist_mlp.train import APP
    from shared.callbacks import DivideOnPlateau
    from shared.runs import Run

    args = APP.parse(["--schedule", "plateau", "--plateau-factor", "0.5", "--val-size", "5000",
                      "--plateau-patience", "3", "--run-dir", str(tmp_path)])
    run = Run(app="t", args=args, dir=tmp_path, strategy=None)
    (rule,) = [c for c in run.callbacks(backup=False, tensorboard=False)
               if isinstance(c, DivideOnPlateau)]
    assert rule.factor == 0.5 and rule.patience == 3
    default = APP.parse(["--schedule", "plateau", "--patience", "6", "--val-size", "5000"])
    run = Run(app="t", args=default, dir=tmp_path, strategy=None)
    (rule,) = [c for c in run.callbacks(backup=False, tensorboard=False)
               if isinstance(c, DivideOnPlateau)]
    assert rule.factor == 0.1 and rule.patience == 3  # half of early stopping's patience


@pytest.mark.parametrize("flags, message", [
    (["--schedule", "plateau"], "--schedule plateau watches the validation set"),
    (["--patience", "5"], "--patience watches the validation set"),
])
def test_rules_that_watch_validation_are_refused_when_nothing_is_held_out(flags, message,
                                                                          capsys):
    """The MNIST recipe trains on all 60,000 images (--val-size 0): early stopping and the
    plateau rule would watch a metric that never comes, so they are refused in one line."""
    from apps.mnist_mlp.train import APP

    with pytest.raises(SystemExit) as e:
        APP.parse(flags)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "--val-size N" in err[0]
    APP.parse([*flags, "--val-size", "5000"])  # with a validation split: accepted


def test_ema_flag_makes_fit_end_on_the_averaged_weights():
    """--ema M: Keras keeps w_avg <- M w_avg + (1 - M) w after each step and fit() ends by
    loading w_avg into the model (Polyak averaging, Goodfellow et al. 8.7.3)."""
    import numpy as np

    args = _parse("mnist_mlp", "--ema", "0.9")
    config = OptimizerConfig.from_args(args, 4)
    assert config.ema_momentum == 0.9
    assert OptimizerConfig.from_args(_parse("mnist_mlp"), 4).ema_momentum is None
    opt = make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.1, ema_momentum=0.5))
    assert opt.use_ema and opt.ema_momentum == 0.5
    w = keras.Variable(np.zeros(1, np.float32))
    opt.build([w])
    averaged = []
    for grad in (-1.0, -1.0, -1.0):  # w: 0.1, 0.2, 0.3
        opt.apply_gradients([(keras.ops.array([grad]), w)])
        averaged.append(
            float(keras.ops.convert_to_numpy(opt._model_variables_moving_average[0])[0]))
    # Keras starts the average at the first step's weights, then averages with momentum 0.5
    assert averaged == pytest.approx([0.1, 0.15, 0.225])
    opt.finalize_variable_values([w])
    assert float(keras.ops.convert_to_numpy(w)[0]) == pytest.approx(0.225)
