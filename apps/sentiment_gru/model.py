"""Token ids -> Embedding (with a mask) -> GRU (optionally bidirectional) -> P(positive).

Géron (Hands-On Machine Learning, 3rd ed., ch. 16) trains ``Embedding(mask_zero=True) -> GRU(128)
-> Dense(1, sigmoid)`` on IMDB: without the mask the GRU sees reviews padded with hundreds of
zeros and stays at 50% validation accuracy; with it, 87%. ``mask_zero=True`` makes id 0 (the
padding ``TextVectorization`` adds) invisible: the GRU skips masked steps and carries its state
through them, so the output does not depend on how much padding follows a review.

keras-io's ``bidirectional_lstm_imdb`` reads the review in both directions; ``Bidirectional``
passes the mask to both directions too. Dropout before the classifier as in Chollet, Deep Learning
with Python (2nd ed., ch. 11).

Pooling over the GRU's outputs instead of keeping its last state: ``max`` keeps, per feature,
the strongest evidence anywhere in the review (Collobert et al. 2011 max-over-time; Kim 2014);
``meanmax`` concatenates the mean and the max (Howard & Ruder 2018, ULMFiT's "concat pooling").
Both ignore padded steps. ``embedding_dropout`` drops whole embedding channels for the whole
review (``SpatialDropout1D``; Gal & Ghahramani 2016, variational dropout on the input of an RNN).
"""

from __future__ import annotations

import keras

POOLINGS = ("last", "mean", "max", "meanmax")


@keras.saving.register_keras_serializable("sentiment_gru")
class MaskedGlobalPooling1D(keras.layers.Layer):
    """Mean or max over time of the steps the mask keeps. Keras' GlobalMaxPooling1D ignores
    masks (a padded step's zero output would win wherever every real output is negative), and
    GlobalAveragePooling1D divides by zero on an empty review (all steps masked: NaN). An empty
    review pools to zeros here."""

    def __init__(self, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "max"):
            raise ValueError("mode must be 'mean' or 'max'")
        self.mode = mode
        self.supports_masking = True

    def call(self, x, mask=None):
        ops = keras.ops
        if mask is None:
            return ops.mean(x, axis=1) if self.mode == "mean" else ops.max(x, axis=1)
        keep = ops.expand_dims(ops.cast(mask, x.dtype), -1)  # [batch, time, 1]
        steps = ops.sum(keep, axis=1)  # [batch, 1]
        if self.mode == "mean":
            return ops.sum(x * keep, axis=1) / ops.maximum(steps, 1.0)
        # Masked steps lose every max: -1e9, or float16's lowest finite value (-1e9 would be
        # -inf there, and 0 * -inf a NaN). ops.where, not arithmetic, keeps real steps exact.
        lowest = -65504.0 if keras.backend.standardize_dtype(x.dtype) == "float16" else -1e9
        top = ops.max(ops.where(keep > 0, x, ops.cast(lowest, x.dtype)), axis=1)
        return ops.where(steps > 0, top, ops.zeros_like(top))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable("sentiment_gru")
class ChannelSlice(keras.layers.Layer):
    """Channels ``[start, stop)`` of the last axis, mask passed through: one member's share of
    the ensemble's embedding (``build_classifier(members=K)``)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)
        self.supports_masking = True

    def call(self, x):
        return x[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable("sentiment_gru")
class MemberMean(keras.layers.Layer):
    """The ensemble's output: the mean of the members' P(positive) [batch, 1], except in
    training, where it returns each member's own [batch, K]. The loss and the accuracy then
    broadcast the labels [batch, 1] over the members and average each member's own loss, so
    every member learns to classify on its own, as the members of a bagged ensemble do (the
    course's §7.11): trained on the mean's loss instead, they would learn to make up for each
    other's errors and agree less, which is what averaging gains from."""

    def call(self, inputs, training=None):
        stacked = keras.ops.concatenate(inputs, axis=-1)
        return stacked if training else keras.ops.mean(stacked, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 1)


def _per_member(y_true, y_pred):
    """Labels [batch] or [batch, 1] broadcast to the predictions' [batch, members]."""
    y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1, 1))
    return keras.ops.broadcast_to(y_true, keras.ops.shape(y_pred)), y_pred


