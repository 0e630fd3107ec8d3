"""DCGAN and AC-GAN: shapes, the training step (Algorithm 1 with k steps), the AC-GAN's label
head, the sample-quality metrics, the classifier cache, the export's signatures, a short real run
end to end, and the settings check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.app import Data


def _adam():
    import keras

    return keras.optimizers.Adam(2e-4, beta_1=0.5)


def _gan(shape=(28, 28, 1), width=8, k=1, seed=0):
    from apps.dcgan.model import DCGAN, build_discriminator, build_generator

    gan = DCGAN(build_generator(shape, 100, width), build_discriminator(shape, width), seed=seed)
    gan.compile(_adam(), _adam(), k=k)
    return gan


def _ac_gan(seed=0, width=8):
    """An AC-GAN of width 8 whose weights and noise stream depend on ``seed`` only."""
    import keras

    from apps.dcgan.model import ACGAN, build_discriminator, build_generator, build_label_head

    keras.utils.set_random_seed(seed)
    d = build_discriminator((28, 28, 1), width)
    gan = ACGAN(build_generator((28, 28, 1), 100, width, classes=10), d,
                build_label_head(d, 10), seed=seed)
    gan.compile(_adam(), _adam())
    return gan


def _parse(*argv):
    from apps.dcgan.train import APP

    return APP.parse(list(argv))


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


def test_the_app_builds_dcgan_torch_widths_and_the_flags_layout():
    """The app's models: width 64 (dcgan.torch ngf = ndf = 64) in both players; the flags pick
    the kernel, the refinement layer and the discriminator's depth; --labels gives the AC-GAN."""
    from apps.dcgan.model import ACGAN, WIDTH
    from apps.dcgan.train import APP

    def build(*argv):
        return APP.build_model(_parse(*argv), Data(image_shape=(28, 28, 1)), None)

    gan = build()
    assert WIDTH == 64 and type(gan).__name__ == "DCGAN"
    assert gan.discriminator.get_layer("conv_1").filters == 64
    assert gan.discriminator.get_layer("conv_3").filters == 256
    assert gan.generator.get_layer("deconv_1").filters == 64
    gan = build("--disc-layers", "2", "--kernel-size", "4", "--no-refine")
    assert "conv_3" not in [layer.name for layer in gan.discriminator.layers]
    assert gan.generator.get_layer("images").kernel_size == (4, 4)
    assert "refine" not in [layer.name for layer in gan.generator.layers]
    ac = build("--labels")
    assert isinstance(ac, ACGAN) and ac.classes == 10
    assert ac.label_head.output_shape == (None, 10)


def test_discriminator_depth():
    """Default: halve until the map is 4x4 (three at 28x28 and 32x32); layers=2 mirrors the
    28x28 generator (ends at 7x7); out of range is an error."""
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


def test_unsupported_image_size_is_an_error():
    from apps.dcgan.model import build_generator

    with pytest.raises(ValueError):
        build_generator((28, 32, 1))


def test_both_players_optimizers_come_from_the_one_factory():
    """Adam with beta1 = 0.5 (Radford et al. §4), lr 2e-4, one per player, built for their
    variables (a resumed run restores into them)."""
    import keras

    from apps.dcgan.train import APP

    args = _parse("--beta1", "0.4")
    gan = APP.build_model(args, Data(image_shape=(28, 28, 1)), None)
    APP.compile(args, gan, Data(steps_per_epoch=10), None)
    for opt in (gan.d_optimizer, gan.g_optimizer):
        assert isinstance(opt, keras.optimizers.Adam)
        assert float(opt.beta_1) == pytest.approx(0.4)
        assert float(opt.learning_rate) == pytest.approx(2e-4)
    assert gan.d_optimizer is not gan.g_optimizer and gan.optimizer is None
    assert gan.k == 1


# ------------------------------------------------------------------------------ training step


def test_train_step_updates_both_players_and_returns_both_losses():
    import tensorflow as tf

    gan = _gan()
    before_g = [w.numpy().copy() for w in gan.generator.trainable_weights]
    before_d = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    real = tf.random.uniform((16, 28, 28, 1), -1, 1, seed=1)
    logs = gan.train_step(real)
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
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


def test_k_must_divide_the_batch():
    import tensorflow as tf

    gan = _gan(k=3)
    with pytest.raises(ValueError, match="cannot be split"):
        gan.train_step(tf.zeros((16, 28, 28, 1)))
    with pytest.raises(ValueError):
        _gan(k=0)


