"""CIFAR-10 from the official python batch files, as ``tf.data`` pipelines with augmentation.

The archive comes from the suite's data layer (``shared.data.fetch("cifar10")``: the mirror's
``cifar-10-batches-py.tar.xz`` or the official ``cifar-10-python.tar.gz``), is extracted once,
atomically, into the Keras cache, and every batch file is checked against the md5 the official
archive's files have (the values torchvision checks; ``../shared/data/SOURCES.md``) before Keras'
own ``load_batch`` reads it. Images stay uint8 in memory (150 MB for the 50,000 training images).

Split: 45,000 / 5,000 train / validation, a seeded permutation of the training batches; the 10,000
test images are used once, at the end.

Augmentation (Keras preprocessing layers) runs inside the ``tf.data`` pipeline on whole *training*
batches, mapped with ``num_parallel_calls=AUTOTUNE`` and prefetched, so it overlaps with the
training step instead of starving it; the validation/test pipelines and the exported model never
see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.data import (CIFAR10_FOLDER, CIFAR10_MD5, cifar10_folder, read_cifar10,
                         verify_cifar10)
from shared.errors import UserError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")  # batches.meta label_names
ANIMALS = (2, 3, 4, 5, 6, 7)  # bird cat deer dog frog horse: the transfer source task
VEHICLES = (0, 1, 8, 9)  # airplane automobile ship truck: the transfer target task
CLASS_SETS = {"all": tuple(range(10)), "animals": ANIMALS, "vehicles": VEHICLES}

VAL_SIZE = 5000  # 45,000 / 5,000 (the issue; as in He et al. 2016 §4.2)
# Reading and md5 verification live in the shared data layer (dcgan reads CIFAR-10 too).
FOLDER = CIFAR10_FOLDER
BATCH_MD5 = CIFAR10_MD5
verify_batches = verify_cifar10
batches_folder = cifar10_folder
read_batches = read_cifar10


def split(x, y, val_size: int = VAL_SIZE, seed: int = 42):
    """Hold out ``val_size`` training images chosen by a seeded permutation (0: none)."""
    from shared.data import split_or_keep_all

    return split_or_keep_all(x, y, val_size, seed)


def select_classes(x, y, classes: tuple[int, ...], per_class: int | None = None):
    """Keep the given classes (relabelled 0..k-1 in the given order), optionally only the first
    ``per_class`` images of each (the few-label transfer setting)."""
    keep = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        keep.append(idx[:per_class] if per_class else idx)
    idx = np.sort(np.concatenate(keep))
    remap = np.full(10, -1, "int64")
    remap[list(classes)] = np.arange(len(classes))
    return x[idx], remap[y[idx]].astype("uint8")


def load(limit: int | None = None, seed: int = 42, val_size: int = VAL_SIZE,
         classes: str = "all", per_class: int | None = None):
    """Returns (x_train, y_train), (x_val, y_val), (x_test, y_test) as uint8 arrays and the class
    names. ``limit`` keeps the first N training images (before the split); ``classes`` picks
    ``all``, ``animals`` or ``vehicles``; ``per_class`` caps the labelled training images per class
    (taken after the validation split, so validation is the same whatever the cap)."""
    if classes not in CLASS_SETS:
        raise UserError(f"unknown class set {classes!r}; choose from {', '.join(CLASS_SETS)}")
    (x_train, y_train), (x_test, y_test) = read_batches(batches_folder())
    if limit is not None:
        if limit < 20:
            raise UserError(f"--limit {limit} is too small: need at least 20 training images")
        x_train, y_train = x_train[:limit], y_train[:limit]
        val_size = min(val_size, max(10, limit // 10))
    train, val = split(x_train, y_train, val_size, seed)
    wanted = CLASS_SETS[classes]
    names = tuple(CLASS_NAMES[c] for c in wanted)
    if classes == "all" and per_class is None:
        return train, val, (x_test, y_test), names
    train = select_classes(*train, wanted, per_class)
    val = select_classes(*val, wanted)
    test = select_classes(x_test, y_test, wanted)
    return train, val, test, names


def augmenter(seed: int = 42):
    """The course's transforms as Keras preprocessing layers, applied per image to a uint8/float
    batch in 0..255: horizontal flip; pad-4-and-crop (He et al. 2016 §4.2), written as a random
    translation of up to 4 px with zero fill and nearest sampling -- the same images, but drawn
    per image (Keras 3's RandomCrop draws one offset per batch); rotation up to 15 degrees
    (0.04 turns); contrast and brightness +-20%. Output float32 in 0..255."""
    import keras

    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant",
                                       interpolation="nearest", seed=seed + 1),
        keras.layers.RandomRotation(15 / 360, fill_mode="constant", seed=seed + 2),
        keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 3),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 4),
    ], name="augmentation")


FLIP_TRANSLATE_PAD = 2  # airbench94 hyp['aug']: flip, translate 2 (reflect padding)


def flip_translate(images, pad: int = FLIP_TRANSLATE_PAD, seed: int = 42):
    """airbench94's augmentation of a float batch [n, h, w, c]: a random horizontal flip and a
    random translation of up to ``pad`` pixels each way, drawn per image, the border filled by
    reflection (Page 2018 / Jordan 2024; He et al. 2016 pad with zeros instead)."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    flip = tf.random.uniform([n], seed=seed) < 0.5
    images = tf.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    dy = tf.random.uniform([n], 0, 2 * pad + 1, dtype=tf.int32, seed=seed + 1)
    dx = tf.random.uniform([n], 0, 2 * pad + 1, dtype=tf.int32, seed=seed + 2)
    rows = dy[:, None] + tf.range(h)[None, :]  # [n, h]
    cols = dx[:, None] + tf.range(w)[None, :]  # [n, w]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # [n, h, w + 2 pad, c]
    return tf.gather(out, cols, axis=2, batch_dims=1)


# Test-time augmentation (airbench94's tta_level): 0 none, 1 mirror, 2 mirror + translate by one
# pixel up-left and down-right (reflect padding). model.tta_predict averages the views.
TTA_LEVELS = {"none": 0, "mirror": 1, "mirror_translate": 2}


def tta_views(x, level: int):
    """The views of a batch [n, 32, 32, 3] and their weights."""
    flip = x[:, :, ::-1, :]
    if level == 0:
        return [x], [1.0]
    if level == 1:
        return [x, flip], [0.5, 0.5]
    import tensorflow as tf

    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    shifted = [padded[:, :32, :32, :], padded[:, 2:, 2:, :]]
    views = [x, flip] + [v for s in shifted for v in (s, s[:, :, ::-1, :])]
    return views, [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, training: bool = False,
                 augment: bool | str = False, seed: int = 42, drop_remainder: bool = False):
    """uint8 images -> batches of (float32 0..255 images, int32 labels). Shuffled and, with
    ``augment``, augmented only when ``training``: ``"flip_translate"`` (the scratch recipe's)
    or any true value (the classic transforms of :func:`augmenter`); the evaluation path is the
    plain cast."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    if augment == "none":
        augment = False
    if training and augment == "flip_translate":
        ds = ds.map(lambda a, b: (flip_translate(a, seed=seed), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif training and augment:
        aug = augmenter(seed)
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))


def save_augmented_grid(x: np.ndarray, path: str | Path, seed: int = 42, n: int = 8,
                        names=None, augment: str = "classic") -> Path:
    """A PNG: n originals in the first row (captioned with ``names``), then three augmented
    versions of each (``augment``: ``classic`` or ``flip_translate``)."""
    from shared.plots import image_grid

    if augment == "flip_translate":
        def aug(batch, training=True):
            return flip_translate(batch, seed=seed + len(rows))
    else:
        aug = augmenter(seed)
    rows = [x[:n]]
    for _ in range(3):
        out = np.asarray(aug(x[:n].astype("float32"), training=True))
        rows.append(np.clip(out, 0, 255).astype("uint8"))
    labels = list(names or ["original"] * n) + ["augmented"] * (3 * n)
    return image_grid(np.concatenate(rows), path, labels=labels, cols=n,
                      title="training augmentation (first row: originals)")


# --------------------------------------------------------------------------------------------
# VGG16 weights: --weights imagenet | none | PATH
# --------------------------------------------------------------------------------------------

VGG16_NOTOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"  # keras.applications' name


def vgg16_weights_path(spec: str) -> Path | None:
    """Resolve ``--weights``: ``none`` -> None (random init); ``imagenet`` -> Keras' notop file
    through the suite's registry (offline mirror -> Keras cache ``$KERAS_HOME/models`` -> download,
    md5-checked: a wrong file is refused); anything else is a weights file of the same layout
    (Keras' legacy ``.h5`` as in the ImageNet file, or a ``.weights.h5`` from ``--pretrain``)."""
    from shared.data import DataError, fetch

    if spec == "none":
        return None
    if spec == "imagenet":
        try:
            return fetch("vgg16_notop")
        except DataError as exc:
            if "checksum" in str(exc):
                raise
            raise UserError(f"VGG16 ImageNet weights ({VGG16_NOTOP}) are not available here "
                            f"(not in the mirror or the Keras cache, and they cannot be "
                            f"downloaded); use --weights none or --weights PATH") from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"--weights {spec}: no such file (use imagenet, none or a weights file)")
    if not path.name.endswith(".h5"):
        raise UserError(f"--weights {spec}: expected a Keras .h5 or .weights.h5 file")
    return path


def load_vgg16_weights(base, path: Path | None) -> None:
    """Load a weights file into a ``VGG16(include_top=False)`` base; one clear error if the file
    does not fit (another architecture, a truncated file)."""
    if path is None:
        return
    try:
        base.load_weights(str(path))
    except Exception as exc:  # h5py / Keras raise many types for a file that does not fit
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not load VGG16 weights from {path}: {msg[:200]}") from None


def feature_dataset(f: np.ndarray, y: np.ndarray, batch_size: int, training: bool = False,
                    seed: int = 42):
    """Batches of precomputed VGG16 features (the fast path's stage 1)."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    ds = tf.data.Dataset.from_tensor_slices((f.astype("float32"), y.astype("int32")))
    if training:
        ds = ds.shuffle(len(f), seed=seed, reshuffle_each_iteration=True)
    return shard_policy_data(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))
