"""tiny-shakespeare as character ids, and the two ways of cutting it into training batches.

The text (1,115,394 characters, Karpathy's char-rnn ``input.txt``) is split *contiguously*: the
first 90% trains, the next 5% validates, the last 5% tests -- shuffling characters across the
split would leak whole speeches into validation. The vocabulary is the set of characters of the
training part, in sorted order, after an unknown-character slot at id 0 (the layout of
``keras.layers.StringLookup(num_oov_indices=1, mask_token=None)``, which the exported model uses
to map raw strings to the same ids).

Two batch layouts:

- **stateless windows** (:func:`window_dataset`): independent windows of ``seq_len + 1``
  characters starting every ``stride`` characters (stride 1 is Géron's "every possible window";
  stride = seq_len cuts the text into disjoint chunks), shuffled; every window starts from a zero
  LSTM state.
- **stateful TBPTT** (:func:`stateful_batches`): the text is cut into ``batch`` contiguous streams
  and batch b holds chunk b of every stream, so row i of batch b+1 continues row i of batch b and
  the LSTM state carries over between them (truncated back-propagation through time: the state
  flows forward across the chunk border, gradients stop there). Karpathy's char-rnn
  ``CharSplitLMMinibatchLoader`` and Géron's stateful Shakespeare model lay batches out this way.
"""

from __future__ import annotations

import numpy as np

from shared.data import fetch
from shared.errors import UserError

DATASET_KEY = "shakespeare.txt"
SPLIT = (0.90, 0.05, 0.05)  # the issue: contiguous 90 / 5 / 5
# nanoGPT's shakespeare_char split (data/shakespeare_char/prepare.py): the first 90% trains, the
# last 10% validates -- our validation and test parts together; its loss is measured on blocks
# of 256 characters, each from an empty context (config/train_shakespeare_char.py: block_size).
NANOGPT_BLOCK = 256
UNK = "[UNK]"  # StringLookup's out-of-vocabulary token, id 0


def read_text(path=None, limit: int | None = None) -> str:
    """The corpus as one string; ``limit`` keeps its first N characters (before the split)."""
    path = path or fetch(DATASET_KEY)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if limit is not None:
        text = text[:limit]
    return text


def split(text: str, fractions=SPLIT) -> tuple[str, str, str]:
    """Contiguous train / validation / test parts."""
    n = len(text)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return text[:a], text[a:b], text[b:]


def build_vocab(train_text: str) -> list[str]:
    """Sorted characters of the training part; id = 1 + position (id 0 is the unknown slot)."""
    return sorted(set(train_text))


def encode(text: str, vocab: list[str]) -> np.ndarray:
    """Character ids (int32) with unknown characters -> 0, as StringLookup maps them."""
    table = {c: i + 1 for i, c in enumerate(vocab)}
    return np.fromiter((table.get(c, 0) for c in text), dtype=np.int32, count=len(text))


def decode(ids, vocab: list[str]) -> str:
    chars = [UNK] + list(vocab)
    return "".join(chars[int(i)] for i in ids)


def load(limit: int | None = None, path=None):
    """Returns vocab and the (train, val, test) id arrays, plus the raw parts."""
    text = read_text(path, limit)
    train_text, val_text, test_text = split(text)
    if len(val_text) < 2 or len(test_text) < 2 or len(train_text) < 20:
        raise UserError(f"--limit {limit} leaves too little text to split 90/5/5: need at least "
                        "400 characters")
    vocab = build_vocab(train_text)
    parts = tuple(encode(t, vocab) for t in (train_text, val_text, test_text))
    return vocab, parts, (train_text, val_text, test_text)


def stream_chunk(ids: np.ndarray, batch: int) -> int:
    """Longest chunk that still gives every one of ``batch`` streams one full chunk (the
    validation and test parts are short: their chunk shrinks to fit)."""
    length = (len(ids) - 1) // batch
    if length < 1:
        raise UserError(f"the validation/test part ({len(ids)} characters) is too short for "
                        f"{batch} streams; lower --batch-size or raise --limit")
    return length


# -- stateful TBPTT layout ---------------------------------------------------------------------


def stateful_batches(ids: np.ndarray, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of shape [num_batches, batch, seq_len] such that row i of batch b+1
    continues row i of batch b: ``x[b + 1, i, 0]`` is the character after ``x[b, i, -1]``
    (which is ``y[b, i, -1]``). The text is cut into ``batch`` streams of equal length; the tail
    that does not fill a whole chunk is dropped (at most batch * seq_len characters)."""
    stream = (len(ids) - 1) // batch  # each stream needs one extra character for its target
    num_batches = stream // seq_len
    if num_batches < 1:
        raise UserError(f"{len(ids)} characters are too few for {batch} streams of "
                        f"{seq_len}-character chunks; lower --batch-size or --seq-len")
    used = num_batches * seq_len
    starts = np.arange(batch) * stream
    idx = starts[:, None] + np.arange(used + 1)[None, :]  # [batch, used + 1]
    streams = ids[idx]
    x = streams[:, :-1].reshape(batch, num_batches, seq_len).transpose(1, 0, 2)
    y = streams[:, 1:].reshape(batch, num_batches, seq_len).transpose(1, 0, 2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def stateful_dataset(ids: np.ndarray, batch: int, seq_len: int):
    """The stateful layout as a tf.data pipeline, in order (never shuffled: the order *is* the
    carried state)."""
    import tensorflow as tf

    x, y = stateful_batches(ids, batch, seq_len)
    return tf.data.Dataset.from_tensor_slices((x, y)).prefetch(tf.data.AUTOTUNE)


# -- stateless windows -------------------------------------------------------------------------


def window_starts(n: int, seq_len: int, stride: int) -> np.ndarray:
    return np.arange(0, n - seq_len, stride, dtype=np.int64)  # each window needs seq_len + 1


def window_dataset(ids: np.ndarray, batch: int, seq_len: int, stride: int, shuffle: bool = False,
                   seed: int = 42, drop_remainder: bool = False):
    """Independent windows: x = ids[s : s + seq_len], y = ids[s + 1 : s + seq_len + 1] for every
    start s = 0, stride, 2 * stride, ... The windows are gathered per batch from one in-memory
    tensor, so stride 1 (a million windows) costs no memory."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    starts = window_starts(len(ids), seq_len, stride)
    if len(starts) < 1:
        raise UserError(f"{len(ids)} characters are too few for a {seq_len}-character window; "
                        "lower --seq-len")
    text = tf.constant(ids, dtype=tf.int32)
    offsets = tf.range(seq_len + 1, dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(starts)
    if shuffle:
        ds = ds.shuffle(len(starts), seed=seed, reshuffle_each_iteration=True)
    if drop_remainder and len(starts) < batch:
        raise UserError(f"{len(ids)} characters give {len(starts)} windows, fewer than one batch "
                        f"of {batch}; lower --batch-size or --seq-len, or raise --limit")
    ds = ds.batch(batch, drop_remainder=drop_remainder)

    def gather(s):
        w = tf.gather(text, s[:, None] + offsets[None, :])
        return w[:, :-1], w[:, 1:]

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))
