"""DCGAN: shapes, the training step (Algorithm 1 with k steps), the sample-quality metrics, the
export round trip, a short real run end to end, mirrored on 2 logical CPUs, and error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import child_env, run_module


def _adam():
    import keras

    return keras.optimizers.Adam(2e-4, beta_1=0.5)


def _gan(shape=(28, 28, 1), width=8, k=1, label_smoothing=0.0, seed=0, r1_gamma=0.0,
         categories=0):
    from apps.dcgan.model import DCGAN, build_code_head, build_discriminator, build_generator

    d = build_discriminator(shape, width)
    gan = DCGAN(build_generator(shape, 100, width, categories=categories), d, seed=seed,
                code_head=build_code_head(d, categories) if categories else None)
    gan.compile(_adam(), _adam(), k=k, label_smoothing=label_smoothing, r1_gamma=r1_gamma)
    return gan


# ------------------------------------------------------------------------------ architecture


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_generator_and_discriminator_shapes(shape):
    import keras

    from apps.dcgan.model import build_discriminator, build_generator

    g, d = build_generator(shape, 100, 16), build_discriminator(shape, 16)
    images = g(np.random.default_rng(0).standard_normal((3, 100)).astype("float32"))
    assert tuple(images.shape) == (3, *shape)
    values = keras.ops.convert_to_numpy(images)
    assert values.min() >= -1 and values.max() <= 1  # tanh output
    assert tuple(d(images).shape) == (3, 1)
    # Radford et al.: no batch normalization at the generator output / discriminator input.
    assert g.layers[-1].name == "images" and isinstance(g.layers[-2], keras.layers.ReLU)
    assert g.get_layer("images").activation.__name__ == "tanh"
    first = d.layers[1]
    assert isinstance(first, keras.layers.Conv2D) and first.strides == (2, 2)
    assert not isinstance(d.layers[2], keras.layers.BatchNormalization)
    assert not any(isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D))
                   for layer in d.layers)


def test_generator_layouts_refine_and_kernel():
    """Default: TensorFlow's DCGAN-tutorial layout at 28x28 (7x7x4w -> 7x7x2w -> 14x14xw -> 28x28)
    with 5x5 kernels; --no-refine / kernel 4: dcgan.torch's (7x7x2w -> 14x14xw -> 28x28)."""
    from apps.dcgan.model import build_discriminator, build_generator

    g = build_generator((28, 28, 1), 100, 16)
    assert g.get_layer("reshape").output.shape[1:] == (7, 7, 64)
    refine = g.get_layer("refine")
    assert refine.strides == (1, 1) and refine.kernel_size == (5, 5)
    assert refine.output.shape[1:] == (7, 7, 32)
    assert g.get_layer("deconv_1").output.shape[1:] == (14, 14, 16)

    plain = build_generator((28, 28, 1), 100, 16, kernel=4, refine=False)
    assert plain.get_layer("reshape").output.shape[1:] == (7, 7, 32)
    assert "refine" not in [layer.name for layer in plain.layers]
    assert plain.get_layer("images").kernel_size == (4, 4)
    assert build_discriminator((28, 28, 1), 16, kernel=4).get_layer("conv_1").kernel_size == (4, 4)

    # CIFAR: 4x4x8w -> 4x4x4w -> 8x8x2w -> 16x16xw -> 32x32x3
    c = build_generator((32, 32, 3), 100, 8)
    assert c.get_layer("reshape").output.shape[1:] == (4, 4, 64)
    assert c.get_layer("deconv_2").output.shape[1:] == (16, 16, 8)


def test_discriminator_depth():
    """Default: halve until the map is 4x4 (three at 28x28 and 32x32); layers=2 mirrors the
    28x28 generator (ends at 7x7); out of range is an error, and the train script says so
    before building anything."""
    from apps.dcgan import train
    from apps.dcgan.model import build_discriminator

    names = lambda d: [layer.name for layer in d.layers if layer.name.startswith("conv_")
                       and not layer.name.endswith(("_bn", "_lrelu"))]
    assert names(build_discriminator((28, 28, 1), 16, layers=2)) == ["conv_1", "conv_2"]
    deep = build_discriminator((28, 28, 1), 16)
    assert names(deep) == ["conv_1", "conv_2", "conv_3"]
    assert deep.get_layer("conv_3").output.shape[1:] == (4, 4, 64)
    assert "conv_3_bn" in [layer.name for layer in deep.layers]  # [R2]
    assert deep(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 1)
    assert names(build_discriminator((32, 32, 3), 16)) == ["conv_1", "conv_2", "conv_3"]
    with pytest.raises(ValueError, match="1 to 5"):
        build_discriminator((28, 28, 1), 16, layers=6)
    assert train.parse_args(["--disc-layers", "3"]).disc_layers == 3
    # --disc-width sets the discriminator's channels apart from the generator's --width.
    gan = train.build_gan(train.parse_args(["--width", "16", "--disc-width", "8"]), (28, 28, 1))
    g, d = gan.generator, gan.discriminator
    assert d.get_layer("conv_1").filters == 8 and d.get_layer("conv_3").filters == 32
    assert g.get_layer("deconv_1").filters == 16
    gan = train.build_gan(train.parse_args(["--width", "16"]), (28, 28, 1))
    assert gan.discriminator.get_layer("conv_1").filters == 16 and gan.code_head is None
    with pytest.raises(SystemExit):
        train.parse_args(["--disc-layers", "0"])


def test_unsupported_image_size_is_an_error():
    from apps.dcgan.model import build_generator

    with pytest.raises(ValueError):
        build_generator((28, 32, 1))


