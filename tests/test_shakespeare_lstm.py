"""shakespeare_lstm: data layout, the in-graph sampler, training, export round trip, errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps.shakespeare_lstm import data
from apps.shakespeare_lstm.generate import MAX_NEW_CHARS, CharSampler
from apps.shakespeare_lstm.model import build_model, reset_states, stateless_copy
from apps.shakespeare_lstm.train import APP, main

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 3
VOCAB = data.build_vocab(TEXT)


def gen(sampler, prompts, num_chars, temperature=0.0, top_k=0, seed=0):
    fn, _ = sampler.compiled()
    n = len(prompts)
    out = fn(tf.constant(prompts),
             tf.constant(num_chars if isinstance(num_chars, list) else [num_chars] * n, tf.int32),
             tf.constant([temperature] * n, tf.float32), tf.constant([top_k] * n, tf.int32),
             tf.constant([seed] * n, tf.int64))
    return [s.decode("utf-8") for s in out["generated"].numpy()]


@pytest.fixture(scope="module")
def sampler():
    keras.utils.set_random_seed(0)
    model = build_model(len(VOCAB) + 1, 8, (16, 12))
    out = CharSampler(model, VOCAB)
    out.model = model
    return out


# -- data ----------------------------------------------------------------------------------------


def test_split_is_contiguous_90_5_5_and_vocab_has_unknown_slot():
    text = "".join(chr(97 + i % 26) for i in range(1000)) + "Z" * 1000
    train, val, test = data.split(text)
    assert train + val + test == text
    assert (len(train), len(val), len(test)) == (1800, 100, 100)
    vocab = data.build_vocab(train)
    assert "Z" in vocab and vocab == sorted(vocab)
    ids = data.encode("abc\u00e9", vocab)
    assert list(ids) == [2, 3, 4, 0]  # "Z" sorts first (id 1); unknown character -> 0
    lookup = keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=1, mask_token=None)
    assert list(lookup(tf.constant(list("abc\u00e9"))).numpy()) == [2, 3, 4, 0]
    assert data.decode([2, 3, 0], vocab) == "ab[UNK]"


def test_stateful_layout_rows_continue_the_previous_batch():
    ids = np.arange(1000, dtype=np.int32)  # id == position in the text
    x, y = data.stateful_batches(ids, batch=4, seq_len=10)
    assert x.shape == y.shape == (24, 4, 10)  # (1000 - 1) // 4 = 249 per stream -> 24 chunks
    np.testing.assert_array_equal(y, x + 1)  # targets are the next characters
    for b in range(len(x) - 1):
        for i in range(4):
            # row i of batch b+1 continues row i of batch b
            assert x[b + 1, i, 0] == x[b, i, -1] + 1 == y[b, i, -1]
    np.testing.assert_array_equal(x[0, :, 0], [0, 249, 498, 747])  # four disjoint streams
    ds = data.stateful_dataset(ids, 4, 10)
    first = next(iter(ds))
    np.testing.assert_array_equal(first[0].numpy(), x[0])


def test_window_dataset_shapes_targets_and_stride():
    ids = np.arange(200, dtype=np.int32)
    assert len(data.window_starts(200, 10, 1)) == 190
    ds = data.window_dataset(ids, 8, 10, stride=10)
    batches = list(ds)
    assert sum(int(b[0].shape[0]) for b in batches) == 19
    for bx, by in batches:
        assert bx.shape[1:] == (10,)
        np.testing.assert_array_equal(by.numpy(), bx.numpy() + 1)
        np.testing.assert_array_equal(bx.numpy()[:, 0] % 10, 0)


# -- the in-graph sampler ------------------------------------------------------------------------


def test_next_char_matches_the_keras_model(sampler):
    prompt = "Before we"
    ids = data.encode(prompt, VOCAB)[None]
    model_probs = tf.nn.softmax(sampler.model(ids)[0, -1]).numpy()  # the Keras LSTM layers
    out = sampler.next_char(tf.constant([prompt, "B"]))
    np.testing.assert_allclose(out["probabilities"].numpy()[0], model_probs, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    assert out["top_characters"].shape == (2, 5)


def test_generate_returns_exactly_the_requested_number_of_characters(sampler):
    out = gen(sampler, ["First", "A", "speak"], [0, 1, 37], temperature=1.0, seed=3)
    assert [len(s) for s in out] == [0, 1, 37]
    assert all(set(s) <= set(VOCAB) for s in out)  # never the unknown token


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(sampler):
    a = gen(sampler, ["All:\n"], 40, temperature=0.0, seed=1)
    b = gen(sampler, ["All:\n"], 40, temperature=0.0, seed=2)
    assert a == b  # greedy ignores the seed
    assert gen(sampler, ["All:\n"], 40, temperature=5.0, top_k=1, seed=9) == a  # top-1 = argmax
    s1 = gen(sampler, ["All:\n"], 60, temperature=1.0, seed=7)
    assert s1 == gen(sampler, ["All:\n"], 60, temperature=1.0, seed=7)
    assert s1 != gen(sampler, ["All:\n"], 60, temperature=1.0, seed=8)


def test_generate_rejects_bad_requests(sampler):
    with pytest.raises(tf.errors.InvalidArgumentError, match="prompt must not be empty"):
        gen(sampler, [""], 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_chars must be >= 0"):
        gen(sampler, ["a"], -1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_chars must be <="):
        gen(sampler, ["a"], MAX_NEW_CHARS + 1)


def test_stateless_copy_and_reset_states():
    keras.utils.set_random_seed(1)
    model = build_model(len(VOCAB) + 1, 8, (16,), 0.1, batch_size=2, stateful=True)
    x = data.encode(TEXT[:20], VOCAB).reshape(2, 10)
    first = model(x).numpy()
    assert not np.allclose(model(x).numpy(), first)  # the state carried over
    reset_states(model)
    np.testing.assert_allclose(model(x).numpy(), first, atol=1e-6)
    copy = stateless_copy(model)
    np.testing.assert_allclose(copy(x).numpy(), first, atol=1e-5)


# -- training, export round trip, errors ---------------------------------------------------------

TINY = ["--limit", "20000", "--units", "32", "--embed-dim", "16", "--seq-len", "50",
        "--batch-size", "16", "--learning-rate", "0.01", "--schedule", "constant",
        "--sample-chars", "40", "--verbose", "0"]


def test_stateful_training_reduces_loss_and_export_round_trip(tmp_path, mirror):
    record = main([*TINY, "--epochs", "2", "--run-dir", str(tmp_path / "run"),
                   "--export-dir", str(tmp_path / "models")])
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["bits_per_char"] == pytest.approx(metrics["loss"] / np.log(2))
    assert metrics["val_loss"] < np.log(len(VOCAB) + 40)  # better than uniform
    for epoch in (1, 2):
        sample = (tmp_path / "run" / "samples" / f"epoch_{epoch:03d}.txt").read_text()
        assert all(f"temperature {t}" in sample for t in (0.2, 0.5, 1.0))

    loaded = tf.saved_model.load(record["export"])
    assert set(loaded.signatures) == {"serving_default", "generate"}
    generate = loaded.signatures["generate"]

    def call(prompts, n, temperature, seed=0):
        out = generate(prompt=tf.constant(prompts), num_chars=tf.constant(n, tf.int32),
                       temperature=tf.constant([temperature] * len(prompts), tf.float32),
                       top_k=tf.constant([0] * len(prompts), tf.int32),
                       seed=tf.constant([seed] * len(prompts), tf.int64))
        return [s.decode() for s in out["generated"].numpy()], out["text"].numpy()

    texts, full = call(["ROMEO:\n", "To be"], [25, 100], 0.8, seed=5)
    assert [len(t) for t in texts] == [25, 100]
    assert full[0].decode() == "ROMEO:\n" + texts[0]
    assert call(["KING:"], [50], 0.0, 1)[0] == call(["KING:"], [50], 0.0, 2)[0]  # greedy
    probs = loaded.signatures["serving_default"](prompt=tf.constant(["Hello", "x"]))
    assert probs["probabilities"].shape[0] == 2
    np.testing.assert_allclose(probs["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError):
        call([""], [3], 0.5)

    # One REST call to the served model returns the whole text, exactly as long as asked.
    from serving.client import RestClient
    from serving.server import ModelServer, ServerOptions

    server = ModelServer(ServerOptions(port=0, rest_api_port=0, model_name="shakespeare_lstm",
                                       model_base_path=str(tmp_path / "models" /
                                                           "shakespeare_lstm"))).start()
    try:
        with RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=60, retries=0) as rest:
            def served(n, temperature, seed):
                row = {"prompt": "ROMEO:\n", "num_chars": n, "temperature": temperature,
                       "top_k": 0, "seed": seed}
                out = rest.predict("shakespeare_lstm", instances=[row],
                                   signature_name="generate")["predictions"][0]
                return out["generated"]
            assert len(served(60, 0.7, 3)) == 60
            assert served(40, 0.0, 1) == served(40, 0.0, 2)  # greedy: deterministic
    finally:
        server.stop()


def test_stateless_mode_trains(tmp_path, mirror):
    record = main([*TINY, "--mode", "stateless", "--stride", "25", "--epochs", "1",
                   "--steps-per-epoch", "20", "--sample-chars", "0", "--no-export",
                   "--run-dir", str(tmp_path / "run")])
    assert np.isfinite(record["metrics"]["val_loss"])
    assert not (tmp_path / "run" / "samples").exists()


@pytest.mark.parametrize("argv, message", [
    (["--dropout", "1.5"], "--dropout"),
    (["--stride", "3"], "--stride only applies"),
    (["--sample-chars", "-1"], "--sample-chars must be >= 0"),
    # Stateful TBPTT keeps the LSTM state in per-row variables: one replica only.
    (["--strategy", "mirrored", "--devices", "2"], "--mode stateful carries LSTM state"),
])
def test_settings_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        APP.parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_stride_defaults_to_the_window_length():
    assert APP.parse(["--mode", "stateless", "--seq-len", "60"]).stride == 60
    assert APP.parse(["--mode", "stateless", "--stride", "7"]).stride == 7
    assert APP.parse(["--mode", "stateless", "--strategy", "mirrored"]).mode == "stateless"


def test_too_little_text_is_one_clear_error(tmp_path, mirror, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--limit", "10", "--no-export", "--run-dir", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "error: --limit 10 leaves too little text" in capsys.readouterr().err


def test_nanogpt_val_loss_is_the_mean_over_blocks_from_an_empty_state():
    """nanoGPT's protocol: disjoint blocks, each from a zero state, every position counted once;
    checked against a per-block brute force on a stateful model (the copy must not carry state)."""
    from apps.shakespeare_lstm.train import nanogpt_val_loss

    ids = data.encode(TEXT, VOCAB)
    model = build_model(len(VOCAB) + 1, 8, (12,), batch_size=4, stateful=True)
    got = nanogpt_val_loss(model, ids, block=20, batch=3)
    plain = stateless_copy(model)
    nats = []
    for s in range(0, len(ids) - 20, 20):
        x, y = ids[s:s + 20], ids[s + 1:s + 21]
        logits = plain(x[None], training=False)[0]
        nats += list(keras.losses.sparse_categorical_crossentropy(y, logits,
                                                                   from_logits=True).numpy())
    np.testing.assert_allclose(got, np.mean(nats), rtol=1e-5)
