"""The CIFAR-10 scratch recipe (airbench94 in Keras): each of its parts exactly, then a tiny run
of the whole recipe on 1,000 images (whitening, the weight average, TTA, the export).

Everything here is small; the recipe's accuracy and speed are benchmarks/'s.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

# ----------------------------------------------------------------------------------- layers


def test_patch_whitening_whitens_the_patches_it_was_fitted_to():
    """The 12 filters map 2x2x3 patches to coordinates with (nearly) identity second moment;
    the other 12 are their negatives; the bias is added after."""
    from apps.cifar_cnn.model import PatchWhitening

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(3, 3))
    x = (rng.normal(size=(64, 8, 8, 3)) @ mix).astype("float32")  # correlated channels
    layer = PatchWhitening(eps=1e-6)
    layer.build((None, 8, 8, 3))
    layer.fit_to(x)
    y = np.asarray(layer(x))
    assert y.shape == (64, 7, 7, 24)
    flat = y[..., :12].reshape(-1, 12)
    np.testing.assert_allclose(flat.T @ flat / len(flat), np.eye(12), atol=1e-3)
    np.testing.assert_allclose(y[..., 12:], -y[..., :12], atol=1e-5)
    # Largest eigenvalue first: the first filter is the patches' dominant direction.
    kernel = np.asarray(layer.kernel).reshape(12, 24)
    assert not layer.kernel.trainable and layer.bias.trainable
    norms = np.linalg.norm(kernel[:, :12], axis=0)
    assert norms[0] == norms.min()  # scaled by 1/sqrt(largest eigenvalue)
    layer.bias.assign(np.arange(24, dtype="float32"))
    np.testing.assert_allclose(np.asarray(layer(x)) - y, np.broadcast_to(np.arange(24), y.shape),
                               atol=1e-4)


def test_whitening_bias_stops_training_after_three_epochs():
    """FreezeWhiteningBias: the bias has a gradient in epochs 0-2, none from epoch 3 on; the
    whitening filters never train."""
    from apps.cifar_cnn.model import FreezeWhiteningBias, PatchWhitening

    inputs = keras.Input((4, 4, 3))
    whiten = PatchWhitening(name="whiten")
    outputs = keras.layers.GlobalAveragePooling2D()(whiten(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(outputs))
    whiten.fit_to(np.random.default_rng(1).normal(size=(8, 4, 4, 3)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    kernel = np.asarray(whiten.kernel).copy()
    biases = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            biases.append(np.asarray(whiten.bias).copy())

    x = np.random.default_rng(2).normal(size=(16, 4, 4, 3)).astype("float32")
    y = np.ones((16, 1), "float32")
    model.fit(x, y, epochs=5, batch_size=8, verbose=0,
              callbacks=[FreezeWhiteningBias(epochs=3), Record()])
    assert not np.allclose(biases[0], 0) and not np.allclose(biases[2], biases[1])
    np.testing.assert_array_equal(biases[3], biases[2])
    np.testing.assert_array_equal(biases[4], biases[2])
    np.testing.assert_array_equal(np.asarray(whiten.kernel), kernel)
    assert int(whiten.bias_trainable.numpy()) == 0


def test_partial_identity_init():
    """The first c_in filters are identities (the centre tap); the rest are U(+-1/sqrt(fan_in))."""
    from apps.cifar_cnn.model import TorchUniformDirac

    w = np.asarray(TorchUniformDirac(seed=0)((3, 3, 4, 6)))
    for i in range(4):
        expected = np.zeros((3, 3, 4))
        expected[1, 1, i] = 1.0
        np.testing.assert_array_equal(w[..., i], expected)
    rest = w[..., 4:]
    assert np.abs(rest).max() <= 1 / np.sqrt(36) and rest.std() > 0.05
    dense = np.asarray(TorchUniformDirac(dirac=False, seed=0)((256, 10)))
    assert np.abs(dense).max() <= 1 / 16 and dense.std() > 0.02


def test_shift_batch_norm_has_no_scale_and_a_64x_shift_step():
    """No gamma; one SGD step moves the output's shift by 64 x lr x its gradient."""
    from apps.cifar_cnn.model import ShiftBatchNorm

    bn = ShiftBatchNorm()
    bn.build((None, 5))
    assert [w.name for w in bn.trainable_weights] == ["shift"]
    assert bn.momentum == 0.6 and bn.epsilon == 1e-12
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    before = np.asarray(bn(x, training=True))
    np.testing.assert_allclose(before.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(before.std(0), 1, atol=1e-3)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.reduce_sum(bn(x, training=True), axis=1))  # d/dshift_out = 1
    (grad,) = tape.gradient(loss, bn.trainable_weights)
    keras.optimizers.SGD(0.01).apply([grad], bn.trainable_weights)
    after = np.asarray(bn(x, training=True))
    np.testing.assert_allclose(after - before, -64 * 0.01, rtol=1e-4)  # downhill
    assert ShiftBatchNorm.from_config(bn.get_config()).shift_lr == 64


