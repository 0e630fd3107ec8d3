"""The learning-rate range test (shared/lr_finder.py) and `ksuite lr-find`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import run_module


def _toy_regression(seed=0, n=1024, d=8, batch=128):
    """y = X w + noise, a linear model and plain SGD: the loss is flat at a tiny rate, falls
    at a good one and diverges above ~2 / lambda_max of the batch Hessian."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    y = (x @ rng.standard_normal((d, 1)) + 0.01 * rng.standard_normal((n, 1))).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model, train


def test_schedule_values_at_chosen_steps():
    from keras import ops

    from shared.lr_finder import LRRangeSchedule

    s = LRRangeSchedule(1e-4, 1.0, steps=5)  # x10 per step
    for step, want in [(0, 1e-4), (1, 1e-3), (2, 1e-2), (4, 1.0), (10, 1.0)]:
        assert s.value(step) == pytest.approx(want, rel=1e-9)
        assert float(ops.convert_to_numpy(s(step))) == pytest.approx(want, rel=1e-5)
    assert LRRangeSchedule.from_config(s.get_config()).value(3) == pytest.approx(0.1)


def test_curve_is_flat_then_falls_then_diverges_and_the_suggestion_is_in_the_fall():
    from shared.lr_finder import run_range_test

    model, train = _toy_regression()
    r = run_range_test(model, train, min_lr=1e-6, max_lr=100.0, steps=100)
    lrs, sm = np.array(r.lrs), np.array(r.smoothed)
    assert np.all(np.diff(lrs) > 0) and lrs[0] == pytest.approx(1e-6)
    assert np.all(np.diff(np.log(lrs)) == pytest.approx(math.log(1e8) / 99, rel=1e-4))
    # Flat at tiny rates (the first 20 steps: lr < 1e-4), ...
    flat = sm[:20]
    assert flat.max() / flat.min() < 1.2
    # ... falls well below its start (the raw loss by 10x; the moving average, 50 steps of
    # memory at beta 0.98, lags behind), ...
    i_min = int(np.argmin(sm))
    assert min(r.losses) < 0.1 * flat.min() and sm[i_min] < 0.6 * flat.min()
    # ... and diverges at huge rates: the test stopped itself before the 100 steps.
    assert r.stopped.startswith("diverged") and len(lrs) < 100
    assert r.losses[-1] > 4 * sm[i_min]
    s = r.suggestion
    assert s["rule"] == "steepest" and s["lr"] == s["steepest"]
    k = s["steepest_step"]
    assert 20 <= k <= i_min and sm[k] < sm[0]  # in the falling part
    assert lrs[19] < s["lr"] <= s["lr_at_min"]
    assert s["min_over_10"] == pytest.approx(s["lr_at_min"] / 10)


def test_divergence_stops_early_and_a_non_finite_loss_too():
    from shared.lr_finder import LRFinder, LRRangeSchedule, install_schedule

    model, train = _toy_regression(seed=1)
    schedule = LRRangeSchedule(1.0, 1e6, steps=500)  # diverges from the first steps
    install_schedule(model.optimizer, schedule)
    finder = LRFinder(schedule)
    model.fit(train, epochs=500, callbacks=[finder], shuffle=False, verbose=0)
    r = finder.result()
    assert len(r.losses) < 40
    assert r.stopped.startswith(("diverged", "non-finite"))
    assert all(math.isfinite(v) for v in r.losses)  # a NaN step ends the record, not in it


def test_suggestion_rules_on_a_known_curve():
    from shared.errors import UserError
    from shared.lr_finder import suggest

    lrs = np.logspace(-6, 1, 71)
    x = np.log10(lrs)
    # flat at 2 until 1e-4, falls fastest near 1e-3, minimum near 1e-2, then rises
    curve = 2 - 1.5 / (1 + np.exp(-4 * (x + 3))) + np.where(x > -2, 3 * (x + 2) ** 2, 0)
    s = suggest(lrs, curve)
    assert s["steepest"] == pytest.approx(1e-3, rel=0.2)
    assert s["lr_at_min"] == pytest.approx(1e-2, rel=0.5)
    assert s["min_over_10"] == pytest.approx(s["lr_at_min"] / 10)
    assert suggest(lrs, curve, "min_over_10")["lr"] == s["min_over_10"]
    assert "Smith" in s["rule_text"]
    with pytest.raises(UserError):
        suggest(lrs[:2], curve[:2])


def test_ksuite_lr_find_mnist_writes_plot_and_record(tmp_path, mirror):
    out = tmp_path / "lr"
    proc = run_module("ksuite.cli", "lr-find", "mnist_mlp", "--limit", "2000", "--steps", "60",
                      "--out", out, timeout=300)
    assert "suggested learning rate" in proc.stdout
    assert (out / "lr_find.png").stat().st_size > 1000
    record = json.loads((out / "lr_find.json").read_text())
    assert record["app"] == "mnist_mlp" and record["flags"] == ["--limit", "2000"]
    assert 2 < len(record["lrs"]) <= 60 and len(record["losses"]) == len(record["lrs"])
    s = record["suggestion"]
    assert 1e-7 <= s["lr"] <= 10 and s["rule"] in s and s["rule_text"]
    assert f"{s['lr']:.3g}" in proc.stdout
    assert not list(out.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("app", ["dcgan", "dqn"])
def test_lr_find_refuses_apps_without_one_fit_loss(app):
    proc = run_module("ksuite.cli", "lr-find", app, check=False, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"lr-find cannot run {app}: " in errors[0]
    assert "Traceback" not in proc.stderr and not proc.stdout.strip()
