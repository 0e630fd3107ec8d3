"""Images for the GAN: MNIST / Fashion-MNIST (28x28x1) or CIFAR-10 (32x32x3), as a ``tf.data``
pipeline of float32 images scaled to [-1, 1] (Radford et al. 2015 §4: "no pre-processing was
applied to training images besides scaling to the range of the tanh activation function [-1, 1]").

Images stay uint8 in memory (47 MB for MNIST, 150 MB for CIFAR-10) and are scaled per batch
inside the pipeline. A GAN has no validation set: every training image trains it; the test set is
used once, by the sample-quality evaluation (as the real reference distribution).
"""

from __future__ import annotations

import numpy as np

from shared.data import DataError, extract_archive, fetch, load_image_dataset
from shared.errors import UserError

DATASETS = {  # name -> image shape (height, width, channels)
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
}


def load_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch file: a pickled dict with ``data`` (N x 3072 uint8, channels
    first) and ``labels`` -- what Keras' (non-public, Keras 3) ``datasets.cifar.load_batch``
    reads; returned as NHWC uint8 images and uint8 labels."""
    import pickle

    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.uint8)


def load_cifar10():
    """CIFAR-10's official python batches (data_batch_1..5, test_batch) as uint8 NHWC arrays,
    from the registry's archive (mirror .tar.xz or the official .tar.gz; both hold the folder
    ``cifar-10-batches-py/``)."""
    folder = extract_archive(fetch("cifar10"), "cifar-10-batches-py")

    def read(name):
        path = folder / name
        if not path.exists():
            raise DataError(f"{path} is missing from the CIFAR-10 archive; delete {folder} "
                            "and run again")
        return load_batch(path)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return (x_train, y_train), read("test_batch")


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


def make_dataset(x: np.ndarray, batch_size: int, seed: int = 42, shuffle: bool = True):
    """Shuffled batches of ``batch_size`` images in [-1, 1]. The last partial batch is dropped
    so every step sees a full batch (batch normalization statistics, and the k-way split of a
    batch into k discriminator minibatches, need it)."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    if len(x) < batch_size:
        raise UserError(f"{len(x)} training images are fewer than one batch of {batch_size}; "
                        "raise --limit or lower --batch-size / --k")
    ds = tf.data.Dataset.from_tensor_slices(x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))
