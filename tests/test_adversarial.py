"""Adversarial training (shared/adversarial.py): the perturbation point is the identity outside
the train step; the perturbation is eps sign(g) or eps s g / ||g|| per example, masked steps left
alone; one train step applies exactly alpha g_clean + (1 - alpha) g_adv (checked against a
hand computation); a masked GRU with an embedding trains with it; the flag reaches the apps that
have a point and is refused by the others; the exported MNIST model is the plain one."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared.adversarial import (POINT, AdversarialModel, PerturbationPoint, direction,
                                make_adversarial)
from shared.errors import UserError
from tests.helpers import run_module


def dense_net(point: bool = True) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    x = PerturbationPoint()(inputs) if point else inputs
    x = keras.layers.Dense(4, activation="tanh", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))


X = np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.1], [0.0, 0.4, -1.2]], "float32")
Y = np.array([0, 1, 1, 0], "int32")


def test_point_is_the_identity_and_the_wrapper_shares_the_weights():
    plain = dense_net()
    adversarial = make_adversarial(plain, 0.3, "sign")
    assert isinstance(adversarial, AdversarialModel)
    assert [id(v) for v in adversarial.weights] == [id(v) for v in plain.weights]
    np.testing.assert_array_equal(adversarial.predict(X, verbose=0), plain.predict(X, verbose=0))
    np.testing.assert_array_equal(plain.get_layer(POINT)(X), X)


def test_a_model_without_a_point_is_refused():
    with pytest.raises(UserError, match="no perturbation point"):
        make_adversarial(dense_net(point=False), 0.1, "sign")
    with pytest.raises(ValueError, match="norm"):
        make_adversarial(dense_net(), 0.1, "l1")


def test_sign_perturbation_is_eps_times_the_sign():
    g = tf.constant([[0.2, -3.0, 0.0], [-1e-6, 5.0, 2.0]])
    r = direction(g, tf.zeros_like(g), None, 0.25, "sign").numpy()
    np.testing.assert_array_equal(r, [[0.25, -0.25, 0.0], [-0.25, 0.25, 0.25]])


def test_l2_perturbation_has_length_eps_times_the_spread_and_skips_padding():
    rng = np.random.default_rng(0)
    value = rng.normal(0.0, 2.0, (2, 3, 4)).astype("float32")
    mask = np.array([[True, True, False], [True, False, False]])
    value[~mask] = 100.0  # padded steps' values must not count in the spread
    g = rng.normal(size=(2, 3, 4)).astype("float32")
    g[~mask] = 0.0  # a masked step carries no gradient
    r = direction(tf.constant(g), tf.constant(value), tf.constant(mask), 5.0, "l2").numpy()
    kept = value[mask]  # [3 positions, 4 dims]
    s = np.sqrt(np.mean(kept.var(axis=0)))
    np.testing.assert_allclose(np.linalg.norm(r.reshape(2, -1), axis=1), [5.0 * s] * 2,
                               rtol=1e-5)
    np.testing.assert_array_equal(r[~mask], 0.0)
    cosine = np.sum(r[0] * g[0]) / np.linalg.norm(r[0]) / np.linalg.norm(g[0])
    assert cosine == pytest.approx(1.0, abs=1e-6)  # along the gradient
    # Under a mixed policy the point's gradient and value are 16-bit: the step is the same
    # float32 computation on their values.
    low = direction(tf.constant(g, tf.bfloat16), tf.constant(value, tf.bfloat16),
                    tf.constant(mask), 5.0, "l2").numpy()
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, r, rtol=0.05, atol=1e-3)


def test_one_step_applies_the_mixed_gradient_of_the_hand_computation():
    eps, lr, alpha = 0.2, 0.1, 0.5
    reference = dense_net()
    start = [v.numpy() for v in reference.trainable_weights]
    loss = keras.losses.SparseCategoricalCrossentropy()

    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        clean = loss(Y, reference(x, training=True))
    g_x, *g_clean = tape.gradient(clean, [x, *reference.trainable_weights])
    x_adv = x + eps * tf.sign(g_x)
    with tf.GradientTape() as tape:
        adv = loss(Y, reference(x_adv, training=True))
    g_adv = tape.gradient(adv, reference.trainable_weights)
    expected = [w - lr * (alpha * a + (1 - alpha) * b).numpy()
                for w, a, b in zip(start, g_clean, g_adv)]

    model = make_adversarial(dense_net(), eps, "sign")
    for v, w in zip(model.trainable_weights, start):
        np.testing.assert_array_equal(v.numpy(), w)  # the same start
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
    logs = model.train_on_batch(X, Y, return_dict=True)
    for v, w in zip(model.trainable_weights, expected):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-6)
    assert logs["loss"] == pytest.approx(float(clean), rel=1e-5)
    assert logs["adversarial_loss"] == pytest.approx(float(adv), rel=1e-5)
    assert logs["adversarial_loss"] > logs["loss"]  # the perturbation does raise the loss


def test_a_masked_gru_on_embeddings_learns_with_l2_perturbations():
    """Miyato et al.'s setting in miniature: padded id sequences, the point after the embedding,
    the embedding's sparse gradients mixed. The class is whether token 3 occurs."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 30, (256, 12))
    ids[:, 8:] = 0  # padding
    y = (rng.random(256) < 0.5).astype("int32")
    ids[y == 1, rng.integers(0, 8, int(y.sum()))] = 3
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(30, 8, mask_zero=True)(inputs)
    x = PerturbationPoint()(x)
    x = keras.layers.GRU(8)(x)
    model = make_adversarial(keras.Model(inputs, keras.layers.Dense(1, "sigmoid")(x)),
                             1.0, "l2")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(ids, y, batch_size=32, epochs=6, verbose=0,
                        validation_data=(ids[:64], y[:64])).history
    assert "val_adversarial_loss" not in history  # evaluation is clean
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    assert all(a >= c for a, c in zip(history["adversarial_loss"], history["loss"]))


