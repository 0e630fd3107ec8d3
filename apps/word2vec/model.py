"""Skip-gram with negative sampling (Mikolov et al. 2013b), as a Keras model.

Two embedding tables: v (word2vec.c's syn0, the vectors a run publishes) and u (syn1neg), V x d
each, initialized as word2vec.c does (v uniform in [-0.5/d, 0.5/d], u zero). As in word2vec.c,
a pair (centre w, context c) trains the input row v_c against the output row u_w and k negatives
n drawn from U(w)^0.75:

    -log sigma(u_w . v_c) - sum_n log sigma(-u_n . v_c)

(a negative equal to the centre is skipped, as in word2vec.c and gensim).

A batch is B centre words, each with its 2b window words and k negatives drawn once per centre
and shared by the centre's 2b pairs (Ji et al. 2016, "Parallelizing Word2Vec in Shared and
Distributed Memory": the pWord2Vec / BlazingText scheme). Every pair still meets k negatives from
U(w)^0.75, so the expected update is word2vec.c's; only pairs of one centre are correlated. The
centre's 2b window rows of v against its 1 + k output rows of u are then one small matrix
product per centre, and a step moves 2b + 1 + k rows per centre instead of 7 per pair.

The step draws the k negatives of each centre itself (``draw_negatives``: Walker's alias method,
seeded by the step number), so that the input pipeline, which runs on the other core, only cuts
windows out of the corpus. A batch of (centres, windows, negatives) with negatives drawn
elsewhere trains as well (the tests give them by hand).

Why a custom ``train_step`` with sparse updates: a step touches only the rows of the words in
the batch. It gathers them, computes word2vec.c's gradients in closed form (``gradients``) and
applies plain SGD with one ``scatter_sub`` per table to those rows only -- the update word2vec.c
makes, summed over the batch instead of applied pair by pair. A dense Adam/Embedding-layer update
would rewrite both whole tables at every step (2 x V x d floats) and be orders of magnitude slower
on CPU. The gradient is the *sum* over pairs (not the mean), so the learning rate means what
word2vec.c's alpha means (0.025 per pair), and ``fit()`` still drives every shared callback.
"""

from __future__ import annotations

import keras
import tensorflow as tf

TINY = 1e-30  # floor of sigma in the logged loss (a logit beyond +-69 counts as 69)
DIM = 100  # gensim Word2Vec(vector_size=100); word2vec.c demo-word.sh uses 200