def test_smoothed_crossentropy_equals_keras_label_smoothing():
    from apps.cifar_cnn.model import label_smoothing_loss

    rng = np.random.default_rng(0)
    p = keras.ops.softmax(rng.normal(size=(6, 10)).astype("float32"))
    y = rng.integers(0, 10, 6)
    ours = np.asarray(label_smoothing_loss(0.2)(y, p))
    keras_ce = keras.losses.CategoricalCrossentropy(label_smoothing=0.2, reduction=None)
    np.testing.assert_allclose(ours, np.asarray(keras_ce(np.eye(10)[y], p)), rtol=1e-5)
    assert label_smoothing_loss(0.0) == "sparse_categorical_crossentropy"


def test_airbench_network_shapes_and_flops():
    from apps.cifar_cnn import model as M

    model = M.build_airbench_cnn(10, seed=0)
    assert model.get_layer("whiten").output.shape[1:] == (31, 31, 24)
    for name, shape in (("conv1_2", (15, 15, 64)), ("conv2_2", (7, 7, 256)),
                        ("conv3_2", (3, 3, 256))):
        assert model.get_layer(name).output.shape[1:] == shape
    counts = M.count_params(model)
    assert counts["trainable"] == 1_971_352  # convs + linear + BN shifts + whitening bias
    flops = M.flops_per_example(model)
    assert 0.23e9 < flops["forward_flops"] < 0.24e9  # airbench94: ~0.24 GFLOP forward
    assert model.output.dtype == "float32"


# ----------------------------------------------------------------------------------- data, TTA


def test_flip_translate_gives_a_flipped_shifted_copy_of_each_image():
    from apps.cifar_cnn.data import flip_translate

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 8, 8, 3)).astype("float32")
    out = np.asarray(flip_translate(x, pad=2, seed=3))
    assert out.shape == x.shape
    seen = set()
    for img, src in zip(out, x):
        padded = np.pad(src, ((2, 2), (2, 2), (0, 0)), mode="reflect")
        flipped = np.pad(src[:, ::-1], ((2, 2), (2, 2), (0, 0)), mode="reflect")
        found = [(f, dy, dx) for f, p in ((0, padded), (1, flipped))
                 for dy in range(5) for dx in range(5)
                 if np.array_equal(p[dy:dy + 8, dx:dx + 8], img)]
        assert found, "not a flipped/translated copy"
        seen.add(found[0][0])
    assert seen == {0, 1}


def test_tta_views_and_average():
    """Level 2 = the image and its mirror, each also shifted one pixel up-left and down-right
    (weights 1/4, 1/4, 1/8 x 4); the prediction is the softmax of the weighted log-probs."""
    from apps.cifar_cnn.data import tta_views
    from apps.cifar_cnn.model import tta_predict

    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    views, weights = tta_views(x, 2)
    assert len(views) == 6 and sum(weights) == pytest.approx(1.0)
    np.testing.assert_array_equal(np.asarray(views[1]), x[:, :, ::-1])
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(np.asarray(views[2]), padded[:, :32, :32])
    np.testing.assert_array_equal(np.asarray(views[5]), padded[:, 2:, 2:][:, :, ::-1])

    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(
        keras.layers.Flatten()(h)))
    log_p = [np.log(np.asarray(model(v))) for v in views]
    mean = sum(w * lp for w, lp in zip(weights, log_p))
    expected = np.exp(mean) / np.exp(mean).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(tta_predict(model, x, 2)), expected, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(tta_predict(model, x, 0)), np.asarray(model(x)))


# ----------------------------------------------------------------------------------- end to end


