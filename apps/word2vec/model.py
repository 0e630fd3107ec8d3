"""Skip-gram with negative sampling (Mikolov et al. 2013b), as a Keras model.

Two embedding tables: centre ("input") vectors v and context ("output") vectors u, V x d each,
initialized as word2vec.c does (v uniform in [-0.5/d, 0.5/d], u zero). For a pair (c, o) and k
negatives j drawn from U(w)^0.75 the loss is

    -log sigma(u_o . v_c) - sum_j log sigma(-u_j . v_c)

(a negative equal to the context word is skipped, as in word2vec.c and gensim).

Why a custom ``train_step`` with sparse updates: a step touches only the rows of the words in
the batch. ``tf.gather`` on the embedding variables makes the tape return ``tf.IndexedSlices``,
and plain SGD applies them with ``scatter_sub`` to those rows only -- the update word2vec.c makes,
summed over the batch instead of applied pair by pair. A dense Adam/Embedding-layer update would
rewrite both whole tables at every step (2 x V x d floats) and be orders of magnitude slower on
CPU. The gradient is the *sum* over pairs (not the mean), so the learning rate means what
word2vec.c's alpha means (0.025 per pair), and ``fit()`` still drives every shared callback.
"""

from __future__ import annotations

import keras
import tensorflow as tf

DIM = 100  # gensim Word2Vec(vector_size=100); word2vec.c demo-word.sh uses 200


@keras.saving.register_keras_serializable("ksuite")
class SkipGram(keras.Model):
    """``call((centres, contexts, negatives))`` -> (positive logits [P], negative logits [P, k])."""

    def __init__(self, vocab_size: int, dim: int = DIM, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self.centre_vectors = self.add_weight(
            shape=(self.vocab_size, self.dim), name="centre_vectors",  # v (word2vec.c syn0)
            initializer=keras.initializers.RandomUniform(-0.5 / self.dim, 0.5 / self.dim))
        self.context_vectors = self.add_weight(
            shape=(self.vocab_size, self.dim), name="context_vectors",  # u (syn1neg)
            initializer="zeros")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.pairs_tracker = keras.metrics.Sum(name="pairs")

    def call(self, inputs):
        centres, contexts, negatives = inputs
        v = tf.gather(self.centre_vectors.value, centres)  # [P, d]
        u_pos = tf.gather(self.context_vectors.value, contexts)  # [P, d]
        u_neg = tf.gather(self.context_vectors.value, negatives)  # [P, k, d]
        pos = tf.reduce_sum(v * u_pos, axis=-1)
        neg = tf.einsum("pd,pkd->pk", v, u_neg)
        return pos, neg

    @staticmethod
    def pair_losses(pos, neg, contexts, negatives):
        """Per-pair SGNS loss [P]: softplus(-x) = -log sigma(x)."""
        mask = tf.cast(tf.not_equal(negatives, contexts[:, None]), neg.dtype)
        return tf.nn.softplus(-pos) + tf.reduce_sum(mask * tf.nn.softplus(neg), axis=-1)

    def train_step(self, data):
        centres, contexts, negatives = data
        with tf.GradientTape() as tape:
            pos, neg = self((centres, contexts, negatives))
            losses = self.pair_losses(pos, neg, contexts, negatives)
            total = tf.reduce_sum(losses)  # summed: per-pair SGD steps, as word2vec.c
        variables = [self.centre_vectors.value, self.context_vectors.value]
        grads = tape.gradient(total, variables)  # tf.IndexedSlices: only the rows in the batch
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # Several replicas: Keras' SGD sums the sparse gradients across them, then updates.
            self.optimizer.apply(grads, [self.centre_vectors, self.context_vectors])
            self.loss_tracker.update_state(losses)
            self.pairs_tracker.update_state(tf.cast(tf.size(losses), tf.float32))
            return {"loss": self.loss_tracker.result(), "pairs": self.pairs_tracker.result()}
        # Plain SGD on those rows (word2vec.c's update), at the optimizer's scheduled rate.
        lr = tf.cast(self.optimizer.learning_rate, grads[0].values.dtype)
        for var, grad in zip(variables, grads):
            var.scatter_sub(tf.IndexedSlices(lr * grad.values, grad.indices, grad.dense_shape))
        self.optimizer.iterations.assign_add(1)
        self.loss_tracker.update_state(losses)
        self.pairs_tracker.update_state(tf.cast(tf.size(losses), tf.float32))
        return {"loss": self.loss_tracker.result(), "pairs": self.pairs_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.pairs_tracker]

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim}


def build_skipgram(vocab_size: int, dim: int = DIM) -> SkipGram:
    model = SkipGram(vocab_size, dim, name="skipgram")
    model.build(None)
    return model