def test_standing_statistics_are_the_inference_inputs_exact_statistics():
    """After recalibration every batch-norm layer, in inference mode, normalizes its inputs over
    the calibration latents to mean beta and standard deviation gamma (up to epsilon), layer by
    layer with the earlier ones already recalibrated; the moving averages from training do not."""
    import keras

    from apps.dcgan.model import latent_batches, standing_statistics

    g = _gan(width=8).generator
    rng = np.random.default_rng(3)
    for w in g.trainable_variables:  # weights far from the initialization's statistics
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    layers = [layer for layer in g.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.gamma.assign(rng.uniform(0.5, 2.0, layer.gamma.shape).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape).astype("float32"))
    probe = keras.Model(g.inputs[0], [layer.output for layer in layers])
    latents = latent_batches(100, n=600, batch=256, seed=5)
    assert [len(z) for z in latents] == [256, 256, 88]

    def output_stats():
        outs = [np.concatenate([np.asarray(probe(z, training=False)[i]) for z in latents])
                for i in range(len(layers))]
        return [(o.reshape(-1, o.shape[-1]).mean(0), o.reshape(-1, o.shape[-1]).std(0))
                for o in outs]

    before = output_stats()
    assert standing_statistics(g, latents) == len(layers) == 3
    for (mean, std), layer in zip(output_stats(), layers):
        gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
        var = layer.moving_variance.numpy()
        np.testing.assert_allclose(mean, beta, atol=1e-3)
        np.testing.assert_allclose(std, np.abs(gamma) * np.sqrt(var / (var + layer.epsilon)),
                                   rtol=1e-3)
    assert not np.allclose(before[-1][0], layers[-1].beta.numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="at least one"):
        standing_statistics(g, [])
    assert standing_statistics(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                               latents) == 0


def test_quality_monitor_scores_averaged_weights_and_puts_everything_back(tmp_path):
    """--ema: the monitor scores the averaged weights with their own standing statistics, then
    restores the last weights *and* the batch-norm moving averages that belong to them."""
    import keras
    import tensorflow as tf

    from apps.dcgan.model import DCGAN, build_discriminator, build_generator
    from apps.dcgan.progress import QualityMonitor

    g, d = build_generator((28, 28, 1), 100, 8), build_discriminator((28, 28, 1), 8)
    gan = DCGAN(g, d, seed=0)
    gan.compile(_adam(), keras.optimizers.Adam(2e-4, beta_1=0.5, use_ema=True,
                                               ema_momentum=0.9), k=1)
    for i in range(3):
        gan.train_step(tf.random.uniform((16, 28, 28, 1), -1, 1, seed=i))

    class MeanPixel:  # a stand-in scorer: the statistic only has to see the weights
        n = 64

        def score(self, images):
            return {"inception_score": float(images.mean())}

    monitor = QualityMonitor(g, MeanPixel(), 100, 1, tmp_path / "quality.csv", gan.g_optimizer)
    before = [w.copy() for w in g.get_weights()]
    scores = monitor.variants()
    assert set(scores) == {"last", "ema"}
    assert scores["ema"]["inception_score"] != scores["last"]["inception_score"]
    for a, b in zip(before, g.get_weights()):
        np.testing.assert_array_equal(a, b)
    monitor.on_epoch_end(0)
    row = (tmp_path / "quality.csv").read_text().splitlines()
    assert row[0] == "epoch,last_inception_score,ema_inception_score"


def test_quality_csv_of_a_resumed_run_keeps_the_columns_of_earlier_epochs(tmp_path):
    """A run resumed with other flags (here: without --ema) appends its row; the earlier rows
    keep their columns and the new one leaves them empty."""
    import csv

    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import QualityMonitor

    path = tmp_path / "quality.csv"
    path.write_text("epoch,last_inception_score,ema_inception_score\n1,5.0,4.0\n2,6.0,5.5\n")

    class Constant:
        n = 8

        def score(self, images):
            return {"inception_score": 7.0}

    monitor = QualityMonitor(build_generator((28, 28, 1), 100, 8), Constant(), 100, 1, path)
    monitor.on_epoch_end(2)  # epoch 3
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["ema_inception_score"] == "5.5"
    assert rows[2] == {"epoch": "3", "last_inception_score": "7.0", "ema_inception_score": ""}


# ------------------------------------------------------------------------------ training step


def test_train_step_updates_both_players_and_returns_both_losses():
    import tensorflow as tf

    gan = _gan()
    before_g = [w.numpy().copy() for w in gan.generator.trainable_weights]
    before_d = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    real = tf.random.uniform((16, 28, 28, 1), -1, 1, seed=1)
    logs = gan.train_step(real)
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(logs)
    for key in ("d_loss", "g_loss"):
        assert np.isfinite(float(logs[key])) and float(logs[key]) > 0
    assert 0 < float(logs["d_real"]) < 1 and 0 < float(logs["d_fake"]) < 1
    assert all(not np.allclose(a, w.numpy()) for a, w in
               zip(before_g, gan.generator.trainable_weights))
    assert all(not np.allclose(a, w.numpy()) for a, w in
               zip(before_d, gan.discriminator.trainable_weights))
    assert int(gan.d_optimizer.iterations) == 1 and int(gan.g_optimizer.iterations) == 1