@keras.saving.register_keras_serializable("sentiment_gru")
def member_binary_crossentropy(y_true, y_pred):
    """Binary cross entropy of each member's P(positive) [batch, members] (``MemberMean`` in
    training), averaged over the members: each member's own loss."""
    return keras.losses.binary_crossentropy(*_per_member(y_true, y_pred))


@keras.saving.register_keras_serializable("sentiment_gru")
def member_accuracy(y_true, y_pred):
    """Binary accuracy of each member [batch, members], averaged over the members (in training;
    evaluated, the output is the ensemble's mean and this is its accuracy)."""
    return keras.ops.mean(keras.metrics.binary_accuracy(*_per_member(y_true, y_pred)), axis=-1)


def build_classifier(vocab_size: int, embedding_dim: int, units: int,
                     bidirectional: bool = True, dropout: float = 0.5,
                     pooling: str = "last", embedding_dropout: float = 0.0,
                     perturbation_point: bool = False, members: int = 1) -> keras.Model:
    """Model from int64 token ids [batch, time] (0 = padding) to P(positive) [batch, 1].

    ``pooling="last"``: the GRU's final state summarizes the review (Géron, keras-io).
    ``pooling="mean"``: the mask-aware mean of the GRU's outputs over the review's own steps,
    so evidence early in a long review is not forgotten by the last state; ``"max"`` and
    ``"meanmax"``: see the module docstring. ``perturbation_point``: mark the embeddings as
    where ``--adversarial`` perturbs (Miyato et al. 2017; shared/adversarial.py).

    ``members`` > 1: that many classifiers averaged (model averaging, the course's §7.11),
    each with its own embedding channels, GRU and head; one ``Embedding`` of
    ``members * embedding_dim`` channels holds their tables side by side, so the embedding
    keeps its one name and one initialisation. Their layers are named ``gru_1``,
    ``bidirectional_gru_1``, ... (member 1 of K); with one member, as ever."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}")
    if members < 1:
        raise ValueError("members must be >= 1")
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim * members, mask_zero=True,
                               name="embedding")(ids)
    if perturbation_point:
        from shared.adversarial import PerturbationPoint

        x = PerturbationPoint(groups=members)(x)
    if embedding_dropout:
        x = keras.layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    if members == 1:
        return keras.Model(ids, _member(x, units, bidirectional, dropout, pooling, ""),
                           name="sentiment_gru")
    outputs = [_member(ChannelSlice(i * embedding_dim, (i + 1) * embedding_dim,
                                    name=f"embedding_slice_{i + 1}")(x),
                       units, bidirectional, dropout, pooling, f"_{i + 1}")
               for i in range(members)]
    return keras.Model(ids, MemberMean(name="member_mean", dtype="float32")(outputs),
                       name="sentiment_gru")


def _member(x, units, bidirectional, dropout, pooling, suffix):
    """One classifier from embedded words to P(positive) [batch, 1]: (Bi)GRU -> pooling ->
    dropout -> sigmoid; its layer names end in ``suffix``."""
    gru = keras.layers.GRU(units, return_sequences=pooling != "last", name=f"gru{suffix}")
    if bidirectional:
        x = keras.layers.Bidirectional(gru, name=f"bidirectional_gru{suffix}")(x)
    else:
        x = gru(x)
    if pooling in ("mean", "meanmax"):
        mean = MaskedGlobalPooling1D("mean", name=f"masked_mean{suffix}")(x)
    if pooling in ("max", "meanmax"):
        top = MaskedGlobalPooling1D("max", name=f"masked_max{suffix}")(x)
    if pooling != "last":
        x = {"mean": lambda: mean, "max": lambda: top,
             "meanmax": lambda: keras.layers.Concatenate(name=f"concat_pool{suffix}")(
                 [mean, top])}[pooling]()
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"dropout{suffix}")(x)
    # The sigmoid in float32 under a mixed --precision policy (Keras mixed-precision guide).
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                              name=f"p_positive{suffix}")(x)