def test_discriminator_learns_to_tell_real_from_fake():
    """A few steps on a fixed 'real' image set: D(x) rises above D(G(z)) and the discriminator
    loss falls (the game moves the way Algorithm 1 says)."""
    import keras
    import tensorflow as tf

    real = tf.constant(np.tile(np.linspace(-1, 1, 28, dtype="float32")[None, None, :, None],
                               (16, 28, 1, 1)))
    keras.utils.set_random_seed(3)
    gan = _gan(seed=3)
    first = float(gan.train_step(real)["d_loss"])
    for _ in range(12):
        gan.train_step(real)
    for tracker in gan.metrics:
        tracker.reset_state()
    logs = gan.train_step(real)
    assert float(logs["d_real"]) > float(logs["d_fake"]), logs
    assert float(logs["d_loss"]) < first, (first, logs)


# ------------------------------------------------------------------------------ AC-GAN


def test_class_code_is_the_one_hot_argmax_of_the_first_coordinates_and_uniform():
    """[AC] The generator's input: z's first K coordinates become one_hot(argmax); the rest pass
    through. For z ~ N(0, I) the code is uniform over the K classes, and moving z_1..z_K without
    changing their argmax does not change the image."""
    from apps.dcgan.model import ClassCode, build_generator, classes_of, code_of

    z = np.random.default_rng(0).standard_normal((20_000, 12)).astype("float32")
    out = ClassCode(4)(z).numpy()
    np.testing.assert_array_equal(out[:, :4], np.eye(4, dtype="float32")[z[:, :4].argmax(1)])
    np.testing.assert_array_equal(out[:, 4:], z[:, 4:])
    np.testing.assert_array_equal(code_of(z, 4).numpy(), z[:, :4].argmax(1))
    share = np.bincount(z[:, :4].argmax(1), minlength=4) / len(z)
    np.testing.assert_allclose(share, 0.25, atol=0.015)
    g = build_generator((28, 28, 1), 100, 8, classes=10)
    assert classes_of(g) == 10 and classes_of(build_generator((28, 28, 1), 100, 8)) == 0
    a = np.random.default_rng(1).standard_normal((3, 100)).astype("float32")
    b = a.copy()
    b[:, :10] *= 0.5  # halving keeps the argmax
    np.testing.assert_allclose(g(a, training=False), g(b, training=False), atol=1e-6)
    c = a.copy()
    c[:, :10] = 0.0
    c[:, (a[:, :10].argmax(1) + 1) % 10] = 1.0  # another class, the same noise
    assert not np.allclose(g(a, training=False), g(c, training=False))
    with pytest.raises(ValueError, match="classes"):
        build_generator((28, 28, 1), 100, 8, classes=100)


def test_ac_gan_needs_a_matching_head_and_labelled_batches():
    import tensorflow as tf

    from apps.dcgan.model import ACGAN, build_discriminator, build_generator, build_label_head

    gan = _ac_gan()
    assert [m.name for m in gan.metrics] == ["d_loss", "g_loss", "d_real", "d_fake",
                                             "code_loss", "label_loss"]
    # The discriminator's optimizer owns the head's weights (built now, for a resumed run).
    assert len(gan.d_optimizer.variables) > len(_gan().d_optimizer.variables)
    d = build_discriminator((28, 28, 1), 8)
    with pytest.raises(ValueError, match="classes=10"):
        ACGAN(build_generator((28, 28, 1), 100, 8), d, build_label_head(d, 10))
    with pytest.raises(ValueError, match="at least 2"):
        build_label_head(d, 1)
    with pytest.raises(ValueError, match="images only"):
        gan.train_step(tf.zeros((16, 28, 28, 1)))


