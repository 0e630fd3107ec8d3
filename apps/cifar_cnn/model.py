"""The two CIFAR-10 models: a CNN from scratch, and VGG16 with a new head for transfer learning.

Both take raw pixels (0..255, any numeric dtype, [batch, 32, 32, 3]) and do their own scaling,
so the exported SavedModel accepts the uint8 images a client has. Augmentation is *not* part of
either model: it runs in the training input pipeline only (data.py).

**Scratch CNN (``--model scratch``, the default): airbench94's network and recipe** (Keller Jordan,
"94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024; after David Page's ResNet-9 "bag of
tricks", 2018). A frozen 2x2 patch-whitening convolution computed from the training images, then
three blocks of Conv -> MaxPool -> BatchNorm -> GELU -> Conv -> BatchNorm -> GELU at widths 64,
256, 256, a global max-pool and a bias-free linear layer whose logits are scaled by 1/9. Batch norm
has no scale (fixed at 1) and momentum 0.6; its shift learns 64x faster than the other weights.
About 1.97 M parameters and 0.24 GFLOP per image forward (0.71 per training image).

**Keras classic (``--model keras_classic``).** The Keras classic ``examples/cifar10_cnn.py``
(conv 32-32 / 64-64, max-pool 2x2, dropout 0.25 after each conv stage and 0.5 before the
classifier, dense 512; 75% after 25 epochs, 79% after 50)
deepened to three VGG-style stages of two 3x3 convolutions (32-32, 64-64, 128-128;
Simonyan & Zisserman 2014), each convolution as Conv -> BatchNorm -> ReLU (Ioffe & Szegedy 2015:
BN between the affine map and the nonlinearity; the conv then needs no bias) with He-normal
initialization (He et al. 2015, for ReLU). 1.34 M parameters, ~79 MFLOPs per image forward.

**VGG16 transfer.** ``keras.applications.VGG16(include_top=False)`` as the base; inside the model,
an optional resize (``image_size``; 32 by default, see train.py for why) and VGG16's own
``preprocess_input`` (RGB -> BGR, minus the ImageNet channel means); then the new head of
Chollet's *Deep Learning with Python* ch. 8: global average pooling -> Dense(256, ReLU) ->
Dropout(0.5) -> softmax. The base is called with ``training=False`` (Chollet; keeps any
normalization layers in inference mode while fine-tuning).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# airbench94 (Jordan 2024, hyp['net'] and the model code), each value as published:
WIDTHS = (64, 256, 256)  # hyp['net']['widths'] block1..3
BN_MOMENTUM = 0.6  # Keras' weight on the old statistics = 1 - airbench's batchnorm_momentum 0.4
BN_EPSILON = 1e-12  # airbench94's BatchNorm eps
BN_SHIFT_LR = 64.0  # hyp['opt']['bias_scaler']: batch-norm biases learn 64x faster
LOGIT_SCALE = 1 / 9  # hyp['net']['scaling_factor']
WHITEN_PATCH = 2  # 2x2 patches: 12 dimensions, 24 filters (each eigenvector and its negative)
WHITEN_EPS = 5e-4  # init_whitening_conv(eps=5e-4)
WHITEN_IMAGES = 5000  # the whitening statistics come from the first 5,000 training images
# CIFAR-10's per-channel mean and standard deviation of the training images (0..1 scale), as
# airbench's loader normalizes before the whitening layer.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

DROPOUT_CONV = 0.25  # keras examples/cifar10_cnn.py
DROPOUT_DENSE = 0.5  # keras examples/cifar10_cnn.py
FILTERS = (32, 64, 128)  # cifar10_cnn.py's 32, 64 plus a third VGG-style stage
DENSE = 512  # keras examples/cifar10_cnn.py
HEAD_UNITS = 256  # Chollet, Deep Learning with Python, 2nd ed., §8.3 (Dense(256) head)
HEAD_DROPOUT = 0.5  # Chollet §8.3
VGG16_BLOCKS = 5


def build_keras_classic(num_classes: int = 10, filters=FILTERS, dense: int = DENSE,
                      dropout_conv: float = DROPOUT_CONV, dropout_dense: float = DROPOUT_DENSE,
                      name: str = "cifar_cnn") -> keras.Model:
    init = "he_normal"  # He et al. 2015
    inputs = keras.Input(shape=(32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)  # 0..255 -> 0..1
    for stage, f in enumerate(filters, start=1):
        for j in (1, 2):
            x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer=init,
                                    name=f"conv{stage}_{j}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{stage}_{j}")(x)
            x = keras.layers.ReLU(name=f"relu{stage}_{j}")(x)
        x = keras.layers.MaxPooling2D(2, 2, name=f"pool{stage}")(x)
        x = keras.layers.Dropout(dropout_conv, name=f"dropout{stage}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense, use_bias=False, kernel_initializer=init, name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn_dense")(x)
    x = keras.layers.ReLU(name="relu_dense")(x)
    x = keras.layers.Dropout(dropout_dense, name="dropout_dense")(x)
    # The softmax in float32 under a mixed --precision policy (Keras mixed-precision guide).
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable("cifar_cnn")
class TorchUniformDirac(keras.initializers.Initializer):
    """PyTorch's default conv init, U(+-1/sqrt(fan_in)), with the first ``c_in`` filters set to
    the identity (a Dirac delta at the centre tap): airbench94's ``Conv.reset_parameters``."""

    def __init__(self, dirac: bool = True, seed=None):
        self.dirac, self.seed = dirac, seed

    def __call__(self, shape, dtype=None):
        fan_in = math.prod(shape[:-1])
        bound = 1.0 / math.sqrt(fan_in)
        w = keras.random.uniform(shape, -bound, bound, dtype=dtype, seed=self.seed)
        if not self.dirac or len(shape) != 4:
            return w
        kh, kw, c_in, c_out = shape
        n = min(c_in, c_out)
        delta = np.zeros(shape, "float32")
        delta[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        keep = np.ones(shape, "float32")
        keep[..., :n] = 0.0
        return w * ops.cast(keep, w.dtype) + ops.cast(delta, w.dtype)

    def get_config(self):
        return {"dirac": self.dirac, "seed": self.seed}


@keras.saving.register_keras_serializable("cifar_cnn")
class PatchWhitening(keras.layers.Layer):
    """A frozen 2x2 convolution that whitens image patches (Coates & Ng 2011; Page 2018;
    airbench94): its 2 x 12 filters are the eigenvectors of the training patches' second-moment
    matrix scaled by 1/sqrt(eigenvalue + eps), and their negatives. Set them with
    :meth:`fit_to` before training. Its bias trains while ``bias_trainable`` is 1 (airbench94:
    the first 3 epochs), then stays where it is."""

    def __init__(self, patch: int = WHITEN_PATCH, channels: int = 3, eps: float = WHITEN_EPS,
                 **kwargs):
        super().__init__(**kwargs)
        self.patch, self.channels, self.eps = patch, channels, eps
        self.filters = 2 * patch * patch * channels

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(self.patch, self.patch, self.channels, self.filters), initializer="zeros",
            trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.bias_trainable = self.add_weight(shape=(), initializer="ones", dtype="int32",
                                              trainable=False, name="bias_trainable")

    def fit_to(self, images) -> None:
        """Set the filters from ``images`` (float [n, h, w, c], already normalized)."""
        x = np.asarray(images, "float64")
        p = self.patch
        n, h, w, c = x.shape
        patches = np.stack([x[:, i:h - p + 1 + i, j:w - p + 1 + j, :]
                            for i in range(p) for j in range(p)], axis=3)  # [n,h',w',p*p,c]
        flat = patches.reshape(-1, p * p * c)
        eigenvalues, eigenvectors = np.linalg.eigh(flat.T @ flat / len(flat))
        order = np.argsort(eigenvalues)[::-1]  # largest first, as airbench flips eigh's order
        scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + self.eps)
        kernel = np.concatenate([scaled, -scaled], axis=1).reshape(p, p, c, self.filters)
        self.kernel.assign(kernel.astype("float32"))

    def call(self, x):
        y = ops.conv(x, ops.cast(self.kernel, x.dtype), padding="valid")
        bias = ops.where(self.bias_trainable > 0, self.bias, ops.stop_gradient(self.bias))
        return y + ops.cast(bias, y.dtype)

    def get_config(self):
        return {**super().get_config(), "patch": self.patch, "channels": self.channels,
                "eps": self.eps}


