"""Training callbacks: exact early-stopping procedure (Goodfellow Algorithm 7.1), plateau rule,
NaN termination, logging callbacks, the dead-ReLU and gradient-norm probes, and atomic
backup-and-restore of an interrupted fit."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from shared.callbacks import (
    AtomicBackupAndRestore,
    DeadReLUMonitor,
    DivideOnPlateau,
    EarlyStopping,
    GradientNormMonitor,
    LearningRateLogger,
    PolyakWeights,
    TerminateOnNaN,
    Throughput,
)
from shared.schedules import StepDecay

STEPS_PER_EPOCH = 3


def tiny_model(inputs=2, lr=0.1):
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return model


def epoch_weights(model, epoch):
    """Distinct, recognisable parameters for each epoch."""
    return [np.full(w.shape, 10.0 * (epoch + 1) + i, dtype="float32")
            for i, w in enumerate(model.get_weights())]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


class Driver:
    """Calls an EarlyStopping's hooks the way fit() does, one evaluation per epoch."""

    def __init__(self, callback, model, monitor="val_loss"):
        self.cb, self.model, self.monitor = callback, model, monitor
        self.stopped_after = None  # 1-based epoch after which stop_training became True
        self.logs = []

    def begin(self):
        self.model.stop_training = False
        self.cb.set_model(self.model)
        self.cb.on_train_begin()

    def epochs(self, values, start=0):
        for epoch, value in enumerate(values, start=start):
            self.model.set_weights(epoch_weights(self.model, epoch))
            for batch in range(STEPS_PER_EPOCH):
                self.cb.on_train_batch_end(batch, {"loss": 1.0})
            logs = {self.monitor: value}
            assert not self.model.stop_training, f"stopped before epoch {epoch + 1}"
            self.cb.on_epoch_end(epoch, logs)
            self.logs.append(logs)
            if self.model.stop_training:
                self.stopped_after = epoch + 1
                return

    def end(self):
        self.cb.on_train_end()


# -- EarlyStopping: the procedure, driven by hand ----------------------------------------------


def test_early_stopping_stops_after_exactly_patience_bad_epochs():
    model = tiny_model()
    es = EarlyStopping(patience=3, verbose=0)
    d = Driver(es, model)
    d.begin()
    #        ep1  ep2   ep3  ep4   ep5   (ep6 never runs)
    values = [1.0, 0.8, 0.9, 0.85, 0.81, 0.1]
    d.epochs(values[:4])
    assert d.stopped_after is None and es.wait == 2  # two bad epochs: not yet
    d.epochs(values[4:], start=4)
    assert d.stopped_after == 5  # the third bad epoch in a row
    assert len(d.logs) == 5
    assert es.stopped_epoch == 5
    assert es.best_epoch == 2
    assert es.best_step == 2 * STEPS_PER_EPOCH
    assert es.best_value == pytest.approx(0.8)
    assert [lg["best_epoch"] for lg in d.logs] == [1, 2, 2, 2, 2]
    d.end()
    assert same_weights(model.get_weights(), epoch_weights(model, 1))  # theta* of epoch 2
    assert es.summary() == {"monitor": "val_loss", "best_value": pytest.approx(0.8),
                            "best_epoch": 2, "best_step": 6, "stopped_epoch": 5}


def test_early_stopping_improvement_resets_the_counter():
    model = tiny_model()
    es = EarlyStopping(patience=2, verbose=0)
    d = Driver(es, model)
    d.begin()
    d.epochs([1.0, 1.1, 0.9, 1.0, 0.95, 0.3])  # j: 0 1 0 1 2 -> stops at epoch 5
    assert d.stopped_after == 5
    assert (es.best_epoch, es.best_step) == (3, 9)
    d.end()
    assert same_weights(model.get_weights(), epoch_weights(model, 2))


def test_early_stopping_restores_when_epochs_run_out():
    model = tiny_model()
    es = EarlyStopping(patience=5, verbose=0)
    d = Driver(es, model)
    d.begin()
    d.epochs([1.0, 0.5, 0.6, 0.7])
    assert d.stopped_after is None and es.stopped_epoch == 0 and es.wait == 2
    d.end()
    assert es.best_epoch == 2
    assert same_weights(model.get_weights(), epoch_weights(model, 1))


