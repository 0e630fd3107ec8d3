"""MNIST (or Fashion-MNIST) from the suite's data layer, as a ``tf.data`` pipeline.

The images stay uint8 in memory (47 MB for MNIST) and are cast to float32 per batch inside the
pipeline; shuffling, gathering and casting overlap with training through ``prefetch``.
Validation is a seeded split of the training set; the test set is used once, at the end.
"""

from __future__ import annotations

import numpy as np

from shared.data import load_image_dataset, split_or_keep_all
from shared.errors import UserError

VAL_SIZE = 5000  # the usual 55,000 / 5,000 split (e.g. TensorFlow's input_data.read_data_sets)


def load(dataset: str = "mnist", limit: int | None = None, seed: int = 42,
         val_size: int = VAL_SIZE, source: str = "auto"):
    """Returns (x_train, y_train), (x_val, y_val), (x_test, y_test), all uint8 numpy arrays.
    ``limit`` keeps the first N training examples (before the validation split)."""
    (x_train, y_train), (x_test, y_test) = load_image_dataset(dataset, source)
    if limit is not None:
        if limit < 20:
            raise UserError(f"--limit {limit} is too small: need at least 20 training examples")
        x_train, y_train = x_train[:limit], y_train[:limit]
        val_size = min(val_size, max(10, limit // 10))
    train, val = split_or_keep_all(x_train, y_train, val_size, seed)
    return train, val, (x_test, y_test)


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int = 42, drop_remainder: bool = False):
    """Batches of (float32 images, int32 labels). The pipeline shuffles *indices* (a fresh
    permutation each epoch) and gathers whole batches from the uint8 arrays held as tensors:
    one gather and one cast per batch instead of per-image work, so feeding 55,000 images costs
    a few milliseconds per epoch and the model, not the input, sets the pace."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    images = tf.constant(x)
    labels = tf.constant(y.astype("int32"))
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # One gather + cast per batch is ~0.3 s of work per epoch: a single background thread (a
    # sequential map, 2 batches prefetched) keeps ahead of training. Parallel calls and
    # autotuning add threads that, on a 2-core machine, compete with the training kernels.
    ds = ds.map(lambda idx: (tf.cast(tf.gather(images, idx), tf.float32), tf.gather(labels, idx)))
    return shard_policy_data(ds.prefetch(2))
