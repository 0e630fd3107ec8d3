"""DCGAN: generator, discriminator, and the adversarial game as a ``keras.Model`` with its own
``train_step`` (so ``fit()``, callbacks and ``tf.distribute`` strategies work unchanged).

Architecture guidelines of Radford, Metz & Chintala (2015), "Unsupervised Representation Learning
with Deep Convolutional Generative Adversarial Networks" (§3, "Architecture guidelines for stable
Deep Convolutional GANs"), each cited where it is applied below:

  [R1] replace pooling layers with strided convolutions (discriminator) and fractional-strided
       convolutions (generator);
  [R2] use batch normalization in both the generator and the discriminator -- but not at the
       generator output layer nor at the discriminator input layer;
  [R3] remove fully connected hidden layers: the generator's first layer is a matrix
       multiplication whose result is reshaped into a 4-d tensor; the discriminator's last
       convolution is flattened and fed into a single sigmoid output;
  [R4] ReLU in the generator for all layers except the output, which uses tanh;
  [R5] LeakyReLU (slope 0.2) in the discriminator for all layers;
  [R6] (§4) weights initialized from N(0, 0.02); Adam with learning rate 0.0002 and beta1 = 0.5
       (set in train.py); images scaled to [-1, 1] (data.py); mini-batches of 128.

The training algorithm is Goodfellow et al. (2014), "Generative Adversarial Nets", Algorithm 1:
for each training iteration, k steps of the discriminator (each on a fresh minibatch of m noise
samples and m real examples), then one step of the generator on m noise samples; with the
*non-saturating* generator loss of §3 (maximize log D(G(z)) instead of minimizing
log(1 - D(G(z))), which saturates early in training when D rejects every sample).

Layer sizes: the generator projects z to a (base x base) map and doubles the resolution n times
while halving the channels (dcgan.torch, Radford's Torch code: ngf = ndf = 64, channels halve as
the resolution doubles). 28x28 images use base 7 and n = 2 (7 -> 14 -> 28); 32x32 images base 4
and n = 3 (4 -> 8 -> 16 -> 32). The discriminator doubles its channels from 64 while strided
convolutions halve the map until it is 4x4 or smaller, where Radford's 64x64 discriminator ends
(64 -> 32 -> 16 -> 8 -> 4): three at 32x32 (32 -> 16 -> 8 -> 4) and, at 28x28, also three
(28 -> 14 -> 7 -> 4), one more than the generator's two up-samplings:

  [D4] dcgan.torch's discriminator mirrors its generator, which at 28x28 stops at 7x7. Side by
       side on MNIST (same generator and seed, 2,000 samples scored every 2 epochs), the one
       ending at 4x4 (1.03M parameters against 213k, ~1.45x the time per step) led at every
       check: IS 6.65 / 7.46 / 7.97 / 8.01 / 8.23 after epochs 2-10 against 5.80 / 6.59 / 7.09 /
       7.35 / 7.45, and it passed after 10 epochs what the mirrored one reached after 36 (8.15).
       After the default 20 epochs (10,000 samples): IS 8.56 and Fréchet distance 3.5x the
       real train-vs-test one, against 8.01 and 8.8x (benchmarks/results/dcgan.jsonl; that run
       was scored by a 6-epoch classifier, which reads the same generator within 0.02 IS).
       ``--disc-layers 2`` gives the mirrored one back.

Two more choices differ from dcgan.torch, in the generator, because at 28x28 it has only two
up-sampling layers; side by side on MNIST (5,000 samples scored after each of 4 epochs, same
seed, both with the mirrored discriminator) the deeper layout led after epochs 2 and 3 (IS 6.0 /
6.6 against 4.8 / 5.7) and tied after epoch 4 (6.2 against 6.2), at about 1.7x the compute per
step; after 20 epochs (10,000 samples) it scored IS 8.01 and Fréchet distance 5.52 against 7.12
and 15.10 for dcgan.torch's layout (benchmarks/results/dcgan.jsonl):

  [K5] 5x5 kernels, as in Radford's own Theano code (Newmu/dcgan_code: 5x5 filters in every
       layer), not dcgan.torch's 4x4 (``--kernel-size``);
  [S1] a *refinement* layer: the projection has twice the channels (width * 2^n) and is followed
       by one stride-1 transposed convolution at the base resolution before the up-sampling ones
       -- the layout of TensorFlow's DCGAN tutorial for MNIST (7x7x256 -> 7x7x128 -> 14x14x64 ->
       28x28x1). ``--no-refine`` gives dcgan.torch's layout.

The AC-GAN (``--labels``) is the same DCGAN with one addition on each side:

  [AC] AC-GAN (Odena, Olah & Shlens 2017, "Conditional Image Synthesis with Auxiliary
       Classifier GANs"; keras' ``mnist_acgan.py``, the reference example): the generator reads
       a class c from its latent vector (``ClassCode``: the argmax of z's first 10 coordinates,
       one-hot, so z stays one N(0, I) vector of 100 and the export's contract is unchanged),
       and a label head on the discriminator's features classifies the *real* images, trained
       on their labels; the generator also minimizes the head's cross-entropy of c for its
       samples, so code c is made to be class c. As in ``mnist_acgan.py`` the head learns from
       the real images only: a head that learns to name the samples too can be satisfied by
       samples that do not look like their class (openreview.net/forum?id=rJXTf9Bxg). Its
       measurements are in benchmarks/REPORT.md (budget ``labels``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

LATENT_DIM = 100  # Radford et al. §4 / dcgan.torch nz = 100
WIDTH = 64  # dcgan.torch ngf = ndf = 64
KERNEL = 5  # [K5] Newmu/dcgan_code: 5x5 filters (dcgan.torch: 4x4)
LEAKY_SLOPE = 0.2  # [R5] Radford et al. §4: "the slope of the leak was set to 0.2"
INIT_STDDEV = 0.02  # [R6] Radford et al. §4: N(0, 0.02) initialization
BN_MOMENTUM = 0.9  # dcgan.torch's nn.SpatialBatchNormalization momentum 0.1 (Keras: 1 - 0.1)
BN_EPSILON = 1e-5  # dcgan.torch / Torch default


def _init():
    return keras.initializers.RandomNormal(0.0, INIT_STDDEV)  # [R6]


def _bn(name):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def resolution_steps(image_shape) -> tuple[int, int]:
    """(n, base): how many stride-2 (de)convolutions take a base x base map to the image size.
    Halve while the size is even and above 4 (28 -> 14 -> 7; 32 -> 16 -> 8 -> 4)."""
    h, w, _ = image_shape
    if h != w:
        raise ValueError(f"square images only, got {h}x{w}")
    n, base = 0, h
    while base % 2 == 0 and base > 4:
        n, base = n + 1, base // 2
    if n < 1 or base < 3:
        raise ValueError(f"cannot build a DCGAN for {h}x{w} images")
    return n, base


@keras.saving.register_keras_serializable("ksuite")
class ClassCode(keras.layers.Layer):
    """[AC] Replace the first ``classes`` coordinates of z by the one-hot code of their argmax.
    For z ~ N(0, I) the argmax is uniform over the classes, and the generator still takes one
    N(0, I) vector (the export's contract): to ask for class c, make coordinate c the largest."""

    def __init__(self, classes: int, **kwargs):
        super().__init__(**kwargs)
        self.classes = int(classes)

    def call(self, z):
        code = tf.one_hot(code_of(z, self.classes), self.classes, dtype=z.dtype)
        return tf.concat([code, z[:, self.classes:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def classes_of(generator: keras.Model) -> int:
    """The number of classes of the generator's ``ClassCode`` [AC], or 0 for a plain DCGAN."""
    return next((layer.classes for layer in generator.layers
                 if isinstance(layer, ClassCode)), 0)


def code_of(latent, classes: int):
    """The class [AC] each latent vector asks for: argmax of its first ``classes`` coordinates."""
    return tf.argmax(latent[:, :classes], axis=-1)


def build_generator(image_shape=(28, 28, 1), latent_dim: int = LATENT_DIM,
                    width: int = WIDTH, kernel: int = KERNEL, refine: bool = True,
                    classes: int = 0) -> keras.Model:
    """z [batch, latent_dim] -> images [batch, H, W, C] in [-1, 1]. ``classes`` > 0 (AC-GAN):
    the first that many coordinates of z become a one-hot class code [AC]."""
    n, base = resolution_steps(image_shape)
    channels = image_shape[-1]
    filters = width * 2 ** (n if refine else n - 1)
    if not 0 <= classes < latent_dim:
        raise ValueError(f"classes must be in [0, latent_dim={latent_dim}), got {classes}")
    z = keras.Input((latent_dim,), name="latent")
    x = ClassCode(classes, name="class_code")(z) if classes else z
    # [R3] first layer: a matrix multiplication (project), reshaped into a 4-d tensor. No bias:
    # the batch normalization that follows has its own offset.
    x = keras.layers.Dense(base * base * filters, use_bias=False, kernel_initializer=_init(),
                           name="project")(x)
    x = keras.layers.Reshape((base, base, filters), name="reshape")(x)
    x = _bn("project_bn")(x)  # [R2]
    x = keras.layers.ReLU(name="project_relu")(x)  # [R4]
    if refine:  # [S1] one stride-1 layer at the base resolution
        filters //= 2
        x = keras.layers.Conv2DTranspose(filters, kernel, strides=1, padding="same",
                                         use_bias=False, kernel_initializer=_init(),
                                         name="refine")(x)
        x = _bn("refine_bn")(x)  # [R2]
        x = keras.layers.ReLU(name="refine_relu")(x)  # [R4]
    for i in range(1, n):
        filters //= 2
        # [R1] fractional-strided (transposed) convolution doubles the resolution.
        x = keras.layers.Conv2DTranspose(filters, kernel, strides=2, padding="same",
                                         use_bias=False, kernel_initializer=_init(),
                                         name=f"deconv_{i}")(x)
        x = _bn(f"deconv_{i}_bn")(x)  # [R2]
        x = keras.layers.ReLU(name=f"deconv_{i}_relu")(x)  # [R4]
    # [R2] no batch normalization at the output layer; [R4] tanh output.
    # The tanh in float32 under a mixed --precision policy (Keras mixed-precision guide).
    images = keras.layers.Conv2DTranspose(channels, kernel, strides=2, padding="same",
                                          activation="tanh", kernel_initializer=_init(),
                                          dtype="float32", name="images")(x)
    return keras.Model(z, images, name="generator")


def _halvings(size: int, until: int) -> int:
    """Stride-2 "same" convolutions (each ceil(size / 2)) until the map is ``until`` or smaller;
    at least one."""
    n = 0
    while size > until:
        n, size = n + 1, -(-size // 2)
    return max(1, n)


def max_disc_layers(image_shape) -> int:
    """Stride-2 "same" convolutions until the map is 1x1 (28 or 32 -> 5)."""
    return _halvings(image_shape[0], 1)


def default_disc_layers(image_shape) -> int:
    """[D4] Stride-2 "same" convolutions until the map is 4x4 or smaller (28 or 32 -> 3)."""
    return _halvings(image_shape[0], 4)


def build_discriminator(image_shape=(28, 28, 1), width: int = WIDTH,
                        kernel: int = KERNEL, layers: int | None = None) -> keras.Model:
    """images [batch, H, W, C] in [-1, 1] -> one logit per image (log-odds of "real").

    ``layers`` strided convolutions, channels doubling from ``width``; None: until the map is
    4x4 [D4] (28x28 -> 14 -> 7 -> 4, 32x32 -> 16 -> 8 -> 4, both 3).

    The logit is the sigmoid output's pre-activation [R3]; the losses apply the sigmoid inside
    the cross-entropy (``sigmoid_cross_entropy_with_logits``), which is the same function,
    computed without overflow."""
    resolution_steps(image_shape)  # the same image sizes as the generator
    n = default_disc_layers(image_shape) if layers is None else layers
    most = max_disc_layers(image_shape)
    if not 1 <= n <= most:
        raise ValueError(f"a {image_shape[0]}x{image_shape[1]} discriminator takes 1 to "
                         f"{most} strided convolutions, got {n}")
    images = keras.Input(image_shape, name="images")
    # [R1] strided convolutions instead of pooling; [R2] no batch normalization on the input
    # layer; [R5] LeakyReLU 0.2.
    x = keras.layers.Conv2D(width, kernel, strides=2, padding="same", kernel_initializer=_init(),
                            name="conv_1")(images)
    x = keras.layers.LeakyReLU(LEAKY_SLOPE, name="conv_1_lrelu")(x)
    filters = width
    for i in range(2, n + 1):
        filters *= 2
        x = keras.layers.Conv2D(filters, kernel, strides=2, padding="same", use_bias=False,
                                kernel_initializer=_init(), name=f"conv_{i}")(x)
        x = _bn(f"conv_{i}_bn")(x)  # [R2]
        x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"conv_{i}_lrelu")(x)  # [R5]
    # [R3] flatten the last convolution into a single (sigmoid) output.
    x = keras.layers.Flatten(name="flatten")(x)
    logit = keras.layers.Dense(1, kernel_initializer=_init(), dtype="float32",
                               name="logit")(x)  # float32 under a mixed --precision policy
    return keras.Model(images, logit, name="discriminator")


# [AC] The label head is InfoGAN's auxiliary head Q (Chen et al. 2016, Appendix C.1, MNIST:
# "FC.128-BN-lReLU-FC"), sharing every convolution with D; keras' mnist_acgan.py sums the real
# images' label loss with D's loss at equal weights (Odena et al. 2017, eq. 3-4: L_S + L_C).
LABEL_HIDDEN = 128
LABEL_WEIGHT = 1.0


def build_label_head(discriminator: keras.Model, classes: int) -> keras.Model:
    """[AC] D's flattened last convolution -> FC 128 - BN - LeakyReLU - FC ``classes`` logits."""
    if classes < 2:
        raise ValueError(f"a label head needs at least 2 classes, got {classes}")
    features = keras.Input(discriminator.get_layer("flatten").output.shape[1:], name="features")
    x = keras.layers.Dense(LABEL_HIDDEN, use_bias=False, kernel_initializer=_init(),
                           name="label_hidden")(features)
    x = _bn("label_hidden_bn")(x)
    x = keras.layers.LeakyReLU(LEAKY_SLOPE, name="label_hidden_lrelu")(x)
    logits = keras.layers.Dense(classes, kernel_initializer=_init(), dtype="float32",
                                name="label_logits")(x)  # float32 under a mixed policy
    return keras.Model(features, logits, name="label_head")


def _bce(labels, logits):
    """Per-example binary cross-entropy of sigmoid(logits) against ``labels``: shape [batch]."""
    logits = tf.reshape(logits, [-1])
    labels = tf.broadcast_to(tf.cast(labels, logits.dtype), tf.shape(logits))
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


class DCGAN(keras.Model):
    """The adversarial game of Goodfellow et al. (2014), Algorithm 1, as a Keras model.

    ``fit(dataset)`` where each element is a batch of k * m real images in [-1, 1]: every
    ``train_step`` splits it into k minibatches of m and performs k discriminator updates, one
    per minibatch, then one generator update on m fresh noise samples (the structure of
    keras-io's "DCGAN overriding train_step" example, extended to k steps). Logs ``d_loss``,
    ``g_loss`` and the discriminator's mean outputs ``d_real`` = D(x) and ``d_fake`` = D(G(z))
    (as dcgan.torch prints them).

    Losses are per-example cross-entropies averaged over the *global* batch with
    ``tf.nn.compute_average_loss`` (sum over the local batch / (local batch x replicas)), because
    the optimizers *sum* the replicas' gradients under a ``tf.distribute`` strategy. With one
    replica this is the plain mean.

    Create it (and call ``compile``) inside ``strategy.scope()``: the noise source is a
    ``tf.random.Generator``, which gives each replica its own stream when created in a scope.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, seed: int = 0,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", "dcgan"), **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.noise = tf.random.Generator.from_seed(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.k = 1
        self.built = True  # both halves are built functional models

    def compile(self, d_optimizer, g_optimizer, k: int = 1, **kwargs):
        """``k``: discriminator steps per generator step (Goodfellow et al. Algorithm 1; they
        used k = 1, "the least expensive option"). Under ``mixed_float16`` pass optimizers
        wrapped in a ``LossScaleOptimizer`` (shared.precision.loss_scaled): the steps scale
        their losses with ``scale_loss`` (a no-op otherwise)."""
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        super().compile(**kwargs)
        # The two players have their own optimizers; Keras' single `optimizer` slot stays empty
        # so that no third optimizer builds state for every variable.
        self.optimizer = None
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.k = int(k)
        # Built now (inside the strategy scope) so that a run resumed by BackupAndRestore finds
        # their slots to restore into.
        self.d_optimizer.build(self.d_weights)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker,
                self.d_fake_tracker]

    @property
    def d_weights(self):
        """What the discriminator's optimizer updates."""
        return self.discriminator.trainable_weights

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def sample_latent(self, m):
        return self.noise.normal([m, self.latent_dim])

    def _update(self, optimizer, tape, loss, weights):
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))

    def discriminator_step(self, real):
        """One ascent step of the discriminator on m real images and m samples of G. Returns
        (d_loss, D(x), D(G(z)))."""
        fake = self.generator(self.sample_latent(tf.shape(real)[0]), training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            per_example = _bce(1.0, real_logits) + _bce(0.0, fake_logits)
            loss = tf.nn.compute_average_loss(per_example)
            loss = self.d_optimizer.scale_loss(loss)  # mixed_float16: loss scaling
        self._update(self.d_optimizer, tape, loss, self.d_weights)
        return (tf.reduce_mean(per_example), tf.reduce_mean(tf.sigmoid(real_logits)),
                tf.reduce_mean(tf.sigmoid(fake_logits)))

    def generator_step(self, m):
        """One descent step of the generator on the non-saturating loss -log D(G(z))."""
        with tf.GradientTape() as tape:
            fake_logits = self.discriminator(
                self.generator(self.sample_latent(m), training=True), training=True)
            per_example = _bce(1.0, fake_logits)  # -log D(G(z)), Goodfellow et al. 2014 §3
            loss = tf.nn.compute_average_loss(per_example)
            loss = self.g_optimizer.scale_loss(loss)  # mixed_float16: loss scaling
        self._update(self.g_optimizer, tape, loss, self.generator.trainable_weights)
        return tf.reduce_mean(per_example)

    def _minibatches(self, tensor):
        """[k * m, ...] -> [k, m, ...]: one minibatch per discriminator step of Algorithm 1."""
        static = tensor.shape[0]
        if static is not None and static % self.k:
            raise ValueError(f"a batch of {static} images cannot be split into k={self.k} "
                             "discriminator minibatches; batch k * m images")
        return tf.reshape(tensor, [self.k, -1, *tensor.shape[1:]])

    def _log_d(self, d_loss, d_real, d_fake):
        self.d_loss_tracker.update_state(d_loss)
        self.d_real_tracker.update_state(d_real)
        self.d_fake_tracker.update_state(d_fake)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        minibatches = self._minibatches(real)
        for i in range(self.k):  # Algorithm 1: "for k steps do"
            self._log_d(*self.discriminator_step(minibatches[i]))
        self.g_loss_tracker.update_state(self.generator_step(tf.shape(minibatches)[1]))
        return {m.name: m.result() for m in self.metrics}


class ACGAN(DCGAN):
    """[AC] The DCGAN with a class code in the generator (``build_generator(classes=K)``) and a
    label head on the discriminator (``build_label_head``). ``fit`` takes (images, labels)
    batches. The discriminator's update adds ``label_weight`` x the head's cross-entropy of the
    real images' labels (logged as ``label_loss``); the generator's update adds the head's
    cross-entropy of its samples' codes (``code_loss``). ``d_loss`` and ``g_loss`` stay the
    adversarial losses alone, so they read as the plain DCGAN's. The discriminator's optimizer
    updates the head."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model,
                 label_head: keras.Model, seed: int = 0, label_weight: float = LABEL_WEIGHT,
                 **kwargs):
        classes, outputs = classes_of(generator), int(label_head.output_shape[-1])
        if classes != outputs:
            raise ValueError(f"a label head of {outputs} classes needs a generator built with "
                             f"classes={outputs}, got {classes}")
        if not label_weight > 0:
            raise ValueError(f"label_weight must be > 0, got {label_weight}")
        super().__init__(generator, discriminator, seed=seed, **kwargs)
        self.classes = classes
        self.label_head = label_head
        self.label_weight = float(label_weight)
        # One pass of the discriminator gives both its logit and the features the head reads.
        self._critic = keras.Model(discriminator.inputs,
                                   [discriminator.output,
                                    discriminator.get_layer("flatten").output])
        self.code_loss_tracker = keras.metrics.Mean(name="code_loss")
        self.label_loss_tracker = keras.metrics.Mean(name="label_loss")

    @property
    def metrics(self):
        return super().metrics + [self.code_loss_tracker, self.label_loss_tracker]

    @property
    def d_weights(self):
        return self.discriminator.trainable_weights + self.label_head.trainable_weights

    def classify(self, images, labels):
        """One pass of D and its label head: (D's logits, per-example cross-entropy of the
        head's logits against ``labels``)."""
        logits, features = self._critic(images, training=True)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(tf.reshape(labels, [-1]), tf.int64),
            logits=self.label_head(features, training=True))
        return logits, loss

    def discriminator_step(self, real, labels):
        """D's step with the head learning the real labels (not the samples' codes: only the
        real images reach it). Returns (d_loss, D(x), D(G(z)), label loss)."""
        fake = self.generator(self.sample_latent(tf.shape(real)[0]), training=True)
        with tf.GradientTape() as tape:
            real_logits, per_label = self.classify(real, labels)
            fake_logits = self.discriminator(fake, training=True)
            per_example = _bce(1.0, real_logits) + _bce(0.0, fake_logits)
            loss = tf.nn.compute_average_loss(per_example + self.label_weight * per_label)
            loss = self.d_optimizer.scale_loss(loss)  # mixed_float16: loss scaling
        self._update(self.d_optimizer, tape, loss, self.d_weights)
        return (tf.reduce_mean(per_example), tf.reduce_mean(tf.sigmoid(real_logits)),
                tf.reduce_mean(tf.sigmoid(fake_logits)), tf.reduce_mean(per_label))

    def generator_step(self, m):
        """G's step: fool D, and make the head read each sample as the class of its code.
        Returns (g_loss, code loss)."""
        latent = self.sample_latent(m)
        with tf.GradientTape() as tape:
            fake_logits, per_code = self.classify(self.generator(latent, training=True),
                                                  code_of(latent, self.classes))
            per_example = _bce(1.0, fake_logits)
            loss = tf.nn.compute_average_loss(per_example + per_code)
            loss = self.g_optimizer.scale_loss(loss)  # mixed_float16: loss scaling
        self._update(self.g_optimizer, tape, loss, self.generator.trainable_weights)
        return tf.reduce_mean(per_example), tf.reduce_mean(per_code)

    def train_step(self, data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise ValueError("the AC-GAN trains on (images, labels) batches; got images only")
        real, labels = self._minibatches(data[0]), tf.reshape(data[1], [self.k, -1])
        for i in range(self.k):
            d_loss, d_real, d_fake, label_loss = self.discriminator_step(real[i], labels[i])
            self._log_d(d_loss, d_real, d_fake)
            self.label_loss_tracker.update_state(label_loss)
        g_loss, code_loss = self.generator_step(tf.shape(real)[1])
        self.g_loss_tracker.update_state(g_loss)
        self.code_loss_tracker.update_state(code_loss)
        return {m.name: m.result() for m in self.metrics}
