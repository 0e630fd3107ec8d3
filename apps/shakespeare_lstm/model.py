"""Embedding -> stacked LSTM -> logits over the characters (Karpathy's char-rnn; Géron, *Hands-On
Machine Learning*, ch. 16 "Generating Shakespearean Text Using a Character RNN").

The model maps character ids [batch, time] to next-character logits [batch, time, ids]; the
softmax lives in the loss (``from_logits=True``) and in the samplers. Dropout sits between the
LSTM layers and before the output layer, never on the recurrent connections (Zaremba, Sutskever &
Vinyals 2014, "Recurrent Neural Network Regularization"), which keeps the fast LSTM kernel:
``shared.recurrent.HoistedLSTM``, Keras' LSTM with the input half of its gates computed for the
whole chunk before the time loop (a 2 x 384 training step 1.31x faster on a CPU, same weights,
results equal up to rounding; benchmarks/recurrent_hoisting.py).

``stateful=True`` keeps each row's final (h, c) as the next batch's initial state (truncated
back-propagation through time); it needs a fixed batch size.
"""

from __future__ import annotations

import keras

from shared.recurrent import HoistedLSTM

EMBED_DIM = 64  # between Géron's 16 and a one-hot of the ~65 characters; char-rnn uses one-hot
UNITS = (384, 384)  # two layers (char-rnn: num_layers 2); width see train.py


def build_model(num_ids: int, embed_dim: int = EMBED_DIM, units: tuple[int, ...] = UNITS,
                dropout: float = 0.0, batch_size: int | None = None,
                stateful: bool = False) -> keras.Model:
    """``num_ids``: vocabulary size including the unknown-character id 0."""
    if stateful and batch_size is None:
        raise ValueError("a stateful model needs a fixed batch size")
    inputs = keras.Input(shape=(None,), batch_size=batch_size, dtype="int32", name="char_ids")
    x = keras.layers.Embedding(num_ids, embed_dim, name="embedding")(inputs)
    for i, n in enumerate(units):
        x = HoistedLSTM(n, return_sequences=True, stateful=stateful, name=f"lstm_{i + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    # Logits in float32 under a mixed --precision policy (Keras mixed-precision guide).
    logits = keras.layers.Dense(num_ids, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="shakespeare_lstm")


def lstm_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def reset_states(model: keras.Model) -> None:
    """Zero the carried (h, c) of every stateful LSTM layer."""
    for layer in lstm_layers(model):
        if layer.stateful:
            layer.reset_state()


def reset_states_callback(model: keras.Model) -> keras.callbacks.Callback:
    """Stateful mode: zero the carried LSTM state when an epoch starts and before validation,
    so every pass over a split starts each stream from the beginning of its text."""
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: reset_states(model),
        on_test_begin=lambda logs=None: reset_states(model),
    )


def stateless_copy(model: keras.Model) -> keras.Model:
    """The same architecture with a free batch size and no carried state, sharing nothing but
    the trained values: for export and for the keras-io-style ``predict`` baseline."""
    lstms = lstm_layers(model)
    emb = model.get_layer("embedding")
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    copy = build_model(emb.input_dim, emb.output_dim, tuple(layer.units for layer in lstms),
                       dropouts[0].rate if dropouts else 0.0)
    for layer in model.layers:
        if layer.trainable_weights:
            target = copy.get_layer(layer.name)
            for dst, src in zip(target.trainable_weights, layer.trainable_weights, strict=True):
                dst.assign(src)
    return copy