def test_ac_gan_discriminator_learns_the_real_labels_and_not_the_sample_codes():
    """[AC] The discriminator's step: its head's loss is the cross-entropy of the real images'
    labels (logged as label_loss), and the samples' codes do not enter it (keras'
    mnist_acgan.py); the generator's step minimizes the head's loss of its codes (code_loss)."""
    import tensorflow as tf

    real = tf.random.uniform((16, 28, 28, 1), -1, 1, seed=7)
    labels = tf.constant(np.arange(16) % 10, tf.int32)
    gan = _ac_gan(seed=5)
    _, expected = gan.classify(real, labels)
    out = gan.label_head(gan._critic(real, training=True)[1], training=True)
    np.testing.assert_allclose(expected.numpy(), tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int64), logits=out).numpy(), rtol=1e-5)
    # The head's update depends on the real labels ...
    heads = []
    for shift in (0, 3):
        gan = _ac_gan(seed=5)
        gan.discriminator_step(real, (labels + shift) % 10)
        heads.append([w.numpy() for w in gan.label_head.trainable_weights])
    assert any(not np.allclose(a, b) for a, b in zip(*heads))
    # ... and on nothing else: with the same labels, another noise stream (other samples,
    # other codes) moves the head's output layer identically (only real images reach it).
    gan_a, gan_b = _ac_gan(seed=5), _ac_gan(seed=5)
    gan_b.noise.reset_from_seed(99)
    gan_a.discriminator_step(real, labels)
    gan_b.discriminator_step(real, labels)
    np.testing.assert_allclose(gan_a.label_head.get_layer("label_logits").kernel.numpy(),
                               gan_b.label_head.get_layer("label_logits").kernel.numpy(),
                               rtol=1e-5, atol=1e-7)
    logs = _ac_gan(seed=5).train_step((real, labels))
    assert 0.5 * np.log(10) < float(logs["label_loss"]) < 2 * np.log(10)
    assert 0.5 * np.log(10) < float(logs["code_loss"]) < 2 * np.log(10)


def test_ac_gan_code_loss_reaches_the_generator():
    """The generator's update carries the head's cross-entropy of its codes: its gradient
    reaches every generator weight."""
    import tensorflow as tf

    gan = _ac_gan(seed=2)
    from apps.dcgan.model import code_of

    latent = tf.random.normal((32, 100), seed=2)
    with tf.GradientTape() as tape:
        _, per_code = gan.classify(gan.generator(latent, training=True), code_of(latent, 10))
        loss = tf.reduce_mean(per_code)
    grads = tape.gradient(loss, gan.generator.trainable_weights)
    assert all(g is not None and float(tf.norm(g)) > 0 for g in grads)