@keras.saving.register_keras_serializable("ksuite")
class SkipGram(keras.Model):
    """``call((centres [B], windows [B, 2b], negatives [B, k]))`` -> logits [B, 2b, 1 + k]: each
    window word's v against the centre's u (column 0) and the centre's negatives' u."""

    def __init__(self, vocab_size: int, dim: int = DIM, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self.centre_vectors = self.add_weight(
            shape=(self.vocab_size, self.dim), name="centre_vectors",  # v (word2vec.c syn0)
            initializer=keras.initializers.RandomUniform(-0.5 / self.dim, 0.5 / self.dim))
        self.context_vectors = self.add_weight(
            shape=(self.vocab_size, self.dim), name="context_vectors",  # u (syn1neg)
            initializer="zeros")
        self.noise = None  # (prob, alias, k, seed): set_noise, before training
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.pairs_tracker = keras.metrics.Sum(name="pairs")

    def call(self, inputs):
        """Logits [B, 2b, 1 + k]: each window word's v against the centre's u (column 0) and the
        centre's k negatives' u (columns 1..k), one small matrix product per centre."""
        centres, windows, negatives = inputs
        targets = tf.concat([centres[:, None], negatives], axis=1)  # [B, 1 + k]
        v = tf.gather(self.centre_vectors.value, tf.maximum(windows, 0))  # [B, 2b, d]
        u = tf.gather(self.context_vectors.value, targets)  # [B, 1 + k, d]
        return tf.einsum("bmd,bjd->bmj", v, u)

    def set_noise(self, noise, negatives: int, seed: int):
        """The negative-sampling distribution ``noise`` [V] (kept as its alias table,
        data.alias_table), the number of negatives per centre and the seed of their draws."""
        from apps.word2vec.data import alias_table

        prob, alias = alias_table(noise)
        self.noise = (tf.constant(prob), tf.constant(alias), int(negatives),
                      int(seed) % (2**31 - 1))

    def draw_negatives(self, centres):
        """k negatives for each centre of this replica's rows of the global batch [B, k]. The
        draw is seeded by (seed, step) and made for the whole global batch, of which a replica
        keeps its rows, so one device and several replicas train on the same negatives."""
        if self.noise is None:
            raise ValueError("SkipGram.set_noise(...) must be called before training on "
                             "(centres, windows) batches")
        prob, alias, k, seed = self.noise
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        replica = context.replica_id_in_sync_group if context is not None else 0
        rows = centres.shape[0] or tf.shape(centres)[0]  # static on one device (XLA)
        step = tf.cast(self.optimizer.iterations, tf.int32)
        shape = [rows * replicas, k]
        column = tf.random.stateless_uniform(shape, tf.stack([seed, 2 * step]), minval=0,
                                             maxval=self.vocab_size, dtype=tf.int32)
        # u in [0, 1) from 24-bit integers: TensorFlow's float stateless_uniform gives other
        # numbers under XLA than without it (its integer draws agree), and a run compiled on one
        # device must draw what two replicas draw uncompiled.
        u = tf.random.stateless_uniform(shape, tf.stack([seed, 2 * step + 1]), minval=0,
                                        maxval=1 << 24, dtype=tf.int32)
        u = tf.cast(u, tf.float32) * (1.0 / (1 << 24))
        draws = tf.where(u < tf.gather(prob, column), column, tf.gather(alias, column))
        return tf.slice(draws, tf.stack([tf.cast(replica, tf.int32) * rows, 0]),
                        tf.stack([rows, k]))

    @staticmethod
    def slot_weights(centres, windows, negatives, dtype=tf.float32):
        """Which (window slot, target) logits count [B, 2b, 1 + k], and the labels [1, 1, 1 + k]:
        a slot counts when it holds a context word (``windows >= 0``); a negative equal to the
        centre is skipped (word2vec.c: ``if (target == word) continue``)."""
        valid = tf.cast(windows >= 0, dtype)  # [B, 2b]
        targets = tf.cast(tf.concat([tf.ones_like(centres[:, None], tf.bool),
                                     tf.not_equal(negatives, centres[:, None])], 1), dtype)
        labels = tf.one_hot([[0]], 1 + negatives.shape[1], dtype=dtype)  # the centre is positive
        return valid[:, :, None] * targets[:, None, :], labels

    def gradients(self, data):
        """Summed SGNS loss of the batch, the number of pairs, and the sparse gradients of both
        tables. Written out rather than taped (a tape gave the same numbers, more slowly): with
        x = v . u and label y (1 for the centre, 0 for a negative), -log sigma(+-x) has
        dL/dx = sigma(x) - y, so dL/dv_m = sum_j g_mj u_j and dL/du_j = sum_m g_mj v_m, which is
        word2vec.c's update (its ``g`` times -alpha), summed over the batch."""
        centres, windows, negatives = data
        targets = tf.concat([centres[:, None], negatives], axis=1)  # [B, 1 + k]
        rows = tf.maximum(windows, 0)  # an empty slot reads row 0 with weight 0
        v = tf.gather(self.centre_vectors.value, rows)  # [B, 2b, d]
        u = tf.gather(self.context_vectors.value, targets)  # [B, 1 + k, d]
        x = tf.einsum("bmd,bjd->bmj", v, u)
        weights, labels = self.slot_weights(centres, windows, negatives, x.dtype)
        sigma = tf.sigmoid(x)
        # -log sigma(x) for the centre, -log sigma(-x) = -log(1 - sigma(x)) for a negative.
        total = -tf.reduce_sum(weights * tf.math.log(
            tf.maximum(tf.where(labels > 0, sigma, 1 - sigma), TINY)))
        g = weights * (sigma - labels)  # dL/dx [B, 2b, 1 + k]
        # The same logits again, transposed [B, 1 + k, 2b]: each gradient is then a plain
        # product of row-major matrices. (XLA's CPU dot is ~4x slower when it contracts the
        # middle dimension of g, as dL/du = g^T v would; measured, see benchmarks/notes.)
        x_t = tf.einsum("bjd,bmd->bjm", u, v)
        g_t = tf.transpose(weights, [0, 2, 1]) * (tf.sigmoid(x_t) - tf.transpose(labels, [0, 2, 1]))
        grad_v = tf.einsum("bmj,bjd->bmd", g, u)
        grad_u = tf.einsum("bjm,bmd->bjd", g_t, v)
        d = x.dtype
        grads = [tf.IndexedSlices(tf.reshape(grad_v, [-1, self.dim]), tf.reshape(rows, [-1]),
                                  tf.constant([self.vocab_size, self.dim])),
                 tf.IndexedSlices(tf.reshape(grad_u, [-1, self.dim]), tf.reshape(targets, [-1]),
                                  tf.constant([self.vocab_size, self.dim]))]
        pairs = tf.reduce_sum(tf.cast(windows >= 0, d))
        return total, pairs, grads

    def train_step(self, data):
        if len(data) == 2:  # (centres, windows): the step draws the negatives
            data = (*data, self.draw_negatives(data[0]))
        total, pairs, grads = self.gradients(data)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # Several replicas: Keras' SGD sums the sparse gradients across them, then updates.
            self.optimizer.apply(grads, [self.centre_vectors, self.context_vectors])
        else:
            # Plain SGD on those rows (word2vec.c's update), at the optimizer's scheduled rate:
            # one XLA scatter per table, in place, touching only the batch's rows.
            lr = tf.cast(self.optimizer.learning_rate, grads[0].values.dtype)
            for var, grad in zip((self.centre_vectors, self.context_vectors), grads):
                var.value.scatter_sub(tf.IndexedSlices(lr * grad.values, grad.indices,
                                                       grad.dense_shape))
            self.optimizer.iterations.assign_add(1)
        # Mean loss per pair over the epoch (the summed loss weighted by the batch's pairs).
        self.loss_tracker.update_state(total / tf.maximum(pairs, 1.0), sample_weight=pairs)
        self.pairs_tracker.update_state(pairs)
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
