"""The MNIST multilayer perceptron: pixels -> (Dense ReLU, regularized) x N -> softmax.

The default (train.py's ``--recipe noise``) is Rasmus et al. 2015's supervised baseline,
784 -> 1000 -> 500 -> 250 -> 250 -> 250 -> 10, regularized with additive Gaussian noise
instead of dropout: N(0, input_noise^2) on the scaled pixels, and N(0, noise^2) on every layer's
batch-normalized pre-activations (Ioffe & Szegedy 2015), the softmax's included; the noise is
on when training only (the course's §7.5, noise robustness). ``--recipe dropout`` is Srivastava
et al. 2014's dropout net with two of its 1024-unit ReLU layers (their Table 2 has three),
dropout 0.2 on the pixels and 0.5 on the units, max-norm 3 on the kernels (applied by the
runner's ``--max-norm``). ``--recipe keras`` is Keras' ``examples/mnist_mlp.py`` (Keras
1.x/2.x, F. Chollet), which "gets to 98.40% test accuracy after 20 epochs": 784 ->
Dense(512, ReLU) -> Dropout(0.2) -> Dense(512, ReLU) -> Dropout(0.2) -> Dense(10, softmax),
RMSprop.

The model takes raw pixels (0..255, any numeric dtype) and scales them itself, so that the
exported SavedModel accepts the uint8 images a client has and no preprocessing lives outside it.
"""

from __future__ import annotations

import keras

HIDDEN = (512, 512)  # keras examples/mnist_mlp.py
DROPOUT = 0.2  # keras examples/mnist_mlp.py


def build_mlp(hidden: tuple[int, ...] = HIDDEN, dropout: float = DROPOUT,
              num_classes: int = 10, image_shape=(28, 28), input_dropout: float = 0.0,
              perturbation_point: bool = False, input_noise: float = 0.0,
              noise: float = 0.0) -> keras.Model:
    """``perturbation_point``: mark the scaled pixels as where ``--adversarial`` perturbs
    (shared/adversarial.py; Goodfellow et al. 2015 perturb pixels in [0, 1]). ``noise`` > 0:
    batch-normalized layers with Gaussian noise (module docstring)."""
    inputs = keras.Input(shape=image_shape, name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)  # 0..255 -> 0..1
    if perturbation_point:
        from shared.adversarial import PerturbationPoint

        x = PerturbationPoint()(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if input_dropout:  # Srivastava et al. 2014 drop pixels too (retain 0.8)
        x = keras.layers.Dropout(input_dropout, name="dropout_input")(x)
    if input_noise:
        x = keras.layers.GaussianNoise(input_noise, name="noise_input")(x)
    for i, units in enumerate(hidden):
        if noise:
            x = _normalized_noisy(x, units, noise, f"hidden_{i + 1}")
            x = keras.layers.Activation("relu", name=f"hidden_{i + 1}_relu")(x)
        else:
            x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    # The softmax in float32 under a mixed --precision policy (the Keras mixed-precision guide).
    if noise:
        x = _normalized_noisy(x, num_classes, noise, "logits", scale=True)
        outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                     name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist_mlp")


def _normalized_noisy(x, units, noise, name, scale=False):
    """Dense (no bias) -> batch norm -> + N(0, noise^2), each layer of Rasmus et al.'s encoder
    before its activation: the norm's shift is the bias; a scale only before the softmax (a
    ReLU's scale is absorbed by the next layer's weights)."""
    x = keras.layers.Dense(units, use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(scale=scale, name=f"{name}_norm")(x)
    return keras.layers.GaussianNoise(noise, name=f"{name}_noise")(x)