def test_the_flag_takes_zero_as_off_and_refuses_a_negative_size(capsys):
    from apps.mnist_mlp.train import APP

    assert APP.parse(["--adversarial", "0"]).adversarial == 0.0
    with pytest.raises(SystemExit):
        APP.parse(["--adversarial", "-1"])
    assert "must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("app", ["dqn", "word2vec", "dcgan"])
def test_apps_without_a_point_refuse_the_flag(app, capsys):
    import importlib

    with pytest.raises(SystemExit) as exc:
        importlib.import_module(f"apps.{app}.train").APP.parse(["--adversarial", "0.1"])
    assert exc.value.code == 2
    assert "--adversarial" in capsys.readouterr().err


def test_mnist_trains_adversarially_and_exports_the_plain_model(tmp_path, mirror):
    """A short MNIST run with --adversarial 0.25, on two replicas (MirroredStrategy runs the
    train step once per replica): the log has the adversarial loss, the record the flag, and
    the export serves the plain model (the point is the identity there)."""
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    proc = run_module("apps.mnist_mlp.train", "--epochs", "1", "--limit", "1000",
                      "--adversarial", "0.25", "--run-dir", run_dir, "--export-dir", export_dir,
                      "--strategy", "mirrored", "--devices", "2", "--verbose", "0")
    assert "adversarial training: sign perturbations of size 0.25" in proc.stdout
    assert "adversarial_loss" in (run_dir / "history.csv").read_text().splitlines()[0]
    assert json.loads((run_dir / "config.json").read_text())["args"]["adversarial"] == 0.25
    path = next(p for p in export_dir.glob("mnist_mlp/*") if p.is_dir())
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    images = np.zeros((2, 28, 28), np.uint8)
    assert served(images=tf.constant(images))["probabilities"].shape == (2, 10)