def test_recipe_tiny_run_trains_averages_and_exports_with_tta(tmp_path, mirror):
    """The default recipe on 1,000 images: the whitening layer is fitted, the loss falls, the
    Lookahead average ends the run on its slow weights (what the backup holds), TTA is measured
    beside the plain accuracy, and the export (TTA inside) takes raw uint8 and returns
    probabilities, ids and names."""
    import pandas as pd
    import tensorflow as tf

    from apps.cifar_cnn import train

    record = train.main(["--epochs", "4", "--limit", "1000", "--test-limit", "200",
                         "--batch-size", "100", "--run-dir", str(tmp_path / "run"),
                         "--export-dir", str(tmp_path / "models"), "--verbose", "0"])
    from shared.precision import cpu_has_bf16

    # the recipe's CPU default where the CPU has bfloat16 hardware
    assert record["precision"] == ("mixed_bfloat16" if cpu_has_bf16() else "float32")
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(hist) == 4 and hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    metrics = record["metrics"]
    assert metrics["tta"] == "mirror_translate"
    assert 0.1 < metrics["accuracy"] <= 1 and 0 < metrics["accuracy_without_tta"] <= 1
    assert record["params"]["trainable"] == 1_971_352
    assert (tmp_path / "run" / "first_layer.png").is_file()  # the whitening filters

    loaded = tf.saved_model.load(record["export"])
    sig = loaded.signatures["serving_default"]
    (spec,) = sig.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = sig(images=tf.constant(x))
    probs = out["probabilities"].numpy()
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["class_ids"].numpy(), probs.argmax(1))
    meta = json.loads((tmp_path / "models" / "cifar_cnn" / "1" / "assets.extra" /
                       "ksuite.json").read_text())
    assert len(meta["class_names"]) == 10


def one_weight_model():
    """One weight starting at 0 whose loss has gradient 1: SGD at lr 1 lowers it by 1 a step."""
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False,
                                                   kernel_initializer="zeros")(inputs))
    model.compile(keras.optimizers.SGD(1.0), lambda y, p: keras.ops.mean(p))
    return model


def test_lookahead_pulls_back_toward_the_slow_weights():
    """One weight, gradient 1 per step, SGD lr 1: the fast weight falls by 1 per step; every 2
    steps it restarts from slow = a slow + (1 - a) fast (a = 0.5)."""
    from shared.averaging import Lookahead

    model = one_weight_model()
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(np.asarray(self.model.weights[0])[0, 0]))

    la = Lookahead(total_steps=6, every=2, alpha=0.5, ramp_power=0)
    model.fit(np.ones((6, 1), "float32"), np.zeros((6, 1)), batch_size=1, epochs=1, verbose=0,
              shuffle=False, callbacks=[la, Record()])
    # steps: -1; -2 -> sync (0 + -2)/2 = -1; -2; -3 -> (-1 + -3)/2 = -2; -3; -4 -> -3
    assert seen == [-1.0, -1.0, -2.0, -2.0, -3.0, -3.0]
    assert la.alpha_at(3) == 0.5
    assert Lookahead(total_steps=10).alpha_at(5) == pytest.approx(0.95 ** 5 * 0.125)


def test_lookahead_syncs_at_each_epoch_end_so_a_backup_holds_the_slow_weights():
    from shared.averaging import Lookahead

    model = one_weight_model()
    ends = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append((float(np.asarray(self.model.weights[0])[0, 0]),
                         float(np.asarray(la.slow[0])[0, 0])))

    la = Lookahead(total_steps=6, every=5, alpha=0.5, ramp_power=0)
    model.fit(np.ones((3, 1), "float32"), np.zeros((3, 1)), batch_size=1, epochs=2, verbose=0,
              shuffle=False, callbacks=[la, Record()])
    # Epoch 1: -1, -2, -3 -> sync at its end: (0 + -3)/2 = -1.5. Epoch 2: -2.5, -3.5 (step 5
    # syncs: (-1.5 + -3.5)/2 = -2.5), -3.5 -> end: (-2.5 + -3.5)/2 = -3.
    assert ends == [(-1.5, -1.5), (-3.0, -3.0)]