def test_early_stopping_without_restore_keeps_last_weights():
    model = tiny_model()
    es = EarlyStopping(patience=5, restore_best=False, verbose=0)
    d = Driver(es, model)
    d.begin()
    d.epochs([1.0, 0.5, 0.6])
    d.end()
    assert es.best_epoch == 2
    assert same_weights(model.get_weights(), epoch_weights(model, 2))


def test_early_stopping_mode_max_for_accuracy():
    model = tiny_model()
    es = EarlyStopping(monitor="val_accuracy", patience=2, verbose=0)
    assert es.mode == "max"
    d = Driver(es, model, monitor="val_accuracy")
    d.begin()
    d.epochs([0.5, 0.7, 0.6, 0.65, 0.99])
    assert d.stopped_after == 4
    assert es.best_epoch == 2 and es.best_value == pytest.approx(0.7)
    d.end()
    assert same_weights(model.get_weights(), epoch_weights(model, 1))


def test_early_stopping_explicit_mode_and_auto_min():
    assert EarlyStopping(monitor="val_loss").mode == "min"
    assert EarlyStopping(monitor="episode_return").mode == "max"
    assert EarlyStopping(monitor="val_accuracy", mode="min").mode == "min"
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError):
        EarlyStopping(mode="sideways")


def test_early_stopping_min_delta():
    model = tiny_model()
    es = EarlyStopping(patience=3, min_delta=0.1, verbose=0)
    d = Driver(es, model)
    d.begin()
    # 0.95, 0.92 are not better than 1.0 by more than 0.1; 0.85 is; then 0.80, 0.78, 0.77 are
    # not better than 0.85 by more than 0.1.
    d.epochs([1.0, 0.95, 0.92, 0.85, 0.80, 0.78, 0.77, 0.1])
    assert d.stopped_after == 7
    assert es.best_epoch == 4 and es.best_value == pytest.approx(0.85)
    d.end()
    assert same_weights(model.get_weights(), epoch_weights(model, 3))


def test_early_stopping_missing_monitor_is_a_clear_error():
    model = tiny_model()
    es = EarlyStopping(verbose=0)
    es.set_model(model)
    es.on_train_begin()
    with pytest.raises(KeyError, match="val_loss"):
        es.on_epoch_end(0, {"loss": 1.0})


def test_early_stopping_state_dir_resumes_the_same_procedure(tmp_path):
    state_dir = tmp_path / "es_state"
    model = tiny_model()
    first = EarlyStopping(patience=3, state_dir=state_dir, verbose=0)
    d = Driver(first, model)
    d.begin()
    d.epochs([1.0, 0.8, 0.9])  # best: epoch 2; j = 1 -- then the process is "killed"
    assert sorted(p.name for p in state_dir.iterdir()) == ["best.npz", "state.json"]
    saved = json.loads((state_dir / "state.json").read_text())
    assert saved["best_epoch"] == 2 and saved["wait"] == 1 and saved["best_step"] == 6
    assert saved["best_value"] == pytest.approx(0.8)

    # A new process: a new model (other weights) and a new callback on the same state_dir.
    model2 = tiny_model()
    model2.set_weights(epoch_weights(model2, 99))
    second = EarlyStopping(patience=3, state_dir=state_dir, verbose=0)
    d2 = Driver(second, model2)
    d2.begin()
    assert second.best_value == pytest.approx(first.best_value)
    assert (second.best_epoch, second.best_step, second.wait) == (2, 6, 1)
    assert same_weights(second.best_weights, epoch_weights(model, 1))
    d2.epochs([0.95, 0.9, 0.0], start=3)  # j: 2, 3 -> stops after epoch 5, not 6
    assert d2.stopped_after == 5 and second.stopped_epoch == 5
    assert state_dir.exists()
    d2.end()
    assert same_weights(model2.get_weights(), epoch_weights(model2, 1))
    assert not state_dir.exists()


