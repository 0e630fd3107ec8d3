"""The ``word2vec`` SavedModel: words in, vectors or neighbours out; no client-side vocabulary.

Signatures (all take raw UTF-8 words; a word is lower-cased in the graph as training was):

- ``embed`` (also ``serving_default``): ``words`` string [n] -> ``vectors`` float32 [n, d] (zero
  for an unknown word) and ``known`` bool [n].
- ``nearest``: ``words`` string [n], ``k`` int32 scalar -> ``neighbours`` string [n, k],
  ``scores`` float32 [n, k] (cosine similarity), ``known`` bool [n]. An unknown word gets empty
  strings and zero scores, not an error; k is clipped to [1, V - 1].
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class WordVectors(keras.layers.Layer):
    """Vocabulary lookups and the (unit-normalized) final vectors, tracked for export."""

    def __init__(self, words: list[str], vectors: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        vectors = np.asarray(vectors, dtype=np.float32)
        self.vocab_size, self.dim = vectors.shape
        self.to_id = keras.layers.StringLookup(vocabulary=list(words), num_oov_indices=1,
                                               name="word_to_id")  # 0 = unknown, i + 1 = word i
        self.to_word = keras.layers.StringLookup(vocabulary=list(words), num_oov_indices=1,
                                                 invert=True, name="id_to_word")
        zeros = np.zeros((1, self.dim), np.float32)
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.vectors = self.add_weight(shape=(self.vocab_size + 1, self.dim), trainable=False,
                                       name="vectors", initializer="zeros")
        self.unit_vectors = self.add_weight(shape=(self.vocab_size + 1, self.dim), trainable=False,
                                            name="unit_vectors", initializer="zeros")
        self.vectors.assign(np.concatenate([zeros, vectors]))
        self.unit_vectors.assign(np.concatenate([zeros, vectors / norms]))
        self.built = True

    def ids(self, words):
        return tf.cast(self.to_id(tf.strings.lower(words, encoding="utf-8")), tf.int32)

    def embed(self, words):
        ids = self.ids(words)
        return {"vectors": tf.gather(self.vectors, ids), "known": ids > 0}

    def nearest(self, words, k):
        ids = self.ids(words)
        k = tf.clip_by_value(tf.cast(k, tf.int32), 1, self.vocab_size - 1)
        query = tf.gather(self.unit_vectors, ids)  # [n, d]
        scores = tf.matmul(query, self.unit_vectors, transpose_b=True)  # [n, V + 1]
        # Exclude the unknown row and the word itself.
        exclude = tf.one_hot(ids, self.vocab_size + 1, on_value=True, off_value=False) | (
            tf.range(self.vocab_size + 1) == 0)[None, :]
        scores = tf.where(exclude, tf.constant(-np.inf, scores.dtype), scores)
        top, idx = tf.math.top_k(scores, k)
        known = ids > 0
        neighbours = tf.where(known[:, None], self.to_word(tf.cast(idx, tf.int64)), "")
        top = tf.where(known[:, None], top, 0.0)
        return {"neighbours": neighbours, "scores": top, "known": known}


def endpoints(layer: WordVectors) -> dict:
    """The export's signatures, on raw UTF-8 words (see the module docstring)."""
    words_spec = tf.TensorSpec([None], tf.string, name="words")
    k_spec = tf.TensorSpec([], tf.int32, name="k")
    return {
        "serving_default": (layer.embed, [words_spec]),
        "embed": (layer.embed, [words_spec]),
        "nearest": (layer.nearest, [words_spec, k_spec]),
    }
