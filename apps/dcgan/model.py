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
log(1 - D(G(z))), which saturates early in training when D rejects every sample). Optional
one-sided label smoothing (Salimans et al. 2016, "Improved Techniques for Training GANs", §3.4):
real targets 1 - s, fake targets stay 0.

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

An option beyond DCGAN, for the samples a classifier cannot place (``--categories``):

  [IG] InfoGAN (Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel 2016, "InfoGAN:
       Interpretable Representation Learning by Information Maximizing GANs"): a categorical
       code c beside the noise, and an auxiliary head Q(c | x) on the discriminator's features;
       both players also maximize a lower bound of the mutual information I(c; G(z, c)). On
       MNIST a 10-way code learns the digit classes without labels (§7.1). Here c is read from
       the latent vector itself (``CategoricalCode``), so z stays one N(0, I) vector of 100.
       Why it is offered: without it, the samples the evaluation classifier is least sure of
       are blends of two digits (8/9/0, 3/5, 7/9). A generator maps a connected latent space
       continuously, so between two digits it must pass through such in-between images
       (Khayatkhoei et al. 2018, "Disconnected Manifold Learning for GANs"; Tanielian et al.
       2020, "Learning disconnected manifolds: a no GAN's land"); with the code, the latent
       space falls into separate cells. Beside the code the noise is scaled down (ClusterGAN,
       Mukherjee et al. 2019, sigma = 0.1) so that the code, not the noise, decides the digit,
       and ClusterGAN's l2 term (``noise_weight``) can make the head also recover the noise,
       so that the generator does not drop it.

  [AC] AC-GAN (Odena, Olah & Shlens 2017, "Conditional Image Synthesis with Auxiliary
       Classifier GANs"): the same code and head, but the head is also a classifier of the
       *real* images, trained on their labels (``label_weight``), so code c is made to be class
       c rather than whatever Q reads most easily. As in keras' ``mnist_acgan.py`` (the
       reference example), the discriminator's head learns from the real images' labels only,
       not from the generator's samples: a head that learns to name the samples too can be
       satisfied by samples that do not look like their class (openreview.net/forum?id=
       rJXTf9Bxg); the generator still minimizes the head's cross-entropy of its code. The
       labels are used in training only: the generator takes the same latent vectors, and
       code c = argmax of z's first K coordinates picks the class. Measured on MNIST
       (``python -m benchmarks.run dcgan --budget labels``, 10 epochs, 10,000 samples): IS 9.85
       (real test images 9.78) and Fréchet distance 1.92, 2.4x the real train-vs-test one, with
       99.5% of the samples in the class of their code; on 2,000 samples after epochs 2-10,
       IS 8.69 / 9.55 / 9.69 / 9.75 / 9.82 against the plain DCGAN's 6.96 / 7.80 / 8.14 / 8.23 /
       8.46. The IS passes the real images' because the classifier is surer of the samples
       (E H(y|x) 0.014 against 0.021): they are typical digits, not the whole real variety,
       which the Fréchet distance (2.4x, not 1x) still sees.
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


NOISE_SCALE = 0.1  # [IG] ClusterGAN (Mukherjee et al. 2019) §3.1: sigma = 0.1 beside the code


@keras.saving.register_keras_serializable("ksuite")
class CategoricalCode(keras.layers.Layer):
    """[IG] Replace the first ``categories`` coordinates of z by the one-hot code of their
    argmax: c = one_hot(argmax(z_1..z_K)). For z ~ N(0, I) the argmax of K i.i.d. coordinates is
    uniform over the K categories, so c is exactly InfoGAN's categorical code Cat(K = 10, p =
    0.1) (Chen et al. 2016, §5 / Appendix C.1) and the rest of z is the incompressible noise;
    the generator still takes one N(0, I) vector of ``latent_dim`` (the export's contract).
    The map is piecewise constant in z_1..z_K: the latent space falls into K separate cells,
    one per code, so the generator need not pass through blends of two digits between them.

    The noise is multiplied by ``noise_scale`` (ClusterGAN, Mukherjee et al. 2019, §3.1: the
    noise part of the latent is N(0, sigma^2 I) with sigma = 0.1 beside the one-hot code). At
    unit scale the 90 noise coordinates carry 90x the variance of the one code coordinate into
    the first layer, the generator's digit is decided by the noise and the code is left to
    steer what Q reads most easily: measured on MNIST, it learned stroke style (code accuracy
    21% after 2 epochs, the same digit down each column of ``codes.png``)."""

    def __init__(self, categories: int, noise_scale: float = NOISE_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.categories = int(categories)
        self.noise_scale = float(noise_scale)

    def call(self, z):
        code = tf.one_hot(tf.argmax(z[:, : self.categories], axis=-1), self.categories,
                          dtype=z.dtype)
        return tf.concat([code, self.noise_scale * z[:, self.categories:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "categories": self.categories,
                "noise_scale": self.noise_scale}


def categories_of(generator: keras.Model) -> int:
    """K of the generator's ``CategoricalCode`` [IG], or 0 if it has none."""
    return next((layer.categories for layer in generator.layers
                 if isinstance(layer, CategoricalCode)), 0)


def code_of(latent, categories: int):
    """The category [IG] the generator reads from each latent vector: argmax of its first
    ``categories`` coordinates (int64 [batch])."""
    return tf.argmax(latent[:, :categories], axis=-1)


def build_generator(image_shape=(28, 28, 1), latent_dim: int = LATENT_DIM,
                    width: int = WIDTH, kernel: int = KERNEL, refine: bool = True,
                    categories: int = 0, noise_scale: float = NOISE_SCALE) -> keras.Model:
    """z [batch, latent_dim] -> images [batch, H, W, C] in [-1, 1]. ``categories`` > 0: the
    first that many coordinates of z become a one-hot categorical code [IG] and the rest is
    scaled by ``noise_scale``."""
    n, base = resolution_steps(image_shape)
    channels = image_shape[-1]
    filters = width * 2 ** (n if refine else n - 1)
    if not 0 <= categories < latent_dim:
        raise ValueError(f"categories must be in [0, latent_dim={latent_dim}), got {categories}")
    z = keras.Input((latent_dim,), name="latent")
    x = CategoricalCode(categories, noise_scale, name="categorical_code")(z) if categories else z
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
    images = keras.layers.Conv2DTranspose(channels, kernel, strides=2, padding="same",
                                          activation="tanh", kernel_initializer=_init(),
                                          name="images")(x)
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
    logit = keras.layers.Dense(1, kernel_initializer=_init(), name="logit")(x)
    return keras.Model(images, logit, name="discriminator")


CODE_HIDDEN = 128  # [IG] Chen et al. 2016, Appendix C.1 (MNIST): Q is "FC.128-BN-lReLU-FC"
INFO_WEIGHT = 1.0  # [IG] Chen et al. 2016, §7: "lambda = 1" for discrete latent codes


def build_code_head(discriminator: keras.Model, categories: int,
                    noise_dims: int = 0) -> keras.Model:
    """[IG] InfoGAN's auxiliary distribution Q(c | x): the discriminator's flattened last
    convolution -> FC 128 - BN - LeakyReLU - FC ``categories`` logits (Chen et al. 2016,
    Appendix C.1: Q shares all convolutional layers with D), followed by ``noise_dims``
    estimates of the noise coordinates of z if asked (``DCGAN(noise_weight=...)``)."""
    if categories < 2:
        raise ValueError(f"a categorical code needs at least 2 categories, got {categories}")
    features = keras.Input(discriminator.get_layer("flatten").output.shape[1:], name="features")
    x = keras.layers.Dense(CODE_HIDDEN, use_bias=False, kernel_initializer=_init(),
                           name="code_hidden")(features)
    x = _bn("code_hidden_bn")(x)
    x = keras.layers.LeakyReLU(LEAKY_SLOPE, name="code_hidden_lrelu")(x)
    logits = keras.layers.Dense(categories + noise_dims, kernel_initializer=_init(),
                                name="code_logits")(x)
    return keras.Model(features, logits, name="code_head")


def r1_penalty(discriminator: keras.Model, real, gamma: float):
    """(logits of ``real``, per-example R1 penalty gamma / 2 * ||grad_x D(x)||^2): Mescheder,
    Geiger & Nowozin (2018), "Which Training Methods for GANs do actually Converge?", §4.1 --
    the gradient penalty on real data only, with D the logit (pre-sigmoid), which makes the
    game locally convergent where the unregularized one circles. Call it inside the tape of
    the discriminator's update: the penalty's own gradient is second order."""
    with tf.GradientTape() as tape:
        tape.watch(real)
        logits = discriminator(real, training=True)
        # The gradient of the sum gives each image's own gradient, up to the coupling through
        # the batch statistics of the discriminator's batch normalization in training mode.
        total = tf.reduce_sum(logits)
    grads = tape.gradient(total, real)
    squared = tf.reduce_sum(tf.square(grads), axis=list(range(1, len(real.shape))))
    return logits, 0.5 * gamma * squared


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
    (as dcgan.torch prints them); with ``r1_gamma`` > 0, ``d_loss`` includes the penalty.

    With a ``code_head`` [IG] (InfoGAN, Chen et al. 2016): the generator reads a categorical
    code from its latent vector (``build_generator(categories=K)``) and both players also
    minimize lambda * L_I, the cross-entropy of ``code_head``'s prediction of that code from the
    discriminator's features of G(z) -- the variational lower bound of the mutual information
    I(c; G(z, c)) (§5). ``info_loss`` logs L_I; ``d_loss`` and ``g_loss`` stay the adversarial
    losses alone, so their equilibrium values still read as without the code. The head's
    weights are updated by the discriminator's optimizer.

    With ``label_weight`` > 0 [AC] (AC-GAN, Odena et al. 2017), ``fit`` takes (images, labels)
    batches: the discriminator's update minimizes ``label_weight`` times the head's
    cross-entropy of the real images' labels *instead of* L_I of the samples (keras'
    ``mnist_acgan.py``), and the generator's update keeps ``info_weight`` * L_I: its samples
    must be classified as their code. ``info_loss`` still logs L_I of the samples, and
    ``label_loss`` the head's cross-entropy on real images.

    Losses are per-example cross-entropies averaged over the *global* batch with
    ``tf.nn.compute_average_loss`` (sum over the local batch / (local batch x replicas)), because
    the optimizers *sum* the replicas' gradients under a ``tf.distribute`` strategy. With one
    replica this is the plain mean.

    Create it (and call ``compile``) inside ``strategy.scope()``: the noise source is a
    ``tf.random.Generator``, which gives each replica its own stream when created in a scope.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, seed: int = 0,
                 code_head: keras.Model | None = None, info_weight: float = INFO_WEIGHT,
                 noise_weight: float = 0.0, label_weight: float = 0.0, **kwargs):
        super().__init__(name=kwargs.pop("name", "dcgan"), **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.code_head = code_head
        self.noise_weight = float(noise_weight)
        # The generator's code layer says K; the head must give K logits, and with
        # noise_weight also one estimate per noise coordinate.
        self.categories = categories_of(generator) if code_head is not None else 0
        if code_head is not None:
            outputs = int(code_head.output_shape[-1])
            wanted = self.categories + (self.latent_dim - self.categories) * bool(noise_weight)
            if not self.categories or outputs != wanted:
                k = outputs - (self.latent_dim - self.categories) * bool(noise_weight)
                raise ValueError(f"a code head of {outputs} outputs needs a generator built with "
                                 f"categories={k}" + (" (and noise estimates for the other "
                                 "latent coordinates)" if noise_weight else ""))
            if not info_weight > 0:
                raise ValueError(f"info_weight must be > 0, got {info_weight}")
            # One pass of the discriminator gives both its logit and the features Q reads.
            self._critic = keras.Model(discriminator.inputs,
                                       [discriminator.output,
                                        discriminator.get_layer("flatten").output])
        if label_weight and code_head is None:
            raise ValueError("label_weight [AC] needs a code head (and a generator with a "
                             "categorical code)")
        if not label_weight >= 0:
            raise ValueError(f"label_weight must be >= 0, got {label_weight}")
        self.info_weight = float(info_weight)
        self.label_weight = float(label_weight)
        self.info_loss_tracker = keras.metrics.Mean(name="info_loss")
        self.label_loss_tracker = keras.metrics.Mean(name="label_loss")
        self.noise = tf.random.Generator.from_seed(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.k = 1
        self.label_smoothing = 0.0
        self.r1_gamma = 0.0
        self.built = True  # both halves are built functional models

    def compile(self, d_optimizer, g_optimizer, k: int = 1, label_smoothing: float = 0.0,
                r1_gamma: float = 0.0, **kwargs):
        """``k``: discriminator steps per generator step (Goodfellow et al. Algorithm 1; they
        used k = 1 "the least expensive option"). ``label_smoothing``: s in [0, 1), real
        targets become 1 - s (one-sided: fakes stay 0; Salimans et al. 2016 use s = 0.1).
        ``r1_gamma``: weight of the R1 gradient penalty on real images (``r1_penalty``;
        0 = off, as Radford et al.)."""
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not r1_gamma >= 0.0:
            raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
        super().compile(**kwargs)
        # The two players have their own optimizers; Keras' single `optimizer` slot stays empty
        # so that no third optimizer builds state for every variable.
        self.optimizer = None
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.k, self.label_smoothing = int(k), float(label_smoothing)
        self.r1_gamma = float(r1_gamma)
        # Built now (inside the strategy scope) so that a run resumed by BackupAndRestore finds
        # their slots to restore into.
        self.d_optimizer.build(self.d_weights)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        trackers = [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker,
                    self.d_fake_tracker]
        if self.code_head is not None:
            trackers.append(self.info_loss_tracker)
        return trackers + ([self.label_loss_tracker] if self.label_weight else [])

    @property
    def d_weights(self):
        """What the discriminator's optimizer updates: D, and Q's head [IG] if any."""
        head = self.code_head.trainable_weights if self.code_head is not None else []
        return self.discriminator.trainable_weights + head

    def judge(self, images, latent=None):
        """(D's logits of ``images``, per-example info loss L_I or 0). With a code head [IG],
        L_I is the cross-entropy of Q's prediction of the code that ``latent`` carries (plus
        ``noise_weight`` times the squared error of its estimate of the noise)."""
        if self.code_head is None or latent is None:
            return self.discriminator(images, training=True), 0.0
        logits, outputs, info = self._read(images, code_of(latent, self.categories))
        if self.noise_weight:  # ClusterGAN's l2 term: the samples must carry their noise too
            k = self.categories
            info += self.noise_weight * tf.reduce_mean(
                tf.square(outputs[:, k:] - latent[:, k:]), axis=-1)
        return logits, info

    def classify(self, real, labels):
        """[AC] (D's logits of the real images, per-example cross-entropy of the code head's
        prediction against their ``labels``)."""
        logits, _, loss = self._read(real, tf.reshape(labels, [-1]))
        return logits, loss

    def _read(self, images, codes):
        """One pass of D and its code head over ``images``: (D's logits, the head's outputs,
        per-example cross-entropy of the head's K logits against ``codes``)."""
        logits, features = self._critic(images, training=True)
        outputs = self.code_head(features, training=True)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(codes, tf.int64), logits=outputs[:, : self.categories])
        return logits, outputs, loss

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def sample_latent(self, m):
        return self.noise.normal([m, self.latent_dim])

    def discriminator_step(self, real, labels=None):
        """One ascent step of the discriminator on m real images and m samples of G (with
        ``labels`` [AC], its head also learns to classify the real images). Returns (d_loss,
        d_real, d_fake, the head's mean cross-entropy on the real images or 0)."""
        m = tf.shape(real)[0]
        latent = self.sample_latent(m)
        fake = self.generator(latent, training=True)
        with tf.GradientTape() as tape:
            penalty, label_loss = 0.0, tf.constant(0.0)
            if self.r1_gamma:
                real_logits, penalty = r1_penalty(self.discriminator, real, self.r1_gamma)
            elif not self.label_weight:
                real_logits = self.discriminator(real, training=True)
            if self.label_weight:  # [AC] the head learns the real labels, not the samples' codes
                logits, per_label = self.classify(real, labels)  # one pass gives both
                real_logits = real_logits if self.r1_gamma else logits
                fake_logits = self.discriminator(fake, training=True)
                aux, label_loss = self.label_weight * per_label, tf.reduce_mean(per_label)
            else:
                fake_logits, info = self.judge(fake, latent)
                aux = self.info_weight * info
            per_example = (_bce(1.0 - self.label_smoothing, real_logits)  # one-sided smoothing
                           + _bce(0.0, fake_logits) + penalty)
            loss = tf.nn.compute_average_loss(per_example + aux)
        weights = self.d_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return (tf.reduce_mean(per_example), tf.reduce_mean(tf.sigmoid(real_logits)),
                tf.reduce_mean(tf.sigmoid(fake_logits)), label_loss)

    def generator_step(self, m):
        """One descent step of the generator on the non-saturating loss -log D(G(z))."""
        latent = self.sample_latent(m)
        with tf.GradientTape() as tape:
            fake_logits, info = self.judge(self.generator(latent, training=True), latent)
            per_example = _bce(1.0, fake_logits)  # -log D(G(z)), Goodfellow et al. 2014 §3
            loss = tf.nn.compute_average_loss(per_example + self.info_weight * info)
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return tf.reduce_mean(per_example), tf.reduce_mean(info)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        labels = data[1] if isinstance(data, (tuple, list)) and len(data) > 1 else None
        if self.label_weight and labels is None:
            raise ValueError("label_weight [AC] trains on (images, labels) batches; got images "
                             "only")
        k = self.k
        static = real.shape[0]
        if static is not None and static % k:
            raise ValueError(f"a batch of {static} images cannot be split into k={k} "
                             "discriminator minibatches; batch k * m images")
        minibatches = tf.reshape(real, [k, -1, *real.shape[1:]])
        if self.label_weight:
            labels = tf.reshape(labels, [k, -1])
        for i in range(k):  # Algorithm 1: "for k steps do"
            d_loss, d_real, d_fake, label_loss = self.discriminator_step(
                minibatches[i], labels[i] if self.label_weight else None)
            self.d_loss_tracker.update_state(d_loss)
            self.d_real_tracker.update_state(d_real)
            self.d_fake_tracker.update_state(d_fake)
            if self.label_weight:
                self.label_loss_tracker.update_state(label_loss)
        g_loss, info = self.generator_step(tf.shape(minibatches)[1])
        self.g_loss_tracker.update_state(g_loss)
        if self.code_head is not None:
            self.info_loss_tracker.update_state(info)
        return {m.name: m.result() for m in self.metrics}


STANDING_SAMPLES = 10_000  # latent vectors for standing statistics (BigGAN's "standing stats")


def latent_batches(latent_dim: int, n: int = STANDING_SAMPLES, batch: int = 500, seed: int = 0):
    """n latent vectors from N(0, I) in float32 batches, drawn by a seeded NumPy generator."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.standard_normal((min(batch, n - i), latent_dim)).astype("float32")
            for i in range(0, n, batch)]


def standing_statistics(generator: keras.Model, latents) -> int:
    """Set every BatchNormalization layer's moving mean and variance of ``generator`` to the
    exact statistics its inputs have at inference, for the generator's *current* weights, over
    the latent batches ``latents`` (an iterable of float32 [batch, latent_dim]). Returns the
    number of layers recalibrated.

    Why: the moving averages are accumulated during training, under weights that kept changing.
    Weights averaged after the fact (``--ema``) never produced those statistics at all: Izmailov
    et al. (2018), "Averaging Weights Leads to Wider Optima and Better Generalization" (SWA),
    recompute them with one pass over the data for exactly this reason, and Brock et al. (2019,
    BigGAN, §3.1 / appendix) sample from "standing statistics" computed the same way.

    The layers are done in order, each with the ones before it already recalibrated and the
    network in inference mode, so every layer's statistics are those of the inputs it will see
    when serving (not those of a training-mode pass)."""
    import numpy as np

    layers = [layer for layer in generator.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    latents = [np.asarray(z, dtype=np.float32) for z in latents]
    if not latents:
        raise ValueError("standing_statistics needs at least one latent batch")
    inputs = generator.inputs[0] if len(generator.inputs) == 1 else generator.inputs
    probe = keras.Model(inputs, [layer.input for layer in layers])
    for i, layer in enumerate(layers):
        total = total_sq = 0.0
        count = 0
        for z in latents:
            x = np.asarray(probe(z, training=False)[i], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])  # channels last: statistics per channel
            total = total + x.sum(axis=0)
            total_sq = total_sq + np.square(x).sum(axis=0)
            count += len(x)
        mean = total / count
        variance = np.maximum(total_sq / count - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return len(layers)
