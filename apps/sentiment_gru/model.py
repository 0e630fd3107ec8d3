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
The GRU is ``shared.recurrent.HoistedGRU``: Keras' GRU with the input half of its gates computed
for the whole review before the time loop (same weights, results equal up to rounding; a
512-unit bidirectional training step 1.23x faster on a CPU, benchmarks/recurrent_hoisting.py).
"""

from __future__ import annotations

import keras

from shared.recurrent import HoistedGRU

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


def build_classifier(vocab_size: int, embedding_dim: int, units: int,
                     bidirectional: bool = True, dropout: float = 0.5,
                     pooling: str = "last", embedding_dropout: float = 0.0,
                     perturbation_point: bool = False) -> keras.Model:
    """Model from int64 token ids [batch, time] (0 = padding) to P(positive) [batch, 1].

    ``pooling="last"``: the GRU's final state summarizes the review (Géron, keras-io).
    ``pooling="mean"``: the mask-aware mean of the GRU's outputs over the review's own steps,
    so evidence early in a long review is not forgotten by the last state; ``"max"`` and
    ``"meanmax"``: see the module docstring. ``perturbation_point``: mark the embeddings as
    where ``--adversarial`` perturbs (Miyato et al. 2017; shared/adversarial.py)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}")
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(ids)
    if perturbation_point:
        from shared.adversarial import PerturbationPoint

        x = PerturbationPoint()(x)
    if embedding_dropout:
        x = keras.layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    gru = HoistedGRU(units, return_sequences=pooling != "last", name="gru")
    x = keras.layers.Bidirectional(gru, name="bidirectional_gru")(x) if bidirectional else gru(x)
    if pooling in ("mean", "meanmax"):
        mean = MaskedGlobalPooling1D("mean", name="masked_mean")(x)
    if pooling in ("max", "meanmax"):
        top = MaskedGlobalPooling1D("max", name="masked_max")(x)
    if pooling != "last":
        x = {"mean": lambda: mean, "max": lambda: top,
             "meanmax": lambda: keras.layers.Concatenate(name="concat_pool")([mean, top])}[
            pooling]()
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    # The sigmoid in float32 under a mixed --precision policy (Keras mixed-precision guide).
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_positive")(x)
    return keras.Model(ids, outputs, name="sentiment_gru")
