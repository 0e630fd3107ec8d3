"""Images for the GAN: MNIST / Fashion-MNIST (28x28x1) or CIFAR-10 (32x32x3), as a ``tf.data``
pipeline of float32 images scaled to [-1, 1] (Radford et al. 2015 §4: "no pre-processing was
applied to training images besides scaling to the range of the tanh activation function [-1, 1]").

Images stay uint8 in memory (47 MB for MNIST, 150 MB for CIFAR-10) and are scaled per batch
inside the pipeline. A GAN has no validation set: every training image trains it; the test set is
used once, by the sample-quality evaluation (as the real reference distribution).
"""

from __future__ import annotations

import numpy as np

from shared.data import load_cifar10, load_image_dataset
from shared.errors import UserError

NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 all have 10 classes

DATASETS = {  # name -> image shape (height, width, channels)
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
}


def load(dataset: str = "mnist", limit: int | None = None, source: str = "auto"):
    """Returns (x_train, y_train), (x_test, y_test): uint8 images [N, H, W, C] and labels.
    ``limit`` keeps the first N training images (the test set is never cut)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "cifar10":
        (x_train, y_train), (x_test, y_test) = load_cifar10()
    else:
        (x_train, y_train), (x_test, y_test) = load_image_dataset(dataset, source)
        x_train, x_test = x_train[..., None], x_test[..., None]
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    return (x_train, y_train), (x_test, y_test)


def to_unit_range(images):
    """uint8 0..255 -> float32 in [-1, 1] (the range of the generator's tanh)."""
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 127.5 - 1.0


def make_dataset(x: np.ndarray, batch_size: int, seed: int = 42, shuffle: bool = True,
                 y: np.ndarray | None = None):
    """Shuffled batches of ``batch_size`` images in [-1, 1] (with ``y``: (images, int32 labels)
    batches, for AC-GAN's classifying discriminator). The last partial batch is dropped so every
    step sees a full batch (batch normalization statistics, and the k-way split of a batch into
    k discriminator minibatches, need it)."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    if len(x) < batch_size:
        raise UserError(f"{len(x)} training images are fewer than one batch of {batch_size}; "
                        "raise --limit or lower --batch-size / --k")
    if y is not None and len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    labelled = y is not None
    ds = tf.data.Dataset.from_tensor_slices(
        (x, np.asarray(y, np.int32).reshape(-1)) if labelled else x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map((lambda images, labels: (to_unit_range(images), labels)) if labelled
                else to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))