def test_early_stopping_state_dir_tracks_new_best(tmp_path):
    state_dir = tmp_path / "es_state"
    model = tiny_model()
    es = EarlyStopping(patience=3, state_dir=state_dir, verbose=0)
    d = Driver(es, model)
    d.begin()
    d.epochs([1.0, 0.9, 0.95, 0.5])
    with np.load(state_dir / "best.npz") as f:
        stored = [f[f"arr_{i}"] for i in range(len(f.files))]
    assert same_weights(stored, epoch_weights(model, 3))
    assert not [p for p in state_dir.iterdir() if "tmp" in p.name]


# -- EarlyStopping inside a real fit --------------------------------------------------------


def diverging_data():
    """A linear relation to train on, and validation data where learning it makes things worse
    (so the best epoch is the first); the seed is set for the model built next."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    w_true = np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    x = rng.normal(size=(64, 3)).astype("float32")
    x_val = rng.normal(size=(32, 3)).astype("float32")
    return x, x @ w_true, x_val, -(x_val @ w_true)


def test_early_stopping_in_fit_stops_and_restores_best():
    x, y, x_val, y_val = diverging_data()
    model = tiny_model(inputs=3, lr=0.05)
    per_epoch = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: per_epoch.append(
            [np.array(w) for w in model.get_weights()]))
    es = EarlyStopping(patience=2, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=30, validation_data=(x_val, y_val),
                        callbacks=[record, es], verbose=0)
    val = history.history["val_loss"]
    assert len(val) == 3  # best is epoch 1, then 2 bad epochs
    assert val[1] > val[0] and val[2] > val[0]
    assert (es.best_epoch, es.best_step, es.stopped_epoch) == (1, 4, 3)
    assert history.history["best_epoch"] == [1, 1, 1]
    assert same_weights(model.get_weights(), per_epoch[0])
    assert model.evaluate(x_val, y_val, verbose=0) == pytest.approx(val[0], rel=1e-5)


def test_polyak_weights_are_validated_kept_and_restored():
    """With use_ema, validation scores the moving average, and the weights the run ends on are
    the average at the best epoch (bare EarlyStopping would restore the trained weights)."""
    x, y, x_val, y_val = diverging_data()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(learning_rate=0.05, use_ema=True, ema_momentum=0.5)
    model.compile(optimizer=optimizer, loss="mse")
    trained, averaged = [], []

    def snapshot(epoch, logs):
        trained.append([np.array(w) for w in model.get_weights()])
        averaged.append([keras.ops.convert_to_numpy(a)
                         for a in optimizer._model_variables_moving_average])

    polyak, es = PolyakWeights(), EarlyStopping(patience=2, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=30, validation_data=(x_val, y_val),
                        callbacks=[polyak, es, polyak.after,
                                   keras.callbacks.LambdaCallback(on_epoch_end=snapshot)],
                        verbose=0)
    val = history.history["val_loss"]
    assert len(val) == 3 and es.best_epoch == 1
    assert not polyak.swapped
    # Between epochs the model trains on its own weights; the average differs from them.
    assert not same_weights(trained[0], averaged[0])
    final = model.get_weights()
    assert same_weights(final, averaged[0])  # the best epoch's average, not its trained weights
    for epoch, average in enumerate(averaged):  # every epoch's val_loss is the average's
        model.set_weights(average)
        assert model.evaluate(x_val, y_val, verbose=0) == pytest.approx(val[epoch], rel=1e-5)


def test_polyak_weights_surround_early_stopping_in_the_run_callbacks(tmp_path):
    from apps.shakespeare_lstm.train import APP
    from shared.runs import Run

    args = APP.parse(["--ema", "0.99", "--run-dir", str(tmp_path)])
    callbacks = Run(app="t", args=args, dir=tmp_path, strategy=None).callbacks(backup=False)
    (polyak,) = [c for c in callbacks if isinstance(c, PolyakWeights)]
    (es,) = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert callbacks.index(polyak) < callbacks.index(es) < callbacks.index(polyak.after)
    plain = Run(app="t", args=APP.parse([]), dir=tmp_path, strategy=None)
    assert not any(isinstance(c, PolyakWeights) for c in plain.callbacks(backup=False))


# -- DivideOnPlateau ---------------------------------------------------------------------------


def current_lr(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def test_divide_on_plateau_divides_by_ten_after_patience():
    model = tiny_model(lr=0.1)
    cb = DivideOnPlateau(patience=3, verbose=0)
    cb.set_model(model)
    values = [1.0, 1.0, 1.2, 1.1]  # improve, then 3 epochs without improvement
    for epoch, v in enumerate(values[:3]):
        cb.on_epoch_end(epoch, {"val_loss": v})
        assert current_lr(model) == pytest.approx(0.1)
    cb.on_epoch_end(3, {"val_loss": values[3]})
    assert current_lr(model) == pytest.approx(0.01)
    # the counter starts again: two more bad epochs change nothing, the third divides again
    cb.on_epoch_end(4, {"val_loss": 1.0})
    cb.on_epoch_end(5, {"val_loss": 1.0})
    assert current_lr(model) == pytest.approx(0.01)
    cb.on_epoch_end(6, {"val_loss": 1.0})
    assert current_lr(model) == pytest.approx(0.001)
    # an improvement resets the counter
    cb.on_epoch_end(7, {"val_loss": 0.5})
    cb.on_epoch_end(8, {"val_loss": 0.6})
    cb.on_epoch_end(9, {"val_loss": 0.6})
    assert current_lr(model) == pytest.approx(0.001)


def test_divide_on_plateau_min_lr_and_max_mode():
    model = tiny_model(lr=0.1)
    cb = DivideOnPlateau(monitor="val_accuracy", patience=1, min_lr=0.005, verbose=0)
    assert cb.mode == "max"
    cb.set_model(model)
    for epoch, v in enumerate([0.5, 0.4, 0.4, 0.4, 0.4]):
        cb.on_epoch_end(epoch, {"val_accuracy": v})
    assert current_lr(model) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        DivideOnPlateau(factor=10)


# -- TerminateOnNaN -----------------------------------------------------------------------------


def test_terminate_on_nan_in_fit():
    x = np.ones((32, 2), dtype="float32")
    x[0, 0] = np.nan  # the first batch has a NaN
    y = np.ones((32, 1), dtype="float32")
    model = tiny_model()
    batches = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    cb = TerminateOnNaN()
    history = model.fit(x, y, batch_size=8, epochs=5, shuffle=False, callbacks=[count, cb],
                        verbose=0)
    assert cb.terminated_at == 0
    assert batches == [0]
    assert len(history.history["loss"]) == 1
    assert math.isnan(history.history["loss"][0])


def test_terminate_on_nan_leaves_finite_training_alone():
    model = tiny_model()
    cb = TerminateOnNaN()
    x = np.ones((16, 2), dtype="float32")
    history = model.fit(x, x[:, :1], batch_size=8, epochs=2, callbacks=[cb], verbose=0)
    assert cb.terminated_at is None and len(history.history["loss"]) == 2


# -- LearningRateLogger and Throughput ----------------------------------------------------------


def test_learning_rate_logger_and_throughput_in_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = x[:, :1]
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(StepDecay(0.1, factor=0.5, every=4)),
                  loss="mse")
    tp = Throughput(examples_per_step=16)
    history = model.fit(x, y, batch_size=16, epochs=3, validation_data=(x[:16], y[:16]),
                        callbacks=[LearningRateLogger(), tp], verbose=0)
    # 4 steps per epoch: the logged rate is the schedule at k = 4, 8, 12
    assert history.history["lr"] == pytest.approx([0.05, 0.025, 0.0125])
    rates = history.history["examples_per_sec"]
    assert len(rates) == 3 and all(r > 0 and math.isfinite(r) for r in rates)
    assert tp.history == pytest.approx(rates)
    assert all(s > 0 for s in history.history["epoch_seconds"])
    assert tp._steps == 4
    # training phase only: rate * training seconds = 64 examples, and training < whole epoch
    for r, s in zip(rates, history.history["epoch_seconds"]):
        assert 64 / r <= s


# -- DeadReLUMonitor ----------------------------------------------------------------------------


def dead_relu_sequential():
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(4, activation="relu", name="h1"),
        keras.layers.Dense(3, activation="relu", name="h2"),
        keras.layers.Dense(1, name="out"),
    ])
    # h1 = relu(x + b1): units 0 and 1 have bias -100 (dead for x in [0, 1)), 2 and 3 are alive
    model.get_layer("h1").set_weights([np.eye(4, dtype="float32"),
                                       np.array([-100, -100, 0.5, 0.5], dtype="float32")])
    # h2 = relu(0 * h1 + b2): units 0 and 2 output relu(-1) = 0 always, unit 1 outputs 1
    model.get_layer("h2").set_weights([np.zeros((4, 3), dtype="float32"),
                                       np.array([-1, 1, -1], dtype="float32")])
    return model


def test_dead_relu_fraction_exact():
    probe = np.random.default_rng(0).uniform(0, 1, size=(20, 4)).astype("float32")
    model = dead_relu_sequential()
    cb = DeadReLUMonitor(probe)
    cb.set_model(model)
    assert cb.compute() == pytest.approx(4 / 7)
    assert cb.per_layer == {"h1": pytest.approx(0.5), "h2": pytest.approx(2 / 3)}
    logs = {}
    cb.on_epoch_end(0, logs)
    assert logs["dead_relu_fraction"] == pytest.approx(4 / 7)


def test_dead_relu_functional_model_with_relu_layer():
    inp = keras.Input((3,))
    h = keras.layers.Dense(3, name="lin")(inp)
    h = keras.layers.ReLU(name="act")(h)
    out = keras.layers.Dense(1)(h)
    model = keras.Model(inp, out)
    model.get_layer("lin").set_weights([np.eye(3, dtype="float32"),
                                        np.array([-5, 0.1, -5], dtype="float32")])
    probe = np.random.default_rng(1).uniform(0, 1, size=(10, 3)).astype("float32")
    cb = DeadReLUMonitor(probe)
    cb.set_model(model)
    assert cb.compute() == pytest.approx(2 / 3)
    assert cb.per_layer == {"act": pytest.approx(2 / 3)}


def test_dead_relu_no_relu_layers_is_nan():
    cb = DeadReLUMonitor(np.zeros((2, 2), dtype="float32"))
    cb.set_model(tiny_model())
    assert math.isnan(cb.compute())


# -- GradientNormMonitor ------------------------------------------------------------------------


def test_gradient_norm_equals_manual_norm():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    w = np.array([[0.5], [-1.0], [2.0]], dtype="float32")
    b = np.array([0.25], dtype="float32")
    model = tiny_model(inputs=3)
    model.set_weights([w, b])
    # L = mean((xw + b - y)^2): dL/dw = 2/N x^T r, dL/db = 2/N sum(r)
    r = (x.astype("float64") @ w + b - y).ravel()
    gw = 2.0 / len(x) * x.T.astype("float64") @ r
    gb = 2.0 / len(x) * r.sum()
    expected = math.sqrt(float(np.sum(gw**2) + gb**2))
    cb = GradientNormMonitor(x, y)
    cb.set_model(model)
    assert cb.compute() == pytest.approx(expected, rel=1e-5)
    logs = {}
    cb.on_epoch_end(0, logs)
    assert logs["grad_norm"] == pytest.approx(expected, rel=1e-5)
    # every=2: nothing on odd epochs
    cb2 = GradientNormMonitor(x, y, every=2)
    cb2.set_model(model)
    logs = {}
    cb2.on_epoch_end(1, logs)
    assert "grad_norm" not in logs
    # New weights are read by the traced graph; a frozen bias leaves the set, so only dL/dw.
    model.set_weights([2 * w, b])
    r2 = (x.astype("float64") @ (2 * w) + b - y).ravel()
    gw2 = 2.0 / len(x) * x.T.astype("float64") @ r2
    gb2 = 2.0 / len(x) * r2.sum()
    assert cb.compute() == pytest.approx(math.sqrt(float(np.sum(gw2**2) + gb2**2)), rel=1e-5)
    model.layers[-1].bias.trainable = False
    assert cb.compute() == pytest.approx(math.sqrt(float(np.sum(gw2**2))), rel=1e-5)


# -- AtomicBackupAndRestore -------------------------------------------------------------------


class Kill(keras.callbacks.Callback):
    """Raise when epoch ``at`` (0-based) begins, as a killed process would stop there."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("simulated kill")


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.weights = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def backup_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 2)).astype("float32")
    return x, x @ np.array([[1.0], [2.0]], dtype="float32")


