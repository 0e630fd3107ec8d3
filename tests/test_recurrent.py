"""shared.recurrent's HoistedLSTM and HoistedGRU compute exactly what keras.layers.LSTM and GRU
compute, with the same weights: outputs, final states, masks, reversed reading, carried state
and gradients."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from shared.recurrent import HoistedGRU, HoistedLSTM  # noqa: E402

PAIRS = {"lstm": (keras.layers.LSTM, HoistedLSTM), "gru": (keras.layers.GRU, HoistedGRU)}
KINDS = pytest.mark.parametrize("kind", sorted(PAIRS))


def _pair(kind, units=8, **kwargs):
    """The Keras layer and its hoisted twin (to be given the same weights by ``_tie``)."""
    keras_class, hoisted_class = PAIRS[kind]
    return keras_class(units, **kwargs), hoisted_class(units, **kwargs)


def _tie(ref, fast, x, **call):
    ref(x, **call)
    fast(x, **call)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, w.shape).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    fast.set_weights(weights)


@KINDS
def test_same_outputs_and_states_as_keras(kind):
    x = np.random.default_rng(1).normal(size=(3, 7, 5)).astype("float32")
    ref, fast = _pair(kind, return_sequences=True, return_state=True)
    _tie(ref, fast, x)
    assert fast.hoists()
    for a, b in zip(ref(x), fast(x), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@KINDS
@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_steps_and_reversed_reading_match(kind, go_backwards):
    x = np.random.default_rng(2).normal(size=(2, 6, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    ref, fast = _pair(kind, return_sequences=True, go_backwards=go_backwards)
    _tie(ref, fast, x, mask=mask)
    a, b = ref(x, mask=mask), fast(x, mask=mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@KINDS
def test_bidirectional_with_embedding_mask_matches(kind):
    ids = np.array([[3, 5, 2, 0, 0], [1, 4, 4, 2, 6]])

    def model(layer):
        inp = keras.Input((None,), dtype="int32")
        emb = keras.layers.Embedding(8, 4, mask_zero=True, name="emb")(inp)
        return keras.Model(inp, keras.layers.Bidirectional(layer, name="bi")(emb))

    ref, fast = (model(layer) for layer in _pair(kind, 6))
    fast.set_weights(ref.get_weights())
    np.testing.assert_allclose(ref(ids).numpy(), fast(ids).numpy(), rtol=1e-5, atol=1e-6)


@KINDS
def test_stateful_carries_state_like_keras(kind):
    rng = np.random.default_rng(3)
    chunks = [rng.normal(size=(2, 4, 3)).astype("float32") for _ in range(3)]
    ref, fast = _pair(kind, return_sequences=True, stateful=True)
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


@KINDS
def test_gradients_match_keras(kind):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(4).normal(size=(3, 5, 4)).astype("float32"))
    ref, fast = _pair(kind, return_sequences=True)
    _tie(ref, fast, x)
    grads = []
    for layer in (ref, fast):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x)))
        grads.append(tape.gradient(loss, layer.trainable_variables))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


@KINDS
def test_cell_dropout_falls_back_to_keras_loop(kind):
    _, hoisted_class = PAIRS[kind]
    layer = hoisted_class(4, dropout=0.2)
    layer(np.zeros((1, 3, 2), "float32"))
    assert not layer.hoists()
    assert hoisted_class(4, use_cudnn=True).hoists() is False
    assert hoisted_class(4).hoists() is True


def test_gru_without_reset_after_runs_keras_loop():
    x = np.random.default_rng(6).normal(size=(2, 3, 4)).astype("float32")
    ref, fast = keras.layers.GRU(5, reset_after=False), HoistedGRU(5, reset_after=False)
    _tie(ref, fast, x)
    assert not fast.hoists()
    np.testing.assert_allclose(np.asarray(ref(x)), np.asarray(fast(x)), rtol=1e-6)


@KINDS
def test_saved_model_file_reloads_as_hoisted(kind, tmp_path):
    inp = keras.Input((None, 3))
    model = keras.Model(inp, PAIRS[kind][1](5, name="lstm")(inp))
    x = np.random.default_rng(5).normal(size=(2, 4, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again.get_layer("lstm"), PAIRS[kind][1])
    np.testing.assert_allclose(model(x).numpy(), again(x).numpy(), rtol=1e-6)


def test_hoisting_benchmark_rows_name_shape_and_ratio():
    from benchmarks.recurrent_hoisting import render

    record = {"time": "2026-12-06T13:05:00+0000", "app": "shakespeare_lstm",
              "precision": "mixed_bfloat16", "shape": {"units": [384, 384], "batch": 32,
                                                       "steps_per_sequence": 50},
              "keras_step_ms": 329.1, "hoisted_step_ms": 248.4, "speedup": 1.325,
              "load_average": [2.1, 2.0, 1.9], "git_commit": "abc1234"}
    text = "\n".join(render([record]))
    assert "| shakespeare_lstm: 384 x 384 units, 32 x 50 steps | mixed_bfloat16 | 329.1 | 248.4 " \
           "| 1.32x | 2.1 | abc1234 |" in text