def test_ac_gan_head_learns_to_classify_labelled_images():
    """A few discriminator steps on two labelled image kinds lower the head's label loss."""
    import tensorflow as tf

    gan = _ac_gan(seed=8)
    rng = np.random.default_rng(8)
    labels = np.arange(32) % 2
    real = np.where(labels[:, None, None, None] == 1, 0.8, -0.8) + rng.normal(
        0, 0.1, (32, 28, 28, 1))
    real, labels = tf.constant(real, tf.float32), tf.constant(labels, tf.int32)
    losses = [float(gan.discriminator_step(real, labels)[3]) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_label_head_weights_survive_a_save_and_load(tmp_path):
    """What a resumed run relies on: the label head and both optimizers' slots are in the
    weights file (BackupAndRestore saves the model's weights)."""
    import tensorflow as tf

    gan = _ac_gan(seed=3)
    gan.train_step((tf.random.uniform((16, 28, 28, 1), -1, 1, seed=3),
                    tf.constant(np.arange(16) % 10, tf.int32)))
    gan.save_weights(tmp_path / "gan.weights.h5")
    other = _ac_gan(seed=4)
    other.load_weights(tmp_path / "gan.weights.h5")
    for a, b in zip(gan.label_head.weights, other.label_head.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(gan.d_optimizer.variables, other.d_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


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


def test_code_label_accuracy_counts_samples_in_their_code_s_class():
    from apps.dcgan.evaluate import code_label_accuracy

    probs = np.eye(3)[[0, 0, 1, 2, 2, 2, 1, 1]]
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert code_label_accuracy(codes, probs) == pytest.approx(2 / 8)
    assert code_label_accuracy(np.array([], int), np.zeros((0, 3))) == 0.0


def test_code_grid_has_one_row_per_class(tmp_path):
    import imageio.v3 as iio

    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import code_grid, code_latents

    z = code_latents(10, 100, cols=4, seed=0)
    assert z.shape == (40, 100)
    np.testing.assert_array_equal(z[:, :10].argmax(1), np.repeat(np.arange(10), 4))
    np.testing.assert_array_equal(z[:4, 10:], z[36:, 10:])  # the same noise in every row
    path = code_grid(build_generator((28, 28, 1), 100, 8, classes=10), 10, 100,
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
    from PIL import Image

    from apps.dcgan.progress import confidence_grid

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


def test_quality_csv_of_a_resumed_run_keeps_the_rows_of_earlier_epochs(tmp_path):
    """A resumed run rewrites quality.csv with the earlier epochs' rows and its own after them."""
    import csv

    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import QualityMonitor

    path = tmp_path / "quality.csv"
    path.write_text("epoch,inception_score\n1,5.0\n2,6.0\n3,9.0\n")

    class Constant:
        n = 8

        def score(self, images):
            return {"inception_score": 7.0}

    monitor = QualityMonitor(build_generator((28, 28, 1), 100, 8), Constant(), 100, 1, path)
    monitor.on_epoch_end(2)  # epoch 3 again, after a resume from epoch 2
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["inception_score"]) for r in rows] == [
        ("1", "5.0"), ("2", "6.0"), ("3", "7.0")]


# ------------------------------------------------------------------------------ classifier cache


def test_classifier_cache_keeps_one_entry_per_setting_and_never_blocks(tmp_path, capsys):
    """The defect of issue 25: a classifier cached with --seed 1 refused a run with the default
    seed. Each setting (dataset, epochs, seed, limit) has its own folder; a folder holding a
    classifier of other settings is retrained, not an error."""
    from apps.dcgan.evaluate import cached_classifier, classifier_dir

    assert classifier_dir("mnist", 12, 42, None, "r").as_posix() == "r/mnist-epochs12-seed42"
    assert classifier_dir("cifar10", 1, 1, 2000).as_posix() == \
        "runs/dcgan_classifier/cifar10-epochs1-seed1-limit2000"
    rng = np.random.default_rng(0)
    y = np.arange(240) % 10
    x = (rng.integers(0, 40, (240, 28, 28, 1)) + 20 * y[:, None, None, None]).astype(np.uint8)
    one = cached_classifier("mnist", x, y, x[:50], y[:50], 1, seed=1, root=tmp_path)
    default = cached_classifier("mnist", x, y, x[:50], y[:50], 1, seed=42, root=tmp_path)
    assert one[1]["seed"] == 1 and default[1]["seed"] == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist-epochs1-seed1",
                                                          "mnist-epochs1-seed42"]
    capsys.readouterr()
    again = cached_classifier("mnist", x, y, x[:50], y[:50], 1, seed=1, root=tmp_path)
    assert "cached in" in capsys.readouterr().out and again[1] == one[1]
    # A folder whose record says other settings (copied by hand, say) is trained anew.
    record = tmp_path / "mnist-epochs1-seed42" / "classifier.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "seed": 7}))
    _, fresh = cached_classifier("mnist", x, y, x[:50], y[:50], 1, seed=42, root=tmp_path)
    assert "seed 7 (asked for 42); training anew" in capsys.readouterr().out
    assert fresh["seed"] == 42 and json.loads(record.read_text())["seed"] == 42


# ------------------------------------------------------------------------------ export


def test_export_round_trip_and_same_seed_same_images(tmp_path):
    import tensorflow as tf

    from apps.dcgan.export import endpoints, model_name
    from apps.dcgan.model import build_generator
    from apps.dcgan.progress import to_uint8
    from shared.export import export_keras

    assert model_name("mnist") == "dcgan" and model_name("cifar10") == "dcgan_cifar10"
    generator = build_generator((28, 28, 1), 100, 8, classes=10)
    path = export_keras("dcgan", endpoints(generator), [generator], tmp_path)
    loaded = tf.saved_model.load(str(path))

    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "latent" and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 100]
    z = np.random.default_rng(1).standard_normal((5, 100)).astype("float32")
    images = serve(latent=tf.constant(z))["images"]
    assert images.dtype == tf.uint8 and images.shape == (5, 28, 28, 1)
    # The AC-GAN's class code is read from the latent vectors inside the SavedModel.
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


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mirror):
    """Two short epochs of the AC-GAN on 384 real MNIST images (k = 2), evaluated with a
    classifier trained on 2,000 images for one epoch (the metrics pipeline, not their values),
    exported (the plain DCGAN runs end to end in test_distributed_apps.py)."""
    from apps.dcgan.train import main

    base = tmp_path_factory.mktemp("dcgan")
    record = main(["--epochs", "2", "--limit", "384", "--batch-size", "32", "--k", "2",
                   "--eval-samples", "300", "--classifier-epochs", "1",
                   "--classifier-limit", "2000", "--classifier-dir", str(base / "clf"),
                   "--run-dir", str(base / "run"), "--export-dir", str(base / "models"),
                   "--score-every", "1", "--labels", "--verbose", "0"])
    return base, record