def test_atomic_backup_resumes_an_interrupted_fit(tmp_path):
    backup = tmp_path / "backup"
    x, y = backup_data()
    keras.utils.set_random_seed(0)
    model = tiny_model()
    rec = EpochRecorder()
    with pytest.raises(RuntimeError, match="simulated kill"):
        model.fit(x, y, batch_size=8, epochs=6, verbose=0,
                  callbacks=[AtomicBackupAndRestore(str(backup)), rec, Kill(3)])
    assert rec.epochs == [0, 1, 2, 3]  # epoch 3 began and was killed
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5",
                                                      "training_metadata.json"]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 3

    # A new process: a fresh model, the same backup folder.
    keras.utils.set_random_seed(1)
    model2 = tiny_model()
    cb = AtomicBackupAndRestore(str(backup))
    seen = []
    start = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append([np.array(w) for w in model2.get_weights()]))
    rec2 = EpochRecorder()
    history = model2.fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[cb, start, rec2])
    assert cb.resumed_from_epoch == 3
    assert rec2.epochs == [3, 4, 5]
    assert len(history.history["loss"]) == 3
    assert same_weights(seen[0], rec.weights[2])  # restored the end of epoch 3
    assert not backup.exists()  # removed when the fit completed


def test_polyak_weights_resume_to_the_same_end(tmp_path):
    """A killed --ema run resumes from trained weights with the average in the optimizer, and
    ends on the same averaged weights as a run that was never killed."""
    x, y = backup_data()
    x_val, y_val = x[:8] * 1.5, y[:8] * 1.5

    def fit(tag, extra=()):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.7),
                      loss="mse")
        polyak = PolyakWeights()
        es = EarlyStopping(patience=10, verbose=0, state_dir=tmp_path / tag / "es")
        model.fit(x, y, batch_size=8, epochs=6, verbose=0, shuffle=False,
                  validation_data=(x_val, y_val),
                  callbacks=[polyak, es, polyak.after,
                             AtomicBackupAndRestore(str(tmp_path / tag / "backup")), *extra])
        return model.get_weights()

    whole = fit("whole")
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit("killed", [Kill(3)])
    resumed = fit("killed")
    assert all(np.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(whole, resumed))


