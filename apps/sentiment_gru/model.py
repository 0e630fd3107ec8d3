"""Token ids -> Embedding (with a mask) -> GRU (optionally bidirectional) -> P(positive).

Géron (Hands-On Machine Learning, 3rd ed., ch. 16) trains ``Embedding(mask_zero=True) -> GRU(128)
-> Dense(1, sigmoid)`` on IMDB: without the mask the GRU sees reviews padded with hundreds of
zeros and stays at 50% validation accuracy; with it, 87%. ``mask_zero=True`` makes id 0 (the
padding ``TextVectorization`` adds) invisible: the GRU skips masked steps and carries its state
through them, so the output does not depend on how much padding follows a review.

keras-io's ``bidirectional_lstm_imdb`` reads the review in both directions; ``Bidirectional``
passes the mask to both directions too. Dropout before the classifier as in Chollet, Deep Learning
with Python (2nd ed., ch. 11).
"""

from __future__ import annotations

import keras


def build_classifier(vocab_size: int, embedding_dim: int, units: int,
                     bidirectional: bool = True, dropout: float = 0.5,
                     pooling: str = "last") -> keras.Model:
    """Model from int64 token ids [batch, time] (0 = padding) to P(positive) [batch, 1].

    ``pooling="last"``: the GRU's final state summarizes the review (Géron, keras-io).
    ``pooling="mean"``: the mask-aware mean of the GRU's outputs over the review's own steps,
    so evidence early in a long review is not forgotten by the last state."""
    if pooling not in ("last", "mean"):
        raise ValueError("pooling must be 'last' or 'mean'")
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(ids)
    gru = keras.layers.GRU(units, return_sequences=pooling == "mean", name="gru")
    x = keras.layers.Bidirectional(gru, name="bidirectional_gru")(x) if bidirectional else gru(x)
    if pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="masked_mean")(x)  # honours the mask
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_positive")(x)
    return keras.Model(ids, outputs, name="sentiment_gru")