def test_k_discriminator_steps_per_generator_step(k=3):
    """Algorithm 1: each fit() step takes k minibatches of m real images and makes k
    discriminator updates, then one generator update."""
    import tensorflow as tf

    gan = _gan(k=k)
    m, steps = 8, 2
    x = np.random.default_rng(0).uniform(-1, 1, (k * m * steps, 28, 28, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).batch(k * m, drop_remainder=True)
    history = gan.fit(ds, epochs=1, verbose=0)
    assert int(gan.d_optimizer.iterations) == k * steps
    assert int(gan.g_optimizer.iterations) == steps
    assert {"d_loss", "g_loss"} <= set(history.history)


def test_k_must_divide_the_batch_and_flags_are_checked():
    import tensorflow as tf

    gan = _gan(k=3)
    with pytest.raises(ValueError, match="cannot be split"):
        gan.train_step(tf.zeros((16, 28, 28, 1)))
    with pytest.raises(ValueError):
        _gan(k=0)
    with pytest.raises(ValueError):
        _gan(label_smoothing=1.0)


def test_discriminator_learns_to_tell_real_from_fake():
    """A few steps on a fixed 'real' image set: D(x) rises above D(G(z)) and the discriminator
    loss falls (the game moves the way Algorithm 1 says), with and without one-sided label
    smoothing."""
    import keras
    import tensorflow as tf

    real = tf.constant(np.tile(np.linspace(-1, 1, 28, dtype="float32")[None, None, :, None],
                               (16, 28, 1, 1)))
    for smoothing in (0.0, 0.1):
        keras.utils.set_random_seed(3)
        gan = _gan(label_smoothing=smoothing, seed=3)
        first = float(gan.train_step(real)["d_loss"])
        for _ in range(12):
            gan.train_step(real)
        for tracker in gan.metrics:
            tracker.reset_state()
        logs = gan.train_step(real)
        assert float(logs["d_real"]) > float(logs["d_fake"]), (smoothing, logs)
        assert float(logs["d_loss"]) < first, (smoothing, first, logs)


def test_r1_penalty_of_a_linear_discriminator_is_half_gamma_times_its_squared_weights():
    """D(x) = w . x + b has gradient w at every x: the penalty is gamma / 2 * ||w||^2 for each
    image, and its logits are D's own."""
    import keras
    import tensorflow as tf

    from apps.dcgan.model import r1_penalty

    d = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(1, kernel_initializer="random_normal")])
    w = keras.ops.convert_to_numpy(d.layers[-1].kernel)
    real = tf.random.uniform((5, 4, 4, 1), -1, 1, seed=0)
    logits, penalty = r1_penalty(d, real, 0.3)
    np.testing.assert_allclose(penalty.numpy(), np.full(5, 0.15 * np.sum(w ** 2)), rtol=1e-5)
    np.testing.assert_allclose(logits.numpy(), d(real).numpy(), rtol=1e-6)


def test_r1_penalty_smooths_the_discriminator_on_real_images():
    """The same steps with and without the penalty: with it, D's input gradient on the real
    images ends smaller, the regularized d_loss stays finite, and a bad gamma is refused."""
    import keras
    import tensorflow as tf

    from apps.dcgan.model import r1_penalty

    real = tf.random.uniform((16, 28, 28, 1), -1, 1, seed=4)
    norms, losses = {}, {}
    for gamma in (0.0, 10.0):
        keras.utils.set_random_seed(5)
        gan = _gan(seed=5, r1_gamma=gamma)
        for _ in range(8):
            logs = gan.train_step(real)
        losses[gamma] = float(logs["d_loss"])
        norms[gamma] = float(tf.reduce_mean(r1_penalty(gan.discriminator, real, 2.0)[1]))
    assert np.isfinite(losses[10.0])
    assert norms[10.0] < 0.5 * norms[0.0], norms
    with pytest.raises(ValueError, match="r1_gamma"):
        _gan(r1_gamma=-1.0)


# ------------------------------------------------------------------------------ InfoGAN code


def test_categorical_code_is_the_one_hot_argmax_of_the_first_coordinates_and_uniform():
    """[IG] The generator's input: z's first K coordinates become one_hot(argmax); the rest pass
    through. For z ~ N(0, I) the code is uniform over the K categories, and moving z_1..z_K
    without changing their argmax does not change the image (the cells are separate)."""
    from apps.dcgan.model import CategoricalCode, build_generator, code_of

    z = np.random.default_rng(0).standard_normal((20_000, 12)).astype("float32")
    out = CategoricalCode(4, noise_scale=1.0)(z).numpy()
    np.testing.assert_array_equal(out[:, :4], np.eye(4, dtype="float32")[z[:, :4].argmax(1)])
    np.testing.assert_array_equal(out[:, 4:], z[:, 4:])
    scaled = CategoricalCode(4)(z).numpy()  # ClusterGAN's sigma = 0.1 on the noise
    np.testing.assert_array_equal(scaled[:, :4], out[:, :4])
    np.testing.assert_allclose(scaled[:, 4:], 0.1 * z[:, 4:], rtol=1e-6)
    np.testing.assert_array_equal(code_of(z, 4).numpy(), z[:, :4].argmax(1))
    share = np.bincount(z[:, :4].argmax(1), minlength=4) / len(z)
    np.testing.assert_allclose(share, 0.25, atol=0.015)
    g = build_generator((28, 28, 1), 100, 8, categories=10)
    a = np.random.default_rng(1).standard_normal((3, 100)).astype("float32")
    b = a.copy()
    b[:, :10] *= 0.5  # halving keeps the argmax
    np.testing.assert_allclose(g(a, training=False), g(b, training=False), atol=1e-6)
    c = a.copy()
    c[:, :10] = 0.0
    c[:, (a[:, :10].argmax(1) + 1) % 10] = 1.0  # another code, the same noise
    assert not np.allclose(g(a, training=False), g(c, training=False))
    with pytest.raises(ValueError, match="categories"):
        build_generator((28, 28, 1), 100, 8, categories=100)


