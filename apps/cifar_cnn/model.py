"""The two CIFAR-10 models: a CNN from scratch, and VGG16 with a new head for transfer learning.

Both take raw pixels (0..255, any numeric dtype, [batch, 32, 32, 3]) and do their own scaling,
so the exported SavedModel accepts the uint8 images a client has. Augmentation is *not* part of
either model: it runs in the training input pipeline only (data.py).

**Scratch CNN.** The Keras classic ``examples/cifar10_cnn.py`` (conv 32-32 / 64-64, max-pool 2x2,
dropout 0.25 after each conv stage and 0.5 before the classifier, dense 512; 75% after 25 epochs,
79% after 50) deepened to three VGG-style stages of two 3x3 convolutions (32-32, 64-64, 128-128;
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

import keras

DROPOUT_CONV = 0.25  # keras examples/cifar10_cnn.py
DROPOUT_DENSE = 0.5  # keras examples/cifar10_cnn.py
FILTERS = (32, 64, 128)  # cifar10_cnn.py's 32, 64 plus a third VGG-style stage
DENSE = 512  # keras examples/cifar10_cnn.py
HEAD_UNITS = 256  # Chollet, Deep Learning with Python, 2nd ed., §8.3 (Dense(256) head)
HEAD_DROPOUT = 0.5  # Chollet §8.3
VGG16_BLOCKS = 5


def build_scratch_cnn(num_classes: int = 10, filters=FILTERS, dense: int = DENSE,
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