@keras.saving.register_keras_serializable("cifar_cnn")
class ShiftBatchNorm(keras.layers.BatchNormalization):
    """Batch norm with its scale fixed at 1 and a learned shift whose learning rate is
    ``shift_lr`` times the optimizer's (airbench94: weight frozen, bias_scaler 64). The shift is
    stored as ``shift / sqrt(shift_lr)`` and multiplied back: for plain SGD that scales its
    step by ``shift_lr``, without a second optimizer."""

    def __init__(self, shift_lr: float = BN_SHIFT_LR, momentum: float = BN_MOMENTUM,
                 epsilon: float = BN_EPSILON, **kwargs):
        kwargs.pop("center", None)
        kwargs.pop("scale", None)
        super().__init__(momentum=momentum, epsilon=epsilon, center=False, scale=False, **kwargs)
        self.shift_lr = float(shift_lr)

    def build(self, input_shape):
        super().build(input_shape)
        self.shift = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="shift")

    def call(self, inputs, training=None, mask=None):
        y = super().call(inputs, training=training, mask=mask)
        return y + ops.cast(self.shift * math.sqrt(self.shift_lr), y.dtype)

    def get_config(self):
        return {**super().get_config(), "shift_lr": self.shift_lr}


def build_airbench_cnn(num_classes: int = 10, widths=WIDTHS, name: str = "cifar_cnn",
                       seed: int | None = None) -> keras.Model:
    """airbench94's network on raw 0..255 pixels. Call ``model.get_layer("whiten").fit_to`` with
    normalized training images (:func:`normalize`) before training."""
    inputs = keras.Input(shape=(32, 32, 3), name="pixels")
    x = keras.layers.Normalization(mean=[255 * m for m in CIFAR_MEAN],
                                   variance=[(255 * s) ** 2 for s in CIFAR_STD],
                                   dtype="float32", name="normalize")(inputs)
    x = PatchWhitening(dtype="float32", name="whiten")(x)  # float32: 0..255 inputs, tiny layer
    x = keras.layers.Activation("gelu", name="gelu0")(x)
    for b, width in enumerate(widths, start=1):
        for j in (1, 2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                    kernel_initializer=TorchUniformDirac(seed=seed),
                                    name=f"conv{b}_{j}")(x)
            if j == 1:
                x = keras.layers.MaxPooling2D(2, name=f"pool{b}")(x)
            x = ShiftBatchNorm(name=f"bn{b}_{j}")(x)
            x = keras.layers.Activation("gelu", name=f"gelu{b}_{j}")(x)
    x = keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, name="logits",
                           kernel_initializer=TorchUniformDirac(dirac=False, seed=seed))(x)
    x = keras.layers.Rescaling(LOGIT_SCALE, name="logit_scale")(x)
    # The softmax in float32 under a mixed --precision policy (Keras mixed-precision guide).
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