def test_atomic_backup_leaves_no_tmp_files_and_fresh_fit_starts_at_zero(tmp_path):
    backup = tmp_path / "backup"
    x, y = backup_data()
    model = tiny_model()
    files_after_epoch = []
    peek = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: files_after_epoch.append(sorted(p.name for p in
                                                                     backup.iterdir())))
    cb = AtomicBackupAndRestore(str(backup))
    with pytest.raises(RuntimeError):
        model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[cb, peek, Kill(2)])
    assert cb.resumed_from_epoch == 0
    assert files_after_epoch == [["latest.weights.h5", "training_metadata.json"]] * 2
    # resume on the same model object, then fit it again from scratch with a new backup folder
    cb2 = AtomicBackupAndRestore(str(backup))
    rec = EpochRecorder()
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[cb2, rec])
    assert cb2.resumed_from_epoch == 2 and rec.epochs == [2, 3, 4]
    cb3 = AtomicBackupAndRestore(str(tmp_path / "other"))
    rec3 = EpochRecorder()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cb3, rec3])
    assert cb3.resumed_from_epoch == 0 and rec3.epochs == [0, 1, 2]
    assert not any(p.name.endswith(".tmp") or ".tmp." in p.name for p in tmp_path.rglob("*"))


def test_atomic_backup_non_chief_writes_nothing(tmp_path):
    backup = tmp_path / "backup"
    x, y = backup_data()
    model = tiny_model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[AtomicBackupAndRestore(str(backup), is_chief=False)])
    assert not backup.exists()