def test_info_gan_step_trains_the_code_head_and_logs_the_info_loss():
    import tensorflow as tf

    from apps.dcgan.model import DCGAN, build_code_head, build_discriminator, build_generator

    gan = _gan(categories=10)
    assert gan.categories == 10 and gan.code_head.output_shape == (None, 10)
    before = [w.numpy().copy() for w in gan.code_head.trainable_weights]
    logs = gan.train_step(tf.random.uniform((16, 28, 28, 1), -1, 1, seed=1))
    assert {"d_loss", "g_loss", "info_loss"} <= set(logs)
    # At the start Q knows nothing: the cross-entropy of a 10-way code is about log 10.
    assert 0.5 * np.log(10) < float(logs["info_loss"]) < 2 * np.log(10)
    assert all(not np.allclose(a, w.numpy()) for a, w in
               zip(before, gan.code_head.trainable_weights))
    # The discriminator's optimizer owns the head's weights (built now, for a resumed run).
    assert len(gan.d_optimizer.variables) > len(_gan().d_optimizer.variables)
    d = build_discriminator((28, 28, 1), 8)
    with pytest.raises(ValueError, match="categories=10"):
        DCGAN(build_generator((28, 28, 1), 100, 8), d, code_head=build_code_head(d, 10))
    with pytest.raises(ValueError, match="at least 2"):
        build_code_head(d, 1)
    assert "info_loss" not in _gan().train_step(tf.zeros((16, 28, 28, 1)))


def test_info_loss_reaches_the_generator_and_a_step_on_it_lowers_it():
    """Both players minimize L_I: its gradient reaches every generator weight, and steps of
    the code head and the generator on L_I alone lower it on the same latent batch."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(2)
    gan = _gan(categories=10, seed=2)
    latent = tf.random.normal((64, 100), seed=2)
    weights = gan.generator.trainable_weights + gan.code_head.trainable_weights
    opt = keras.optimizers.SGD(0.05)

    def info_loss():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(gan.judge(gan.generator(latent, training=True), latent)[1])
        return loss, tape.gradient(loss, weights)

    first, grads = info_loss()
    generator_grads = grads[: len(gan.generator.trainable_weights)]
    assert all(float(tf.norm(g)) > 0 for g in generator_grads)
    for _ in range(5):
        opt.apply_gradients(zip(grads, weights))
        loss, grads = info_loss()
    assert float(loss) < float(first), (float(first), float(loss))


def test_noise_weight_adds_the_head_s_squared_error_on_the_noise():
    """ClusterGAN's l2 term: with noise_weight w the head also estimates z's 90 noise
    coordinates, and L_I = CE(code) + w * mean squared error of those estimates."""
    import tensorflow as tf

    from apps.dcgan import train

    gan = train.build_gan(train.parse_args(["--width", "8", "--categories", "10",
                                            "--noise-weight", "2"]), (28, 28, 1))
    assert gan.code_head.output_shape == (None, 100) and gan.categories == 10
    latent = tf.random.normal((8, 100), seed=6)
    fake = gan.generator(latent, training=False)
    _, info = gan.judge(fake, latent)
    out = gan.code_head(gan._critic(fake, training=True)[1], training=True)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.argmax(latent[:, :10], axis=-1), logits=out[:, :10])
    mse = tf.reduce_mean(tf.square(out[:, 10:] - latent[:, 10:]), axis=-1)
    np.testing.assert_allclose(info.numpy(), (ce + 2.0 * mse).numpy(), rtol=1e-5)
    plain = train.build_gan(train.parse_args(["--width", "8", "--categories", "10"]),
                            (28, 28, 1))
    assert plain.code_head.output_shape == (None, 10)


def test_labelled_batches_keep_each_image_with_its_label():
    """[AC] make_dataset(y=...) gives (images in [-1, 1], int32 labels) batches, shuffled
    together: each label still belongs to its image."""
    from apps.dcgan.data import make_dataset

    x = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None, None], 4, axis=1)
    x = np.repeat(x, 4, axis=2) * 6  # image i is filled with 6 i
    ds = make_dataset(x, 8, seed=1, y=np.arange(40) % 10)
    images, labels = next(iter(ds))
    assert images.shape == (8, 4, 4, 1) and labels.dtype == "int32" and labels.shape == (8,)
    index = np.round((images.numpy()[:, 0, 0, 0] + 1) * 127.5 / 6).astype(int)
    assert sorted(index.tolist()) != list(range(8))  # shuffled
    np.testing.assert_array_equal(labels.numpy(), index % 10)
    with pytest.raises(ValueError, match="40 images but 39 labels"):
        make_dataset(x, 8, y=np.arange(39))


def _ac_gan(seed=0):
    """An AC-GAN (--labels) of width 8 whose weights and noise stream depend on ``seed`` only."""
    import keras

    from apps.dcgan import train

    keras.utils.set_random_seed(seed)

    gan = train.build_gan(train.parse_args(["--width", "8", "--labels", "--seed", str(seed)]),
                          (28, 28, 1))
    gan.compile(_adam(), _adam())
    return gan


def test_ac_gan_flags_and_the_classifying_head():
    """--labels: one code per class (categories 10), unit noise beside it (keras-io's
    conditional GAN), and a DCGAN whose discriminator's head is trained on real labels."""
    from apps.dcgan import train
    from apps.dcgan.model import DCGAN, build_discriminator, build_generator

    args = train.parse_args(["--labels"])
    assert (args.categories, args.noise_scale) == (10, 1.0)
    assert train.parse_args(["--categories", "10"]).noise_scale == 0.1
    assert train.parse_args(["--labels", "--noise-scale", "0.5"]).noise_scale == 0.5
    gan = _ac_gan()
    assert gan.label_weight == 1.0 and gan.categories == 10
    assert "label_loss" in [m.name for m in gan.metrics]
    assert "label_loss" not in [m.name for m in _gan(categories=10).metrics]
    d = build_discriminator((28, 28, 1), 8)
    with pytest.raises(ValueError, match="needs a code head"):
        DCGAN(build_generator((28, 28, 1), 100, 8), d, label_weight=1.0)


