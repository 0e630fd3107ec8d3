"""The course's diagnostics and Algorithm 7.2 in the runner: activation histograms, first-layer
images, and ``--retrain-on-all`` (train + validation for the best step count)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_module


def _events(log_dir):
    """Every (tag, step) in the TensorBoard event files under ``log_dir``."""
    import tensorflow as tf

    found = []
    for path in log_dir.rglob("events.out.tfevents.*"):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            found += [(v.tag, event.step) for v in event.summary.value]
    return found


def test_activation_histograms_write_each_layer_on_the_keras_epochs(tmp_path):
    import keras

    from shared.callbacks import ActivationHistograms

    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(hidden)
    model = keras.Model(inputs, outputs)
    probe = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    callback = ActivationHistograms(probe, tmp_path / "activations", every=2)
    callback.set_model(model)

    values = callback.compute()
    assert {k: v.shape for k, v in values.items()} == {"hidden": (16, 5), "out": (16, 2)}
    np.testing.assert_allclose(values["out"], model(probe).numpy(), rtol=1e-6)
    assert (values["hidden"] >= 0).all()
    for epoch in range(4):  # Keras' TensorBoard writes weight histograms on epochs 0 and 2
        callback.on_epoch_end(epoch)
    callback.on_train_end()
    assert sorted(_events(tmp_path)) == [("activations/hidden", 0), ("activations/hidden", 2),
                                         ("activations/out", 0), ("activations/out", 2)]


def test_histograms_flag_adds_activation_histograms_where_there_is_a_probe(tmp_path):
    from apps.mnist_mlp.train import APP
    from shared.callbacks import ActivationHistograms
    from shared.runs import Run

    run = Run(app="t", args=APP.parse(["--histograms", "3"]), dir=tmp_path, strategy=None)
    (hist,) = [c for c in run.callbacks(probe=([[0.0]], [0]), backup=False)
               if isinstance(c, ActivationHistograms)]
    assert hist.every == 3 and hist.log_dir == str(tmp_path / "tensorboard" / "activations")
    assert not [c for c in run.callbacks(backup=False) if isinstance(c, ActivationHistograms)]
    plain = Run(app="t", args=APP.parse([]), dir=tmp_path, strategy=None)
    assert not [c for c in plain.callbacks(probe=([[0.0]], [0]), backup=False)
                if isinstance(c, ActivationHistograms)]


def test_first_layer_images_of_a_dense_layer_over_an_image_are_its_units(tmp_path):
    import keras

    from apps.mnist_mlp.model import build_mlp
    from shared.plots import first_layer_filters, first_layer_images

    model = build_mlp(hidden=(80, 16), dropout=0.0)
    name, images = first_layer_images(model)
    assert name == "hidden_1" and images.shape == (64, 28, 28)  # at most 64 of the 80 units
    kernel = model.get_layer("hidden_1").kernel.numpy()
    unit = kernel[:, 5].reshape(28, 28)
    np.testing.assert_allclose(images[5], (unit - unit.min()) / (unit.max() - unit.min()),
                               rtol=1e-5, atol=1e-6)
    assert images.min(axis=(1, 2)).max() == 0 and images.max(axis=(1, 2)).min() == 1
    assert first_layer_filters(model, tmp_path / "f.png").is_file()

    conv = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, name="c1"),
                             keras.layers.Flatten(), keras.layers.Dense(2)])
    name, images = first_layer_images(conv)
    assert name == "c1" and images.shape == (8, 3, 3, 3)
    np.testing.assert_allclose(images[2], _unit_scale(conv.get_layer("c1").kernel.numpy()[..., 2]),
                               rtol=1e-5, atol=1e-6)

    # Not images: a first layer over a vector, or a recurrent first layer.
    vector = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    recurrent = keras.Sequential([keras.Input((5, 4)), keras.layers.GRU(3)])
    assert first_layer_images(vector) is None and first_layer_images(recurrent) is None
    assert first_layer_filters(vector, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def _unit_scale(a):
    return (a - a.min()) / (a.max() - a.min())


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, mirror):
    from apps.mnist_mlp.train import APP

    run_dir = tmp_path_factory.mktemp("alg72") / "run"
    record = APP.main(["--epochs", "3", "--limit", "1200", "--val-size", "120",
                       "--batch-size", "100", "--patience", "2", "--retrain-on-all",
                       "--run-dir", str(run_dir), "--no-export", "--verbose", "0"])
    return run_dir, record


def test_retrain_on_all_trains_the_recorded_number_of_steps(retrained):
    """Algorithm 7.2: a new model on train + validation (1,080 + 120 images: 12 steps an epoch)
    for exactly the first pass's best step count i* (11 steps an epoch there)."""
    import pandas as pd

    run_dir, record = retrained
    first = record["early_stopping"]
    stage = record["stages"]["retrain_on_all"]
    assert stage["first_pass"]["best_step"] == first["best_step"] == 11 * first["best_epoch"]
    assert stage["first_pass"]["train_steps_per_epoch"] == 11
    assert stage["steps"] == first["best_step"]
    history = pd.read_csv(run_dir / "retrain_on_all" / "history.csv")
    assert len(history) == -(-first["best_step"] // 12) == stage["epochs_run"]
    held_out = [c for c in history.columns if c.startswith("val_")]  # CSVLogger adds them
    assert "loss" in history and history[held_out].isna().all().all()  # nothing held out
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["stages"]["retrain_on_all"]["algorithm"] == "Goodfellow et al. Algorithm 7.2"
    assert 0.7 < saved["metrics"]["accuracy"] <= 1  # the retrained model is what is evaluated
    # The first pass's marker is gone once the stage is done; the images are drawn.
    assert not (run_dir / "retrain_on_all" / "checkpoints").exists()
    assert (run_dir / "first_layer.png").is_file()


def test_retrain_on_all_resumes_after_its_first_pass(tmp_path, mirror):
    """A run killed during the retraining resumes there: the first pass is not repeated."""
    from apps.mnist_mlp.train import APP

    marker = tmp_path / "retrain_on_all" / "checkpoints" / "first_pass.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"monitor": "val_accuracy", "best_value": 0.9, "best_epoch": 1,
                                  "best_step": 7, "stopped_epoch": 0,
                                  "train_steps_per_epoch": 11}))
    record = APP.main(["--epochs", "3", "--limit", "1200", "--val-size", "120",
                       "--batch-size", "100", "--retrain-on-all",
                       "--run-dir", str(tmp_path), "--no-export", "--verbose", "0"])
    assert not (tmp_path / "history.csv").exists()  # no first pass
    assert record["stages"]["retrain_on_all"]["steps"] == 7
    assert not marker.exists()


@pytest.mark.parametrize("app, flags, message", [
    ("shakespeare_lstm", [], "shakespeare_lstm has no validation split to retrain on"),
    ("mnist_mlp", ["--val-size", "100", "--schedule", "plateau"],
     "needs a schedule fixed in steps"),
    ("cifar_cnn", ["--model", "vgg16"], "--retrain-on-all retrains the scratch CNN"),
])
def test_retrain_on_all_refusals_are_one_line(app, flags, message):
    proc = run_module(f"apps.{app}.train", "--retrain-on-all", *flags, check=False, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