def test_early_stopping_state_survives_an_interrupted_fit(tmp_path):
    """EarlyStopping(state_dir) + AtomicBackupAndRestore: the resumed run continues the same
    Algorithm 7.1 (same best, same counter) and restores the first run's best parameters."""
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    w_true = np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    x = rng.normal(size=(64, 3)).astype("float32")
    x_val = rng.normal(size=(32, 3)).astype("float32")
    data = dict(x=x, y=x @ w_true, validation_data=(x_val, -(x_val @ w_true)), batch_size=16,
                epochs=30, verbose=0)
    backup, state = tmp_path / "backup", tmp_path / "es"
    model = tiny_model(inputs=3, lr=0.05)
    rec = EpochRecorder()
    es = EarlyStopping(patience=4, state_dir=state, verbose=0)
    with pytest.raises(RuntimeError):
        model.fit(**data, callbacks=[AtomicBackupAndRestore(str(backup)), es, rec, Kill(2)])
    assert (es.best_epoch, es.wait) == (1, 1)
    assert state.is_dir()

    model2 = tiny_model(inputs=3, lr=0.05)
    es2 = EarlyStopping(patience=4, state_dir=state, verbose=0)
    rec2 = EpochRecorder()
    history = model2.fit(**data, callbacks=[AtomicBackupAndRestore(str(backup)), es2, rec2])
    assert rec2.epochs == [2, 3, 4]  # epochs 3, 4, 5 are bad: j = 2, 3, 4 = patience
    assert len(history.history["val_loss"]) == 3
    assert (es2.best_epoch, es2.best_step, es2.stopped_epoch) == (1, 4, 5)
    assert same_weights(model2.get_weights(), rec.weights[0])
    assert not state.exists() and not backup.exists()