WHITEN_BIAS_EPOCHS = 3  # airbench94 hyp['opt']['whiten_bias_epochs']


class FreezeWhiteningBias(keras.callbacks.Callback):
    """Stops the whitening layer's bias from training after ``epochs`` epochs (airbench94). The
    switch is a model variable, so a resumed run keeps it."""

    def __init__(self, epochs: int = WHITEN_BIAS_EPOCHS, layer: str = "whiten"):
        super().__init__()
        self.epochs, self.layer = epochs, layer

    def on_epoch_begin(self, epoch, logs=None):
        layer = self.model.get_layer(self.layer)
        layer.bias_trainable.assign(int(epoch < self.epochs))
        momentums = getattr(self.model.optimizer, "momentums", None)
        if epoch >= self.epochs and momentums:
            # A zero gradient alone would still move it by its momentum for a few steps: frozen
            # means not stepped at all (airbench94 takes it out of the optimizer).
            index = self.model.optimizer._get_variable_index(layer.bias)
            momentums[index].assign(ops.zeros_like(momentums[index]))


def normalize(images) -> np.ndarray:
    """uint8/float 0..255 images -> what the whitening layer sees (per-channel standardized)."""
    x = np.asarray(images, "float32") / 255.0
    return (x - np.array(CIFAR_MEAN, "float32")) / np.array(CIFAR_STD, "float32")


def fit_whitening(model: keras.Model, x_train, n: int = WHITEN_IMAGES) -> None:
    model.get_layer("whiten").fit_to(normalize(x_train[:n]))


@keras.saving.register_keras_serializable("cifar_cnn")
def smoothed_crossentropy(y_true, y_pred, smoothing: float = 0.2):
    """Sparse cross-entropy against labels smoothed toward uniform (Szegedy et al. 2016 §7;
    airbench94's label_smoothing 0.2): (1 - s) CE(y) + s mean_k(-log p_k)."""
    log_p = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
    y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    nll = -ops.take_along_axis(log_p, y[:, None], axis=-1)[:, 0]
    return (1.0 - smoothing) * nll - smoothing * ops.mean(log_p, axis=-1)


def label_smoothing_loss(smoothing: float):
    if not smoothing:
        return "sparse_categorical_crossentropy"

    def loss(y_true, y_pred):
        return smoothed_crossentropy(y_true, y_pred, smoothing)

    loss.__name__ = "smoothed_crossentropy"
    return loss


