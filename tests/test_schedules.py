"""Learning-rate schedules: exact values, make_schedule, serialization, use in an optimizer."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from shared.errors import UserError
from shared.schedules import (
    SCHEDULES,
    ExponentialDecay,
    InverseTimeDecay,
    LinearDecay,
    StepDecay,
    Triangular,
    WarmupCosine,
    make_schedule,
)


def lr(schedule, k) -> float:
    return float(keras.ops.convert_to_numpy(schedule(k)))


# -- LinearDecay: Goodfellow eq. 8.14 ---------------------------------------------------------


def test_linear_decay_eq_8_14():
    s = LinearDecay(0.1, 0.001, tau=100)
    assert lr(s, 0) == pytest.approx(0.1, rel=1e-6)
    # k < tau: (1 - a) eps0 + a eps_tau with a = k / tau
    for k in (1, 25, 50, 99):
        a = k / 100
        assert lr(s, k) == pytest.approx((1 - a) * 0.1 + a * 0.001, rel=1e-5)
    assert lr(s, 100) == pytest.approx(0.001, rel=1e-5)
    # constant after tau
    assert lr(s, 101) == pytest.approx(0.001, rel=1e-5)
    assert lr(s, 10_000) == pytest.approx(0.001, rel=1e-5)


def test_linear_decay_default_final_is_one_percent():
    s = LinearDecay(0.5, tau=10)
    assert s.final == pytest.approx(0.005)
    assert lr(s, 10) == pytest.approx(0.005, rel=1e-5)


# -- StepDecay ---------------------------------------------------------------------------------


def test_step_decay_boundaries():
    s = StepDecay(1.0, factor=0.1, every=10)
    assert lr(s, 0) == pytest.approx(1.0)
    assert lr(s, 9) == pytest.approx(1.0)
    assert lr(s, 10) == pytest.approx(0.1, rel=1e-6)
    assert lr(s, 19) == pytest.approx(0.1, rel=1e-6)
    assert lr(s, 20) == pytest.approx(0.01, rel=1e-5)
    assert lr(s, 35) == pytest.approx(0.001, rel=1e-5)


# -- ExponentialDecay / InverseTimeDecay --------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 50, 100, 250, 1000])
def test_exponential_decay(k):
    s = ExponentialDecay(0.2, rate=0.5, decay_steps=100)
    assert lr(s, k) == pytest.approx(0.2 * 0.5 ** (k / 100), rel=1e-5)


@pytest.mark.parametrize("k", [0, 1, 10, 1000, 123_456])
def test_inverse_time_decay(k):
    s = InverseTimeDecay(0.01, decay=1e-3)
    assert lr(s, k) == pytest.approx(0.01 / (1 + 1e-3 * k), rel=1e-5)


# -- WarmupCosine ------------------------------------------------------------------------------


def test_warmup_cosine():
    s = WarmupCosine(peak=1.0, total=110, warmup=10, floor=0.1)
    assert lr(s, 0) == pytest.approx(0.0, abs=1e-7)
    assert lr(s, 5) == pytest.approx(0.5, rel=1e-6)  # linear warm-up
    assert lr(s, 10) == pytest.approx(1.0, rel=1e-6)  # end of warm-up: the peak
    assert lr(s, 60) == pytest.approx(0.55, rel=1e-5)  # middle of the cosine: (peak+floor)/2
    k = 35  # a quarter of the way through the cosine
    expected = 0.1 + 0.5 * 0.9 * (1 + math.cos(math.pi * 0.25))
    assert lr(s, k) == pytest.approx(expected, rel=1e-5)
    assert lr(s, 110) == pytest.approx(0.1, rel=1e-5)  # end: the floor
    assert lr(s, 500) == pytest.approx(0.1, rel=1e-5)  # stays there


def test_warmup_cosine_without_warmup_starts_at_peak():
    s = WarmupCosine(peak=0.3, total=100)
    assert lr(s, 0) == pytest.approx(0.3, rel=1e-6)
    assert lr(s, 50) == pytest.approx(0.15, rel=1e-5)
    assert lr(s, 100) == pytest.approx(0.0, abs=1e-7)


# -- Triangular (airbench94) --------------------------------------------------------------------


def test_triangular():
    s = Triangular(peak=2.0, total=100, start=0.2, end=0.07, rise=0.25)
    assert lr(s, 0) == pytest.approx(0.4, rel=1e-6)  # start x peak
    assert lr(s, 12.5) == pytest.approx(2.0 * 0.6, rel=1e-5)  # half way up
    assert lr(s, 25) == pytest.approx(2.0, rel=1e-6)  # the peak at 25% of the run
    assert lr(s, 62.5) == pytest.approx(2.0 * (1 + 0.07) / 2, rel=1e-5)  # half way down
    assert lr(s, 100) == pytest.approx(0.14, rel=1e-5)  # end x peak
    assert lr(s, 150) == pytest.approx(0.14, rel=1e-5)  # stays there


@pytest.mark.parametrize(
    "make",
    [
        lambda: Triangular(0.1, total=0),
        lambda: Triangular(0.1, total=10, rise=1.0),
        lambda: StepDecay(0.1, every=0),
        lambda: ExponentialDecay(0.1, decay_steps=0),
        lambda: InverseTimeDecay(0.1, decay=-1),
        lambda: LinearDecay(0.1, tau=0),
        lambda: WarmupCosine(0.1, total=10, warmup=11),
        lambda: WarmupCosine(0.1, total=0),
    ],
)
def test_invalid_arguments_are_user_errors(make):
    with pytest.raises(UserError):
        make()


# -- make_schedule -----------------------------------------------------------------------------


def test_make_schedule_every_name():
    spe, epochs, base = 10, 6, 0.1  # 60 steps in all
    built = {name: make_schedule(name, base, spe, epochs) for name in SCHEDULES}
    assert set(built) == {"constant", "step", "exponential", "inverse_time", "linear", "cosine",
                          "triangular", "slanted", "plateau"}
    assert built["constant"] == base and isinstance(built["constant"], float)
    assert built["plateau"] == base and isinstance(built["plateau"], float)

    step = built["step"]
    assert isinstance(step, StepDecay) and step.every == 20 and step.factor == 0.1
    assert lr(step, 20) == pytest.approx(0.01, rel=1e-5)

    exp = built["exponential"]
    assert isinstance(exp, ExponentialDecay) and exp.decay_steps == spe and exp.rate == 0.96
    assert lr(exp, spe) == pytest.approx(base * 0.96, rel=1e-5)

    inv = built["inverse_time"]
    assert isinstance(inv, InverseTimeDecay) and inv.decay == 1e-6

    lin = built["linear"]
    assert isinstance(lin, LinearDecay) and lin.tau == 60
    assert lr(lin, 60) == pytest.approx(0.01 * base, rel=1e-5)

    cos = built["cosine"]
    assert isinstance(cos, WarmupCosine) and cos.total == 60 and cos.warmup == 3
    assert lr(cos, 3) == pytest.approx(base, rel=1e-5)
    assert lr(cos, 60) == pytest.approx(0.0, abs=1e-7)

    tri = built["triangular"]  # airbench94's shape: 0.2 -> 1 at 23% -> 0.07
    assert isinstance(tri, Triangular) and tri.total == 60 and tri.rise == 0.23
    assert lr(tri, 0) == pytest.approx(0.2 * base, rel=1e-5)
    assert lr(tri, 60) == pytest.approx(0.07 * base, rel=1e-5)

    stlr = built["slanted"]  # ULMFiT: lr/32 -> lr at 10% -> lr/32
    assert isinstance(stlr, Triangular) and stlr.rise == 0.1
    assert lr(stlr, 0) == pytest.approx(base / 32, rel=1e-5)
    assert lr(stlr, 6) == pytest.approx(base, rel=1e-5)
    assert lr(stlr, 60) == pytest.approx(base / 32, rel=1e-5)


def test_make_schedule_options_override_defaults():
    s = make_schedule("step", 1.0, 10, 10, factor=0.5, every=7)
    assert (s.factor, s.every) == (0.5, 7)
    s = make_schedule("cosine", 1.0, 10, 10, warmup=0, floor=0.2)
    assert lr(s, 0) == pytest.approx(1.0) and lr(s, 100) == pytest.approx(0.2, rel=1e-5)


def test_make_schedule_unknown_name():
    with pytest.raises(UserError, match="unknown schedule 'bogus'"):
        make_schedule("bogus", 0.1, 10, 1)


# -- serialization and use in an optimizer ---------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        StepDecay(0.1, 0.5, 7),
        ExponentialDecay(0.1, 0.9, 13),
        InverseTimeDecay(0.1, 1e-2),
        LinearDecay(0.1, 0.002, 50),
        WarmupCosine(0.1, 100, 10, 0.01),
        Triangular(0.1, 100, 0.2, 0.07, 0.23),
    ],
    ids=lambda s: type(s).__name__,
)
def test_keras_serialization_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    for k in (0, 5, 10, 60, 200):
        assert lr(restored, k) == pytest.approx(lr(schedule, k), rel=1e-6)
    # and inside an optimizer's own config
    opt = keras.optimizers.SGD(learning_rate=schedule)
    opt2 = keras.optimizers.SGD.from_config(opt.get_config())
    assert opt2._learning_rate.get_config() == schedule.get_config()


def test_schedule_drives_optimizer_in_fit():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    schedule = StepDecay(0.05, factor=0.1, every=4)  # 4 steps per epoch: one drop per epoch
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 12
    assert np.isfinite(history.history["loss"]).all()
    # the optimizer's current learning rate is the schedule at k = iterations
    current = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert current == pytest.approx(0.05 * 0.1**3, rel=1e-4)