def test_curvature_along_the_gradient_is_exact_for_least_squares():
    """For L(w) = mean((Xw - y)^2): g = 2/n X'(Xw - y), H = 2/n X'X, so g'Hg and the step
    g'g / g'Hg are known in closed form (Goodfellow et al. §4.3.1)."""
    import keras
    import numpy as np

    from shared.callbacks import GradientNormMonitor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile("sgd", "mse")
    w = model.get_weights()[0].astype("float64")
    n = len(x)
    g = 2 / n * x.T.astype("float64") @ (x.astype("float64") @ w - y)
    hessian = 2 / n * x.T.astype("float64") @ x.astype("float64")
    monitor = GradientNormMonitor(x, y, curvature=True)
    monitor.set_model(model)
    ghg, gg = monitor.compute_curvature()
    exact_ghg, exact_gg = (g.T @ hessian @ g).item(), (g.T @ g).item()
    np.testing.assert_allclose(ghg, exact_ghg, rtol=1e-4)
    np.testing.assert_allclose(gg, exact_gg, rtol=1e-4)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert set(logs) == {"grad_norm", "grad_curvature", "curvature_step"}
    np.testing.assert_allclose(logs["curvature_step"], exact_gg / exact_ghg, rtol=1e-4)


def test_histograms_and_curvature_flags_reach_the_run_callbacks(tmp_path):
    import keras

    from apps.mnist_mlp.train import APP
    from shared.callbacks import GradientNormMonitor
    from shared.runs import Run

    args = APP.parse(["--histograms", "2", "--curvature", "--run-dir", str(tmp_path)])
    run = Run(app="t", args=args, dir=tmp_path, strategy=None)
    callbacks = run.callbacks(probe=([[0.0]], [0]), backup=False)
    (board,) = [c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)]
    assert board.histogram_freq == 2 and board.write_graph
    (monitor,) = [c for c in callbacks if isinstance(c, GradientNormMonitor)]
    assert monitor.curvature
    plain = Run(app="t", args=APP.parse([]), dir=tmp_path, strategy=None)
    (board,) = [c for c in plain.callbacks(backup=False)
                if isinstance(c, keras.callbacks.TensorBoard)]
    assert board.histogram_freq == 0 and not board.write_graph