def test_ac_gan_discriminator_learns_the_real_labels_and_not_the_sample_codes():
    """[AC] The discriminator's step: its head's loss is the cross-entropy of the real images'
    labels (logged as label_loss), and the samples' codes do not enter it (keras'
    mnist_acgan.py); the generator's step still minimizes L_I of its samples."""
    import tensorflow as tf

    real = tf.random.uniform((16, 28, 28, 1), -1, 1, seed=7)
    labels = tf.constant(np.arange(16) % 10, tf.int32)
    gan = _ac_gan(seed=5)
    _, expected = gan.classify(real, labels)
    out = gan.code_head(gan._critic(real, training=True)[1], training=True)
    np.testing.assert_allclose(expected.numpy(), tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int64), logits=out).numpy(), rtol=1e-5)
    # The head's update depends on the real labels ...
    heads = []
    for shift in (0, 3):
        gan = _ac_gan(seed=5)
        gan.discriminator_step(real, (labels + shift) % 10)
        heads.append([w.numpy() for w in gan.code_head.trainable_weights])
    assert any(not np.allclose(a, b) for a, b in zip(*heads))
    # ... and on nothing else: with the same labels, another noise stream (other samples,
    # other codes) moves the head's output layer identically (only real images reach it).
    gan_a, gan_b = _ac_gan(seed=5), _ac_gan(seed=5)
    gan_b.noise.reset_from_seed(99)
    gan_a.discriminator_step(real, labels)
    gan_b.discriminator_step(real, labels)
    np.testing.assert_allclose(gan_a.code_head.get_layer("code_logits").kernel.numpy(),
                               gan_b.code_head.get_layer("code_logits").kernel.numpy(),
                               rtol=1e-5, atol=1e-7)
    logs = _ac_gan(seed=5).train_step((real, labels))
    assert {"label_loss", "info_loss", "d_loss", "g_loss"} <= set(logs)
    assert 0.5 * np.log(10) < float(logs["label_loss"]) < 2 * np.log(10)
    with pytest.raises(ValueError, match="images only"):
        _ac_gan().train_step(real)