def test_weight_decay_is_decoupled_and_skips_named_variables():
    """OptimizerConfig.weight_decay: w -= lr x wd x w each step, beside the gradient step;
    variables named in no_weight_decay keep their value when their gradient is zero."""
    from shared.optim import OptimizerConfig, make_optimizer

    opt = make_optimizer(OptimizerConfig(name="nesterov", learning_rate=0.5, momentum=0.85,
                                         weight_decay=0.1, no_weight_decay=("bias",)))
    kernel = keras.Variable(np.ones(3, "float32"), name="kernel")
    bias = keras.Variable(np.ones(3, "float32"), name="bias")
    opt.apply([np.zeros(3, "float32"), np.zeros(3, "float32")], [kernel, bias])
    np.testing.assert_allclose(np.asarray(kernel), 1 - 0.5 * 0.1, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(bias), 1.0)
    from shared.errors import UserError

    with pytest.raises(UserError, match="weight decay"):
        make_optimizer(OptimizerConfig(name="rmsprop", weight_decay=0.1))


# ----------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("argv, expected", [
    ([], dict(model="scratch", epochs=12, batch_size=1024, optimizer="nesterov", momentum=0.85,
              learning_rate=1.5, schedule="triangular", weight_decay=8.9e-3,
              label_smoothing=0.2, patience=None, val_size=0, augment="flip_translate",
              tta="mirror_translate")),
    (["--model", "keras_classic"], dict(epochs=60, batch_size=128, optimizer="adam",
                                        learning_rate=1e-3, schedule="cosine", patience=10,
                                        val_size=5000, augment="classic", tta="none",
                                        label_smoothing=0.0, weight_decay=None)),
    (["--no-augment"], dict(augment="none")),
])
def test_recipe_presets(argv, expected):
    from apps.cifar_cnn.train import APP

    args = APP.parse(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert APP.export_name(args) == "cifar_cnn"
    assert APP.precision_for(args)["cpu"] == ("mixed_bfloat16" if args.model == "scratch"
                                              else "float32")


@pytest.mark.parametrize("args, message", [
    (["--retrain-on-all"], "--retrain-on-all needs a validation split"),
    (["--model", "vgg16", "--tta", "mirror"], "--tta applies to the scratch CNNs"),
])
def test_recipe_refusals_are_one_line(args, message, tmp_path, capsys):
    from apps.cifar_cnn import train

    with pytest.raises(SystemExit) as exc:
        train.main([*args, "--run-dir", str(tmp_path / "r"), "--no-export"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_recipe_resumes_with_its_whitening_switch_and_slow_weights(tmp_path, mirror, monkeypatch):
    """A run stopped after its third epoch resumes from that epoch's backup: the whitening
    bias's switch (off from epoch 3) comes back with the weights, the bias no longer moves, and
    the history has one row per epoch."""
    import pandas as pd

    from apps.cifar_cnn import train
    from apps.cifar_cnn.train import CifarCNN

    class Stop(Exception):
        pass

    class StopBeforeEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise Stop()

    own = CifarCNN.callbacks
    monkeypatch.setattr(CifarCNN, "callbacks",
                        lambda self, *a: [*own(self, *a), StopBeforeEpoch()])
    argv = ["--epochs", "4", "--limit", "500", "--batch-size", "100", "--test-limit", "50",
            "--tta", "none", "--run-dir", str(tmp_path / "run"), "--no-export", "--verbose", "0"]
    with pytest.raises(Stop):
        train.main(argv)
    monkeypatch.setattr(CifarCNN, "callbacks", own)
    seen = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            whiten = self.model.get_layer("whiten")
            seen[epoch] = (np.asarray(whiten.bias).copy(), int(whiten.bias_trainable.numpy()))

        def on_train_end(self, logs=None):
            seen["end"] = np.asarray(self.model.get_layer("whiten").bias).copy()

    monkeypatch.setattr(CifarCNN, "callbacks", lambda self, *a: [*own(self, *a), Watch()])
    record = train.main(argv)
    assert list(seen)[:1] == [3]  # only the fourth epoch ran again
    bias, switch = seen[3]
    assert switch == 0 and not np.allclose(bias, 0)  # trained for 3 epochs, then frozen
    np.testing.assert_allclose(seen["end"], bias, rtol=1e-6)
    assert record["resumed_from_epoch"] == 3 and record["epochs_run"] == 4
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [0, 1, 2, 3]