def tta_predict(model: keras.Model, x, level: int):
    """Class probabilities averaged over ``data.tta_views`` (the geometric mean, renormalized:
    averaging log-probabilities is averaging logits, as airbench94 does)."""
    from apps.cifar_cnn.data import tta_views

    if level == 0:
        return model(x, training=False)
    views, weights = tta_views(x, level)
    n = ops.shape(x)[0]
    probs = model(ops.concatenate(views, axis=0), training=False)  # one batch of all views
    log_p = ops.log(ops.clip(ops.cast(probs, "float32"), 1e-12, 1.0))
    mean = sum(w * log_p[i * n:(i + 1) * n] for i, w in enumerate(weights))
    return ops.softmax(mean, axis=-1)


@keras.saving.register_keras_serializable("cifar_cnn")
class VGGPreprocess(keras.layers.Layer):
    """``keras.applications.vgg16.preprocess_input`` as a layer (0..255 RGB -> BGR minus the
    ImageNet means), so it lives inside the model and the SavedModel."""

    def call(self, x):
        return keras.applications.vgg16.preprocess_input(keras.ops.cast(x, "float32"))


def vgg16_base(image_size: int = 32) -> keras.Model:
    """VGG16's 13 convolutional layers with random weights (the caller loads weights)."""
    return keras.applications.VGG16(include_top=False, weights=None,
                                    input_shape=(image_size, image_size, 3))


def vgg16_input(image_size: int = 32):
    """Raw 32x32 pixels -> resized (if ``image_size`` != 32) -> VGG16 preprocessing."""
    inputs = keras.Input(shape=(32, 32, 3), name="pixels")
    x = inputs
    if image_size != 32:
        x = keras.layers.Resizing(image_size, image_size, interpolation="bilinear",
                                  name="resize")(x)
    x = VGGPreprocess(name="vgg_preprocess")(x)
    return inputs, x


def build_head(num_classes: int, features: int = 512, units: int = HEAD_UNITS,
               dropout: float = HEAD_DROPOUT) -> keras.Model:
    """The new classifier on pooled VGG16 features: Dense -> Dropout -> softmax."""
    inputs = keras.Input(shape=(features,), name="features")
    x = keras.layers.Dense(units, activation="relu", kernel_initializer="he_normal",
                           name="head_dense")(inputs)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(x)  # float32 softmax (mixed policies)
    return keras.Model(inputs, outputs, name="head")


def build_feature_extractor(base: keras.Model, image_size: int = 32) -> keras.Model:
    """Raw pixels -> 512 pooled features of the (frozen) base: the fast path computes these once."""
    inputs, x = vgg16_input(image_size)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="vgg16_features")


def build_vgg16_transfer(base: keras.Model, head: keras.Model, image_size: int = 32,
                         name: str = "cifar_vgg16") -> keras.Model:
    """The whole classifier: raw pixels -> resize -> preprocess -> base -> pooling -> head.
    ``base`` and ``head`` are shared (same variables) with the fast path's models."""
    inputs, x = vgg16_input(image_size)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = head(x)
    return keras.Model(inputs, outputs, name=name)


def set_trainable_blocks(base: keras.Model, top_blocks: int) -> None:
    """Freeze the whole base (``top_blocks=0``: stage 1, feature extraction) or unfreeze its top
    ``top_blocks`` convolutional blocks (stage 2, fine-tuning; Chollet unfreezes block 5)."""
    if not 0 <= top_blocks <= VGG16_BLOCKS:
        raise ValueError(f"top_blocks must be in 0..{VGG16_BLOCKS}")
    base.trainable = top_blocks > 0
    first = VGG16_BLOCKS - top_blocks + 1
    for layer in base.layers:
        block = int(layer.name[5]) if layer.name.startswith("block") else 0
        layer.trainable = top_blocks > 0 and block >= first


def count_params(model: keras.Model) -> dict:
    """Trainable and non-trainable parameter counts, as ``model.summary()`` reports them."""
    def total(weights):
        return int(sum(int(keras.ops.size(w)) for w in weights))

    return {"trainable": total(model.trainable_weights),
            "non_trainable": total(model.non_trainable_weights)}


def print_params(label: str, model: keras.Model) -> dict:
    """:func:`count_params`, printed (one line per model or training stage)."""
    counts = count_params(model)
    print(f"{label}: {counts['trainable']:,} trainable, {counts['non_trainable']:,} "
          f"non-trainable parameters")
    return counts


def flops_per_example(model: keras.Model) -> dict:
    """Forward multiply-adds of the Conv2D and Dense layers, counted from their shapes (one
    multiply-add = 2 FLOPs; BN, ReLU, pooling are O(activations) and left out). Training costs
    about 3x the forward pass (forward + gradients w.r.t. activations and weights)."""
    macs = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            macs += h * w * c_out * kh * kw * c_in
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            macs += c_in * c_out
    return {"forward_macs": int(macs), "forward_flops": int(2 * macs),
            "train_flops": int(6 * macs)}


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer
