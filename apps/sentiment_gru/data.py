"""The raw Large Movie Review Dataset (Maas et al. 2011) as text, a vocabulary, and ``tf.data``.

``aclImdb/{train,test}/{neg,pos}/*.txt`` holds 12,500 reviews per folder. Keras' own
``text_dataset_from_directory`` reads them (``class_names=["neg", "pos"]`` so that label 1 is
positive and the official archive's unlabelled ``train/unsup`` is never read). The 25,000
training reviews are shuffled with the seed and all train by default (``--val-size N`` holds the
last N of them out for validation: 22,500 / 2,500 with N = 2,500); the 25,000 test reviews are
read once, for the final evaluation.

Text becomes token ids through a ``TextVectorization`` layer adapted on the *training* reviews
only (the validation and test reviews never shape the vocabulary). The same layer goes into the
exported SavedModel, so a client sends the raw review and nothing else.

The ``tf.data`` pipeline vectorizes per review and groups reviews of similar length into the same
batch (``bucket_by_sequence_length``), so a batch is padded to its own longest review instead of
to ``--sequence-length``: the GRU runs fewer padded steps, and the mask makes the padding
invisible to it either way.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np

from shared.errors import UserError

CLASS_NAMES = ("neg", "pos")  # folder names; label 1 = positive
LABELS = ("negative", "positive")  # what the exported model answers

_PUNCTUATION = f"[{re.escape(string.punctuation)}]"


def standardize(texts):
    """Lower case (UTF-8 aware), ``<br />`` tags to spaces, ASCII punctuation removed -- the
    ``custom_standardization`` of keras-io's ``text_classification_from_scratch`` example."""
    import tensorflow as tf

    text = tf.strings.lower(texts, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    return tf.strings.regex_replace(text, _PUNCTUATION, "")


def dataset_dir(data_dir: str | Path | None = None) -> Path:
    """The extracted ``aclImdb/`` folder: ``data_dir`` if given, else the registry's verified
    archive (offline mirror -> Keras cache -> download), extracted once next to it."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
    else:
        from shared.data import extract_archive, fetch

        root = extract_archive(fetch("aclImdb"), "aclImdb")
    for split in ("train", "test"):
        for cls in CLASS_NAMES:
            if not (root / split / cls).is_dir():
                raise UserError(f"{root / split / cls} not found: expected the aclImdb layout "
                                f"{{train,test}}/{{neg,pos}}/*.txt")
    return root


def read_reviews(folder: Path, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """All reviews of ``folder/{neg,pos}`` as (bytes array, int32 labels), in the seeded order of
    ``text_dataset_from_directory`` when ``shuffle``."""
    import keras

    ds = keras.utils.text_dataset_from_directory(
        str(folder), labels="inferred", label_mode="int", class_names=list(CLASS_NAMES),
        batch_size=1024, shuffle=shuffle, seed=seed, verbose=False,
    )
    texts, labels = [], []
    for x, y in ds.as_numpy_iterator():
        texts.append(x)
        labels.append(y)
    if not texts:
        raise UserError(f"no reviews (*.txt) found under {folder}/{{neg,pos}}")
    return np.concatenate(texts), np.concatenate(labels).astype("int32")


def load(limit: int | None = None, seed: int = 42, val_size: int = 0,
         data_dir: str | Path | None = None, test_limit: int | None = None):
    """Returns (x_train, y_train), (x_val, y_val), (x_test, y_test): numpy arrays of raw review
    bytes and int32 labels (0 negative, 1 positive). ``limit`` keeps the first N training reviews
    of the seeded shuffle (before the validation split); ``test_limit`` the first N test reviews
    of a seeded shuffle (for quick checks only: the benchmark uses all 25,000)."""
    root = dataset_dir(data_dir)
    x, y = read_reviews(root / "train", seed, shuffle=True)
    if limit is not None:
        if limit < 20:
            raise UserError(f"--limit {limit} is too small: need at least 20 training reviews")
        x, y = x[:limit], y[:limit]
        val_size = min(val_size, max(10, len(x) // 10)) if val_size else 0
    if not 0 <= val_size < len(x):
        raise UserError(f"validation size {val_size} must be between 0 and {len(x) - 1}")
    # The loader already shuffled with the seed: the last val_size reviews are the validation set
    # (none with val_size 0: every training review trains).
    cut = len(x) - val_size
    train, val = (x[:cut], y[:cut]), (x[cut:], y[cut:])
    x_test, y_test = read_reviews(root / "test", seed, shuffle=test_limit is not None)
    if test_limit is not None:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    return train, val, (x_test, y_test)


def make_vectorizer(texts: np.ndarray, max_tokens: int, sequence_length: int,
                    batch_size: int = 512):
    """A ``TextVectorization`` layer (ids 0 = padding, 1 = out of vocabulary) adapted on
    ``texts``: the ``max_tokens - 2`` most frequent words of the training reviews. Reviews are cut
    to their first ``sequence_length`` words."""
    import keras
    import tensorflow as tf

    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=standardize,
        split="whitespace",
        output_mode="int",
        output_sequence_length=sequence_length,
        name="vectorizer",
    )
    layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(batch_size))
    return layer


def make_dataset(vectorizer, x: np.ndarray, y: np.ndarray, batch_size: int,
                 shuffle: bool = False, seed: int = 42, bucket: bool = True):
    """(token ids [batch, time], labels [batch]) batches with a known number of batches
    (``len(ds)``). With ``bucket``, reviews of similar length share a batch and the batch is
    padded to its longest review only; the shuffle varies which reviews meet, epoch by epoch."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    sequence_length = int(vectorizer.get_config()["output_sequence_length"])
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if not bucket:
        ds = ds.batch(batch_size).map(lambda t, l: (vectorizer(t), l),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))

    def to_ids(text, label):
        ids = vectorizer(text[None])[0]  # [sequence_length], zero-padded at the end
        length = tf.reduce_sum(tf.cast(ids != 0, tf.int32))
        return ids[: tf.maximum(length, 1)], label  # drop the padding; keep >= 1 step

    ds = ds.map(to_ids, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    step = max(min(sequence_length // 8, 64), 1)  # buckets at most 64 words wide
    boundaries = list(range(step, sequence_length + 1, step))
    ds = ds.bucket_by_sequence_length(
        lambda ids, _: tf.shape(ids)[0],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padded_shapes=([None], []),
    )
    # The number of batches depends on how the lengths fall into buckets: count them once
    # (one vectorizing pass) so that Keras, the schedule and the throughput log know it.
    batches = int(ds.reduce(0, lambda n, _: n + 1))
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))


# -- unsupervised pretraining of the embeddings ------------------------------------------------


def write_corpus(texts: np.ndarray, path: str | Path) -> Path:
    """The reviews, standardized exactly as the vectorizer sees them, one per line: the corpus
    the suite's word2vec app learns the embeddings from (``--embeddings word2vec``)."""
    from shared.io import atomic_write_text

    lines = [t.decode("utf-8", "replace") for t in standardize(texts).numpy()]
    return atomic_write_text(path, "\n".join(" ".join(line.split()) for line in lines) + "\n")


def read_word2vec_text(path: str | Path) -> dict[str, np.ndarray]:
    """word -> vector from word2vec.c's text format (``V d`` header, then ``word v1 .. vd``),
    as the word2vec app writes it (``vectors.txt``) and gensim/GloVe converters produce it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--embeddings {path}: no such file (a word2vec text file, or 'word2vec' "
                        "to train one on the training reviews)")
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().split()
        if len(header) != 2 or not all(h.isdigit() for h in header):
            raise UserError(f"--embeddings {path}: not word2vec text format (first line must be "
                            "'<words> <dim>')")
        dim = int(header[1])
        for line in f:
            parts = line.rstrip().split(" ")
            if len(parts) == dim + 1:
                out[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    if not out:
        raise UserError(f"--embeddings {path}: no {dim}-dimensional vectors found")
    return out


def embedding_matrix(vocabulary: list[str], vectors: dict[str, np.ndarray], dim: int,
                     seed: int = 42) -> tuple[np.ndarray, float]:
    """Initial Embedding weights for the vectorizer's ``vocabulary``: the pretrained vector of each
    word it covers, scaled to unit norm; Keras' default uniform(-0.05, 0.05) for the others
    (padding, OOV and uncovered words). Returns the matrix and the fraction covered."""
    some = next(iter(vectors.values()))
    if some.shape[0] != dim:
        raise UserError(f"the pretrained vectors have {some.shape[0]} dimensions but "
                        f"--embedding-dim is {dim}")
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(-0.05, 0.05, (len(vocabulary), dim)).astype(np.float32)
    hits = 0
    for i, word in enumerate(vocabulary):
        v = vectors.get(word)
        if v is not None and i >= 2:
            matrix[i] = v / max(float(np.linalg.norm(v)), 1e-8)
            hits += 1
    return matrix, hits / max(1, len(vocabulary) - 2)

