"""The MNIST MLP end to end on real data: train a few steps, evaluate, export, reload, compare."""

from __future__ import annotations

import json

import numpy as np
import pytest



@pytest.fixture(scope="module")
def trained(tmp_path_factory, mirror):
    """One short real run shared by the tests below (2 epochs on 3,000 real images, 300 of them
    held out so that early stopping has something to watch)."""
    from apps.mnist_mlp import train

    base = tmp_path_factory.mktemp("mnist")
    record = train.main(["--epochs", "2", "--limit", "3000", "--val-size", "300",
                         "--patience", "5", "--run-dir", str(base / "run"),
                         "--export-dir", str(base / "models"), "--verbose", "0"])
    return base, record


def test_run_directory_has_every_record(trained):
    base, record = trained
    run = base / "run"
    for name in ("config.json", "history.csv", "metrics.json", "learning_curves.png"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert metrics["early_stopping"]["best_epoch"] in (1, 2)
    assert metrics["examples_per_sec"] > 0
    # The backup is removed once training completes; no temporary files are left anywhere.
    assert not (run / "checkpoints" / "backup").exists()
    assert not list(base.rglob("*.tmp*"))
    config = json.loads((run / "config.json").read_text())
    assert config["global_batch_size"] == 100 and config["replicas"] == 1


def test_training_learns(trained):
    import pandas as pd

    base, record = trained
    hist = pd.read_csv(base / "run" / "history.csv")
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    assert record["metrics"]["accuracy"] > 0.8  # 2 epochs on 2,700 images


def test_export_signature_and_outputs_match_keras(trained, mirror):
    """The reloaded SavedModel (what TensorFlow Serving loads) takes raw uint8 images and gives
    the Keras model's probabilities on real test digits."""
    import tensorflow as tf

    from shared.data import load_image_dataset

    base, record = trained
    path = base / "models" / "mnist_mlp" / "1"
    assert record["export"] == str(path)
    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures["serving_default"]
    (spec,) = sig.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]
    assert set(sig.structured_outputs) == {"probabilities", "classes"}

    _, (x_test, y_test) = load_image_dataset("mnist")
    images = x_test[:64]
    out = sig(images=tf.constant(images))
    probs = out["probabilities"].numpy()
    assert probs.shape == (64, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["classes"].numpy(), probs.argmax(axis=1))

    acc = float(np.mean(out["classes"].numpy() == y_test[:64]))
    assert acc > 0.75


def test_exported_outputs_equal_the_keras_model(tmp_path, mirror):
    """Export a trained model in-process and check tf.saved_model.load gives exactly the Keras
    model's outputs on real test images."""
    import tensorflow as tf

    from apps.mnist_mlp.model import build_mlp
    from apps.mnist_mlp.train import APP
    from shared.data import load_image_dataset

    (x_train, y_train), (x_test, _) = load_image_dataset("mnist")
    model = build_mlp(hidden=(64,), dropout=0.0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train[:1000].astype("float32"), y_train[:1000], epochs=1, verbose=0)
    args = APP.parse(["--export-dir", str(tmp_path)])
    path = APP.export(args, model, None, {"accuracy": 0.5}, run=None)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](images=tf.constant(x_test[:100]))
    expected = model.predict(x_test[:100].astype("float32"), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    meta = json.loads((path / "assets.extra" / "ksuite.json").read_text())
    assert meta["metrics"]["accuracy"] == 0.5 and meta["version"] == 1


def test_recipes_choose_their_validation_split(capsys):
    """The dropout recipe trains on all 60,000 images for a fixed 50 epochs (Algorithm 7.2); the
    Keras recipe holds 5,000 out and stops early; --retrain-on-all needs a split to fold back."""
    from apps.mnist_mlp.train import APP

    default = APP.parse([])
    assert (default.val_size, default.patience, default.epochs) == (0, None, 50)
    keras = APP.parse(["--recipe", "keras"])
    assert (keras.val_size, keras.patience) == (5000, 5)
    with pytest.raises(SystemExit):
        APP.parse(["--retrain-on-all"])
    assert "--retrain-on-all needs a validation split" in capsys.readouterr().err
    assert APP.parse(["--retrain-on-all", "--val-size", "5000"]).val_size == 5000


def test_noise_recipe_normalizes_and_perturbs_only_in_training():
    """--recipe noise (Rasmus et al. 2015's supervised baseline): every layer is Dense without a
    bias -> batch norm -> Gaussian noise -> activation; the noise is drawn in training only, so
    inference is deterministic; the recipe carries the reference code's settings."""
    from apps.mnist_mlp.model import build_mlp
    from apps.mnist_mlp.train import APP

    args = APP.parse(["--recipe", "noise"])
    assert args.hidden == [1000, 500, 250, 250, 250]
    assert (args.noise, args.input_noise, args.dropout, args.input_dropout) == (0.5, 0.3, 0, 0)
    assert (args.max_norm, args.batch_size, args.learning_rate) == (None, 100, 2e-3)
    model = build_mlp((32, 16), dropout=0.0, input_noise=0.3, noise=0.5)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("BatchNormalization") == 3 and kinds.count("GaussianNoise") == 4
    assert not any(layer.use_bias for layer in model.layers if type(layer).__name__ == "Dense")
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=True))
    np.testing.assert_allclose(np.sum(model(x, training=False), axis=1), 1.0, atol=1e-5)


def test_negative_noise_is_refused(capsys):
    from apps.mnist_mlp.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--noise", "-0.1", "--epochs", "1"])
    assert exit_info.value.code != 0
    assert "--noise and --input-noise must be >= 0" in capsys.readouterr().err