def test_run_writes_samples_animation_and_loss_curves(trained):
    import imageio.v3 as iio
    import pandas as pd

    base, record = trained
    run = base / "run"
    for name in ("config.json", "history.csv", "metrics.json", "gan_losses.png",
                 "progress.gif", "step_losses.csv", "quality.csv", "quality.png",
                 "samples_by_confidence.png", "codes.png", "samples/epoch_001.png",
                 "samples/epoch_002.png"):
        assert (run / name).is_file(), name
    assert len(iio.imread(run / "progress.gif", index=None)) == 2
    hist = pd.read_csv(run / "history.csv")
    assert {"d_loss", "g_loss", "code_loss", "label_loss", "examples_per_sec"} <= set(
        hist.columns) and len(hist) == 2
    steps = pd.read_csv(run / "step_losses.csv")
    assert len(steps) == 2 * (384 // 64) and steps["d_loss"].notna().all()
    assert steps["code_loss"].notna().all() and steps["label_loss"].notna().all()
    # The per-step values average back to the epoch's logged mean.
    assert steps[steps.epoch == 1]["g_loss"].mean() == pytest.approx(hist["g_loss"][0], rel=1e-4)
    assert list(pd.read_csv(run / "quality.csv")["epoch"]) == [1, 2]
    assert not (run / "checkpoints" / "backup").exists()
    assert not list(base.rglob("*.tmp*"))
    assert record["examples_per_sec"] > 0


def test_run_measures_sample_quality_and_exports(trained):
    import tensorflow as tf

    base, record = trained
    m = json.loads((base / "run" / "metrics.json").read_text())["metrics"]
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
    assert 0 <= m["code_label_accuracy"] <= 1
    assert (base / "clf" / "mnist-epochs1-seed42-limit2000" / "classifier.weights.h5").is_file()
    loaded = tf.saved_model.load(record["export"])
    out = loaded.signatures["sample"](count=tf.constant(4), seed=tf.constant(1, tf.int64))
    assert out["images"].shape == (4, 28, 28, 1) and out["images"].dtype == tf.uint8
    meta = json.loads((base / "models" / "dcgan" / "1" / "assets.extra" / "ksuite.json")
                      .read_text())
    assert meta["app"] == "dcgan" and meta["conditional"] is True and meta["categories"] == 10
    assert meta["latent_dim"] == 100 and meta["image_shape"] == [28, 28, 1]
    assert meta["metrics"]["inception_score"] == m["inception_score"]


def test_a_run_with_another_seed_gets_its_own_classifier(trained, capsys):
    """The defect's command pair: after the fixture's run (seed 42), a run with --seed 1 and
    the same cache root trains and caches its own classifier instead of refusing."""
    from apps.dcgan.train import main

    base, _ = trained
    record = main(["--seed", "1", "--epochs", "1", "--steps-per-epoch", "1", "--limit", "64",
                   "--batch-size", "32", "--eval-samples", "50", "--classifier-epochs", "1",
                   "--classifier-limit", "2000", "--classifier-dir", str(base / "clf"),
                   "--run-dir", str(base / "run-seed1"), "--no-export", "--verbose", "0"])
    assert np.isfinite(record["metrics"]["inception_score"])
    assert sorted(p.name for p in (base / "clf").iterdir()) == [
        "mnist-epochs1-seed1-limit2000", "mnist-epochs1-seed42-limit2000"]


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k must be a positive integer"),
    (["--patience", "3"], "early stopping is off"),
    (["--beta1", "1"], "--beta1 must be in [0, 1)"),
    (["--eval-samples", "1"], "--eval-samples must be at least 2"),
    (["--disc-layers", "6"], "--disc-layers must be at most 5 for mnist"),
    (["--kernel-size", "0"], "--kernel-size must be a positive integer"),
    (["--labels", "--latent-dim", "10"], "--labels needs --latent-dim above 10"),
])
def test_bad_settings_give_one_clear_error(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(*args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_too_few_images_for_a_batch_is_one_clear_error(tmp_path, mirror, capsys):
    from apps.dcgan.train import main

    with pytest.raises(SystemExit) as exc:
        main(["--limit", "100", "--batch-size", "64", "--k", "2", "--no-eval",
              "--run-dir", str(tmp_path / "r"), "--verbose", "0"])
    assert exc.value.code == 2
    assert "fewer than one batch" in capsys.readouterr().err