def test_ac_gan_head_learns_to_classify_labelled_images():
    """A few discriminator steps on two labelled image kinds lower the head's label loss."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(8)
    gan = _ac_gan(seed=8)
    rng = np.random.default_rng(8)
    labels = np.arange(32) % 2
    real = np.where(labels[:, None, None, None] == 1, 0.8, -0.8) + rng.normal(
        0, 0.1, (32, 28, 28, 1))
    real, labels = tf.constant(real, tf.float32), tf.constant(labels, tf.int32)
    losses = [float(gan.discriminator_step(real, labels)[3]) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_code_head_weights_survive_a_save_and_load(tmp_path):
    """What a resumed run relies on: the code head and both optimizers' slots are in the
    weights file (BackupAndRestore saves the model's weights)."""
    import tensorflow as tf

    gan = _gan(categories=10, seed=3)
    gan.train_step(tf.random.uniform((16, 28, 28, 1), -1, 1, seed=3))
    gan.save_weights(tmp_path / "gan.weights.h5")
    other = _gan(categories=10, seed=4)
    other.load_weights(tmp_path / "gan.weights.h5")
    for a, b in zip(gan.code_head.weights, other.code_head.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(gan.d_optimizer.variables, other.d_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_code_agreement_matches_each_code_to_its_majority_class():
    from apps.dcgan.evaluate import code_agreement

    probs = np.eye(3)[[0, 0, 1, 2, 2, 2, 1, 1]]
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2])  # code 0: 2 of 3 class 0; 1: class 2; 2: class 1
    out = code_agreement(codes, probs, 3)
    assert out["code_accuracy"] == pytest.approx(7 / 8)
    assert out["code_classes"] == [0, 2, 1] and out["code_classes_covered"] == 3
    assert out["code_label_accuracy"] == pytest.approx(2 / 8)  # classified as their own code
    out = code_agreement(np.array([0, 1, 1]), np.eye(3)[[2, 2, 2]], 4)  # codes 2, 3 unused
    assert out["code_accuracy"] == 1.0 and out["code_classes_covered"] == 1


def test_code_grid_has_one_row_per_code(tmp_path):
    import imageio.v3 as iio

    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import code_grid, code_latents

    z = code_latents(10, 100, cols=4, seed=0)
    assert z.shape == (40, 100)
    np.testing.assert_array_equal(z[:, :10].argmax(1), np.repeat(np.arange(10), 4))
    np.testing.assert_array_equal(z[:4, 10:], z[36:, 10:])  # the same noise in every row
    path = code_grid(build_generator((28, 28, 1), 100, 8, categories=10), 10, 100,
                     tmp_path / "codes.png", cols=4)
    image = iio.imread(path)
    assert image.shape == (2 * (10 * 30 + 2), 2 * (4 * 30 + 2))


# ------------------------------------------------------------------------------ metrics


def test_inception_score_of_a_perfectly_confident_uniform_classifier_is_the_class_count():
    from apps.dcgan.evaluate import inception_score

    for classes in (2, 10):
        probs = np.eye(classes)[np.arange(100 * classes) % classes]
        assert inception_score(probs) == pytest.approx(classes, rel=1e-9)
    # One class only, or no confidence at all: 1 (the minimum).
    assert inception_score(np.tile(np.eye(10)[3], (50, 1))) == pytest.approx(1.0)
    assert inception_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        inception_score(np.zeros((0, 10)))


def test_inception_score_splits_into_marginal_minus_conditional_entropy():
    from apps.dcgan.evaluate import entropy_terms, inception_score

    probs = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=200)
    terms = entropy_terms(probs)
    assert np.exp(terms["marginal_entropy"] - terms["conditional_entropy"]) == pytest.approx(
        inception_score(probs), rel=1e-9)
    # Confident but all one class: no marginal entropy; even but unsure: all conditional.
    one = entropy_terms(np.tile(np.eye(10)[3], (50, 1)))
    assert one["marginal_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert one["conditional_entropy"] == pytest.approx(0.0, abs=1e-9)
    unsure = entropy_terms(np.full((50, 10), 0.1))
    assert unsure["marginal_entropy"] == pytest.approx(np.log(10))
    assert unsure["conditional_entropy"] == pytest.approx(np.log(10))


def test_per_sample_entropies_and_the_unsure_fraction():
    from apps.dcgan.evaluate import UNSURE_BELOW, sample_entropies, unsure_fraction

    sure, even = np.eye(10)[2], np.full(10, 0.1)
    below = np.full(10, (1 - (UNSURE_BELOW - 0.01)) / 9)
    below[0] = UNSURE_BELOW - 0.01
    probs = np.stack([sure, even, below, sure])
    h = sample_entropies(probs)
    assert h[0] == pytest.approx(0, abs=1e-9) and h[1] == pytest.approx(np.log(10))
    assert 0 < h[2] < h[1]
    assert unsure_fraction(probs) == 0.5  # the even one and the one just below the line
    with pytest.raises(ValueError):
        sample_entropies(np.ones(10) / 10)


def test_confidence_grid_shows_the_least_sure_samples(tmp_path):
    from apps.dcgan.progress import confidence_grid
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    probs = rng.dirichlet(np.full(10, 0.5), size=40)
    path = confidence_grid(images, probs, tmp_path / "c.png", n=8)
    assert path.is_file() and Image.open(path).size[0] > 100
    # Fewer images than a panel holds still draws.
    assert confidence_grid(images[:3], probs[:3], tmp_path / "d.png", n=8).is_file()


def test_frechet_distance_of_identical_sets_is_zero_and_of_a_shift_is_its_square():
    from apps.dcgan.evaluate import frechet_distance

    rng = np.random.default_rng(0)
    f = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32))
    f[:, 5] = 1.0  # a constant ("dead") feature: a singular covariance
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)
    shift = np.zeros(32)
    shift[0], shift[1] = 3.0, 4.0
    assert frechet_distance(f, f + shift) == pytest.approx(25.0, rel=1e-6)
    # Covariances S and 4S, same mean: Tr(S + 4S - 2 (4 S^2)^(1/2)) = Tr(S).
    g = rng.standard_normal((2000, 4))
    g -= g.mean(axis=0)
    assert frechet_distance(g, 2 * g) == pytest.approx(np.trace(np.cov(g, rowvar=False)),
                                                       rel=1e-9)
    assert frechet_distance(f[:, :8], f[:100, :8] + 0.1) > 0
    with pytest.raises(ValueError):
        frechet_distance(f, f[:, :3])


# ------------------------------------------------------------------------------ export


def test_export_round_trip_and_same_seed_same_images(tmp_path):
    import tensorflow as tf

    from apps.dcgan.export import export_generator, model_name
    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import to_uint8

    assert model_name("mnist") == "dcgan" and model_name("cifar10") == "dcgan_cifar10"
    generator = build_generator((28, 28, 1), 100, 8)
    path = export_generator(generator, "dcgan", tmp_path, {"inception_score": 1.5}, "mnist")
    assert path == tmp_path / "dcgan" / "1"
    loaded = tf.saved_model.load(str(path))

    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "latent" and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 100]
    z = np.random.default_rng(1).standard_normal((5, 100)).astype("float32")
    images = serve(latent=tf.constant(z))["images"]
    assert images.dtype == tf.uint8 and images.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(images.numpy(), to_uint8(generator(z, training=False)))

    sample = loaded.signatures["sample"]
    a = sample(count=tf.constant(6), seed=tf.constant(7, tf.int64))
    b = sample(count=tf.constant(6), seed=tf.constant(7, tf.int64))
    c = sample(count=tf.constant(6), seed=tf.constant(8, tf.int64))
    assert a["images"].dtype == tf.uint8 and a["images"].shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(a["images"].numpy(), b["images"].numpy())
    assert not np.array_equal(a["latent"].numpy(), c["latent"].numpy())
    # The sample signature's latent vectors reproduce its images through serving_default.
    again = serve(latent=a["latent"])["images"].numpy()
    np.testing.assert_array_equal(again, a["images"].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError):
        sample(count=tf.constant(-1), seed=tf.constant(0, tf.int64))
    meta = json.loads((path / "assets.extra" / "ksuite.json").read_text())
    assert meta["metrics"]["inception_score"] == 1.5 and meta["latent_dim"] == 100
    assert meta["categories"] == 0


