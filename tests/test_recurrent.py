"""shared.recurrent.HoistedLSTM computes exactly what keras.layers.LSTM computes, with the same
weights: outputs, final states, masks, reversed reading, carried state and gradients."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from shared.recurrent import HoistedLSTM  # noqa: E402


def _pair(units=8, **kwargs):
    """A Keras LSTM and a HoistedLSTM holding the same (non-trivial) weights."""
    ref, fast = keras.layers.LSTM(units, **kwargs), HoistedLSTM(units, **kwargs)
    return ref, fast


def _tie(ref, fast, x, **call):
    ref(x, **call)
    fast(x, **call)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, w.shape).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    fast.set_weights(weights)


def test_same_outputs_and_states_as_keras_lstm():
    x = np.random.default_rng(1).normal(size=(3, 7, 5)).astype("float32")
    ref, fast = _pair(return_sequences=True, return_state=True)
    _tie(ref, fast, x)
    assert fast.hoists()
    for a, b in zip(ref(x), fast(x), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_steps_and_reversed_reading_match(go_backwards):
    x = np.random.default_rng(2).normal(size=(2, 6, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    ref, fast = _pair(return_sequences=True, go_backwards=go_backwards)
    _tie(ref, fast, x, mask=mask)
    a, b = ref(x, mask=mask), fast(x, mask=mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_bidirectional_with_embedding_mask_matches():
    ids = np.array([[3, 5, 2, 0, 0], [1, 4, 4, 2, 6]])

    def model(layer):
        inp = keras.Input((None,), dtype="int32")
        emb = keras.layers.Embedding(8, 4, mask_zero=True, name="emb")(inp)
        return keras.Model(inp, keras.layers.Bidirectional(layer, name="bi")(emb))

    ref, fast = model(keras.layers.LSTM(6)), model(HoistedLSTM(6))
    fast.set_weights(ref.get_weights())
    np.testing.assert_allclose(ref(ids).numpy(), fast(ids).numpy(), rtol=1e-5, atol=1e-6)


def test_stateful_carries_state_like_keras():
    rng = np.random.default_rng(3)
    chunks = [rng.normal(size=(2, 4, 3)).astype("float32") for _ in range(3)]
    ref, fast = _pair(return_sequences=True, stateful=True)
    _tie(ref, fast, keras.ops.convert_to_tensor(chunks[0]))
    ref.reset_state()
    fast.reset_state()
    for chunk in chunks:  # the second and third chunks start from the carried (h, c)
        np.testing.assert_allclose(np.asarray(ref(chunk)), np.asarray(fast(chunk)),
                                   rtol=1e-5, atol=1e-6)
    fast.reset_state()
    ref.reset_state()
    np.testing.assert_allclose(np.asarray(ref(chunks[1])), np.asarray(fast(chunks[1])),
                               rtol=1e-5, atol=1e-6)


def test_gradients_match_keras_lstm():
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(4).normal(size=(3, 5, 4)).astype("float32"))
    ref, fast = _pair(return_sequences=True)
    _tie(ref, fast, x)
    grads = []
    for layer in (ref, fast):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x)))
        grads.append(tape.gradient(loss, layer.trainable_variables))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_cell_dropout_falls_back_to_keras_loop():
    layer = HoistedLSTM(4, dropout=0.2)
    layer(np.zeros((1, 3, 2), "float32"))
    assert not layer.hoists()
    assert HoistedLSTM(4, use_cudnn=True).hoists() is False


def test_saved_model_file_reloads_as_hoisted(tmp_path):
    inp = keras.Input((None, 3))
    model = keras.Model(inp, HoistedLSTM(5, name="lstm")(inp))
    x = np.random.default_rng(5).normal(size=(2, 4, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again.get_layer("lstm"), HoistedLSTM)
    np.testing.assert_allclose(model(x).numpy(), again(x).numpy(), rtol=1e-6)