def test_export_of_an_info_gan_generator_takes_the_same_latent_vectors(tmp_path):
    """[IG] Same signatures; the code is read from the latent vectors inside the SavedModel."""
    import tensorflow as tf

    from apps.dcgan.export import export_generator
    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import to_uint8

    generator = build_generator((28, 28, 1), 100, 8, categories=10)
    path = export_generator(generator, "dcgan", tmp_path, {}, "mnist")
    loaded = tf.saved_model.load(str(path))
    z = np.random.default_rng(2).standard_normal((4, 100)).astype("float32")
    images = loaded.signatures["serving_default"](latent=tf.constant(z))["images"].numpy()
    np.testing.assert_array_equal(images, to_uint8(generator(z, training=False)))
    a = loaded.signatures["sample"](count=tf.constant(3), seed=tf.constant(5, tf.int64))
    assert a["images"].shape == (3, 28, 28, 1)
    meta = json.loads((path / "assets.extra" / "ksuite.json").read_text())
    assert meta["categories"] == 10 and meta["conditional"] is False
    path = export_generator(generator, "dcgan", tmp_path / "ac", {}, "mnist", conditional=True)
    assert json.loads((path / "assets.extra" / "ksuite.json").read_text())["conditional"] is True


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mirror):
    """Two short epochs on 384 real MNIST images, evaluated with a classifier trained on 2,000
    images for one epoch (the metrics pipeline, not their values), exported; as AC-GAN
    (--labels: InfoGAN's code and head, trained on the labels; the plain DCGAN runs end to end
    in the mirrored test)."""
    from apps.dcgan import train

    base = tmp_path_factory.mktemp("dcgan")
    record = train.main(["--epochs", "2", "--limit", "384", "--batch-size", "32", "--width", "16",
                         "--disc-width", "8", "--k", "2", "--eval-samples", "300",
                         "--classifier-epochs", "1", "--classifier-limit", "2000",
                         "--classifier-dir", str(base / "clf"),
                         "--run-dir", str(base / "run"), "--export-dir", str(base / "models"),
                         "--score-every", "1", "--ema", "0.999", "--labels",
                         "--verbose", "0"])
    return base, record


def test_run_writes_samples_animation_and_loss_curves(trained):
    import pandas as pd

    base, record = trained
    run = base / "run"
    for name in ("config.json", "history.csv", "metrics.json", "gan_losses.png",
                 "progress.gif", "step_losses.csv", "quality.csv", "quality.png",
                 "samples_by_confidence.png", "codes.png", "samples/epoch_001.png",
                 "samples/epoch_002.png"):
        assert (run / name).is_file(), name
    import imageio.v3 as iio

    frames = iio.imread(run / "progress.gif", index=None)
    assert len(frames) == 2
    hist = pd.read_csv(run / "history.csv")
    assert {"d_loss", "g_loss", "examples_per_sec"} <= set(hist.columns) and len(hist) == 2
    steps = pd.read_csv(run / "step_losses.csv")
    assert len(steps) == 2 * (384 // 64) and steps["d_loss"].notna().all()
    assert steps["info_loss"].notna().all() and "info_loss" in hist.columns
    assert steps["label_loss"].notna().all() and "label_loss" in hist.columns
    # The per-step values average back to the epoch's logged mean.
    assert steps[steps.epoch == 1]["g_loss"].mean() == pytest.approx(hist["g_loss"][0], rel=1e-4)
    assert not (run / "checkpoints" / "backup").exists()
    assert not list(base.rglob("*.tmp*"))
    assert record["examples_per_sec"] > 0


def test_quality_is_scored_every_epoch_for_last_and_averaged_weights(trained):
    import pandas as pd

    base, record = trained
    quality = pd.read_csv(base / "run" / "quality.csv")
    assert list(quality["epoch"]) == [1, 2]
    assert {"last_inception_score", "ema_inception_score", "last_frechet_distance",
            "ema_frechet_distance"} <= set(quality.columns)
    assert (quality["ema_frechet_distance"] != quality["last_frechet_distance"]).all()
    # Scoring swaps the averaged weights in and back out: the final evaluation of the last
    # weights matches what the monitor saw after the last epoch (same samples up to n).
    assert record["metrics"]["last_weights_inception_score"] == pytest.approx(
        quality["last_inception_score"].iloc[-1], rel=0.2)


def test_run_measures_sample_quality_and_exports(trained):
    import tensorflow as tf

    base, record = trained
    m = record["metrics"]
    for key in ("inception_score", "frechet_distance", "real_train_inception_score",
                "real_train_frechet_distance", "real_test_inception_score",
                "classifier_test_accuracy"):
        assert np.isfinite(m[key]), key
    assert 1.0 <= m["inception_score"] <= 10.0 and m["frechet_distance"] >= 0
    assert m["eval_samples"] == 300
    # What keeps the score down: the IS's two entropy terms, and the classes of the samples.
    assert np.exp(m["marginal_entropy"] - m["conditional_entropy"]) == pytest.approx(
        m["inception_score"], rel=1e-6)
    assert len(m["class_fractions"]) == 10 and sum(m["class_fractions"]) == pytest.approx(1, 1e-3)
    assert 0 <= m["real_test_conditional_entropy"] < m["real_test_marginal_entropy"]
    assert 0 <= m["unsure_fraction"] <= 1 and 0 <= m["real_test_unsure_fraction"] <= 1
    assert 0.1 <= m["code_accuracy"] <= 1 and len(m["code_classes"]) == 10
    assert 0 <= m["code_label_accuracy"] <= m["code_accuracy"]
    assert (base / "clf" / "classifier.weights.h5").is_file()
    loaded = tf.saved_model.load(record["export"])
    out = loaded.signatures["sample"](count=tf.constant(4), seed=tf.constant(1, tf.int64))
    assert out["images"].shape == (4, 28, 28, 1) and out["images"].dtype == tf.uint8


def test_cached_classifier_is_reused(trained):
    from apps.dcgan.evaluate import classifier_dir, load_or_train_classifier
    from shared.data import load_image_dataset
    from shared.errors import UserError

    base, _ = trained
    x = np.zeros((2000, 28, 28, 1), np.uint8)  # the fixture's --classifier-limit 2000
    y = np.arange(2000) % 10
    model, record = load_or_train_classifier(x, y, x, y, base / "clf", 1)  # loads, trains nothing
    assert record["train_images"] < 2000 and model.output_shape == (None, 10)
    _, (x_test, y_test) = load_image_dataset("mnist")
    predicted = model.predict(x_test[:500, ..., None].astype("float32"), verbose=0).argmax(1)
    assert np.mean(predicted == y_test[:500]) == pytest.approx(record["test_accuracy"], abs=0.08)
    with pytest.raises(Exception, match="shape"):
        load_or_train_classifier(np.zeros((4, 32, 32, 3), np.uint8), y, x, y, base / "clf", 1)
    # A cache trained with other settings is another instrument: refused, never used in silence.
    with pytest.raises(UserError, match=r"epochs 1 \(asked for 12\)"):
        load_or_train_classifier(x, y, x, y, base / "clf")
    with pytest.raises(UserError, match=r"train_images 1800 \(asked for 900\)"):
        load_or_train_classifier(x[:1000], y[:1000], x, y, base / "clf", 1)
    # ... and the default caches are named by their settings, so each has its own.
    names = [classifier_dir("mnist", limit, epochs, "r").name
             for limit, epochs in ((None, 12), (2000, 12), (None, 6), (2000, 1))]
    assert names == ["mnist", "mnist-limit2000", "mnist-epochs6", "mnist-limit2000-epochs1"]


def test_mirrored_on_two_logical_devices(tmp_path, mirror):
    run_module("apps.dcgan.train", "--strategy", "mirrored", "--devices", "2", "--epochs", "1",
               "--steps-per-epoch", "3", "--limit", "512", "--batch-size", "16", "--width", "8",
               "--no-eval", "--no-export", "--verbose", "0", "--run-dir", tmp_path / "run",
               timeout=240)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["replicas"] == 2 and config["global_batch_size"] == 32
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    import pandas as pd

    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert np.isfinite(hist["d_loss"][0]) and np.isfinite(hist["g_loss"][0])


# ------------------------------------------------------------------------------ errors


def test_help_lists_the_shared_and_gan_flags():
    proc = run_module("apps.dcgan.train", "--help", timeout=60)
    for flag in ("--epochs", "--limit", "--seed", "--run-dir", "--export-dir", "--strategy",
                 "--devices", "--batch-size", "--k", "--label-smoothing", "--r1-gamma", "--dataset",
                 "--categories", "--info-weight", "--noise-scale",
                 "--noise-weight", "--labels",
                 "--eval-samples"):
        assert flag in proc.stdout, flag


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k must be a positive integer"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
    (["--patience", "3"], "early stopping is off"),
    (["--dataset", "svhn"], "invalid choice"),
    (["--eval-samples", "1"], "--eval-samples must be at least 2"),
    (["--disc-width", "0"], "--disc-width must be a positive integer"),
    (["--r1-gamma", "-0.5"], "--r1-gamma must be >= 0"),
    (["--categories", "1"], "--categories must be 0 (off) or at least 2"),
    (["--categories", "100"], "--categories must be below --latent-dim (100)"),
    (["--info-weight", "0"], "--info-weight must be > 0"),
    (["--noise-scale", "0"], "--noise-scale must be > 0"),
    (["--noise-weight", "-1"], "--noise-weight must be >= 0"),
    (["--labels", "--categories", "5"], "--labels needs one code per class: --categories 10"),
])
def test_bad_flags_give_one_clear_error(args, message, capsys):
    from apps.dcgan import train

    with pytest.raises(SystemExit) as exc:
        train.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_is_one_clear_error(tmp_path):
    env = child_env(KSUITE_DATA_DIR=tmp_path / "empty", KERAS_HOME=tmp_path / "kh",
                    KSUITE_OFFLINE=1)
    proc = run_module("apps.dcgan.train", "--dataset", "cifar10", "--epochs", "1",
                      "--run-dir", tmp_path / "r", env=env, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and "KSUITE_DATA_DIR" in err and "cifar" in err


def test_too_few_images_for_a_batch_is_one_clear_error(tmp_path, mirror, capsys):
    from apps.dcgan import train

    with pytest.raises(SystemExit) as exc:
        train.main(["--limit", "100", "--batch-size", "64", "--k", "2", "--no-eval",
                    "--run-dir", str(tmp_path / "r"), "--verbose", "0"])
    assert exc.value.code == 2
    assert "fewer than one batch" in capsys.readouterr().err
