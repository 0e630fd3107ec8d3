"""sentiment_gru --pretrain lm: the language model learns, its weights become the classifier's,
the stage resumes and is cached, and the export still takes raw text (issue 28).

A tiny run on 400 real training reviews (first 40 words, a 16-unit GRU) through ``main()``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from apps.sentiment_gru import lm  # noqa: E402
from apps.sentiment_gru.train import main  # noqa: E402
from shared.callbacks import GradualUnfreezing  # noqa: E402
from shared.layer_rates import LayerRateAdam  # noqa: E402

TINY = ["--limit", "400", "--test-limit", "100", "--units", "16", "--embedding-dim", "32",
        "--sequence-length", "40", "--max-tokens", "2000", "--batch-size", "32",
        "--embeddings", "random", "--verbose", "0", "--pretrain", "lm", "--lm-epochs", "3",
        "--fine-tune", "ulmfit",
        "--adversarial", "0"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, mirror):
    """One fine-tuning epoch after the LM: gradual unfreezing keeps the embedding and the GRU
    frozen in it, so the exported classifier must hold the LM's weights exactly."""
    root = tmp_path_factory.mktemp("sentiment_lm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm, "LM_LEARNING_RATE", 1e-2)  # a visible drop in 3 epochs of 12 batches
        record = main([*TINY, "--epochs", "1", "--run-dir", str(root / "run"),
                       "--export-dir", str(root / "export")])
    return record, root


def test_language_model_loss_falls_and_is_recorded(pretrained):
    record, root = pretrained
    stage = root / "run" / "pretrain_lm"
    hist = pd.read_csv(stage / "history.csv")
    assert len(hist) == 3 and hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    assert (stage / lm.WEIGHTS).is_file()
    assert record["stages"]["pretrain_lm"]["reviews"] == 360  # training reviews only
    metrics = record["stages"]["pretrain_lm"]["metrics"]
    assert metrics["val_loss"] == pytest.approx(hist["val_loss"].min())
    assert 0 < metrics["val_nats_per_word"] < 2 * metrics["unigram_nats_per_word"]


def test_the_output_bias_starts_at_the_unigram_model_and_the_heldout_loss_is_exact():
    """log_unigram is the smoothed log frequency of each id; heldout_nats is the forward LM's
    full-softmax cross entropy over the real next words, computed here directly."""
    texts = np.array([b"a b a c", b"b a", b"c c c a b"], dtype=object)
    vec = keras.layers.TextVectorization(max_tokens=6, output_sequence_length=6)
    vec.adapt(texts)
    prior = lm.log_unigram(vec, texts, batch=2)
    ids = vec(texts).numpy()
    counts = 1 + np.bincount(ids[ids > 0], minlength=vec.vocabulary_size())
    np.testing.assert_allclose(prior, np.log(counts / counts.sum()), rtol=1e-6)

    keras.utils.set_random_seed(0)
    model = lm.build_lm(vec.vocabulary_size(), 4, 3, True)
    model(ids)
    h = model.get_layer("bidirectional_gru")(model.get_layer("embedding")(ids),
                                             mask=ids != 0)[0].numpy()
    out = model.get_layer("forward_lm")
    logits = h @ out.kernel.numpy().T + out.bias.numpy()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nxt = np.concatenate([ids[:, 1:], np.zeros_like(ids[:, :1])], axis=1)
    real = nxt > 0
    expected = -np.take_along_axis(log_p, nxt[..., None], -1)[..., 0][real].mean()
    assert lm.heldout_nats(model, vec, texts, batch=2) == pytest.approx(expected, rel=1e-5)


def test_pretrained_weights_are_the_classifiers(pretrained):
    record, root = pretrained
    language_model = lm.build_lm(2000, 32, 16, True)
    language_model.load_weights(str(root / "run" / "pretrain_lm" / lm.WEIGHTS))
    served = tf.saved_model.load(record["export"])
    by_name = {v.name.split(":")[0]: v.numpy() for v in served.variables}
    for layer in ("embedding", "bidirectional_gru"):
        for w in language_model.get_layer(layer).weights:
            match = [v for name, v in by_name.items() if name.endswith(w.path)]
            assert match, (w.path, sorted(by_name)[:10])
            np.testing.assert_array_equal(match[0], w.numpy())  # same shapes, same values


def test_export_still_takes_raw_text(pretrained):
    record, _ = pretrained
    fn = tf.saved_model.load(record["export"]).signatures["serving_default"]
    out = fn(reviews=tf.constant(["A wonderful film.", "", "Awful, boring, the worst."]))
    assert out["probability"].shape == (3,) and out["label"].dtype == tf.string
    from pathlib import Path

    meta = json.loads((Path(record["export"]) / "assets.extra" / "ksuite.json").read_text())
    assert meta["config"]["pretrain"] == "lm"


def test_a_second_run_reuses_the_cached_language_model(pretrained, tmp_path, capsys):
    _, root = pretrained
    cache = root / "run" / "pretrain_lm" / lm.WEIGHTS
    main([*TINY, "--epochs", "1", "--pretrained-lm", str(cache), "--run-dir", str(tmp_path / "r"),
          "--no-export"])
    assert f"weights from {cache} (pretraining skipped)" in capsys.readouterr().out
    assert not (tmp_path / "r" / "pretrain_lm" / "history.csv").exists()


def test_the_language_model_stage_resumes_after_a_kill(tmp_path, mirror, capsys, monkeypatch):
    from shared import runs

    class Killed(Exception):
        pass

    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Killed  # after the backup (the last callback before it) has saved epoch 1

    original = runs.Run.callbacks

    def callbacks(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return out + [KillAfterFirstEpoch()] if self.dir.name == "pretrain_lm" else out

    argv = [*TINY, "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--no-export"]
    monkeypatch.setattr(runs.Run, "callbacks", callbacks)
    with pytest.raises(Killed):
        main(argv)
    monkeypatch.setattr(runs.Run, "callbacks", original)
    stage = tmp_path / "run" / "pretrain_lm"
    assert not (stage / lm.WEIGHTS).exists()
    capsys.readouterr()
    record = main(argv)
    assert "resuming from the end of epoch 1" in capsys.readouterr().out
    assert record["stages"]["pretrain_lm"]["resumed_from_epoch"] == 1
    assert len(pd.read_csv(stage / "history.csv")) == 3 and (stage / lm.WEIGHTS).is_file()


@pytest.mark.parametrize("argv, message", [
    (["--unlabelled", "x"], "--unlabelled and --pretrained-lm need --pretrain lm"),
    (["--pretrained-lm", "x"], "--unlabelled and --pretrained-lm need --pretrain lm"),
    (["--fine-tune", "ulmfit"], "--fine-tune ulmfit needs --pretrain lm"),
])
def test_language_model_flags_refused_without_pretraining(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--pretrain", "none", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_language_model_files_are_one_line_errors(tmp_path, mirror, capsys):
    (tmp_path / "unsup").mkdir()
    for flags, message in ((["--pretrained-lm", str(tmp_path / "none.h5")], "no such file"),
                           (["--unlabelled", str(tmp_path / "unsup")], "no *.txt reviews")):
        with pytest.raises(SystemExit) as e:
            main([*TINY, *flags, "--run-dir", str(tmp_path / "r"), "--no-export"])
        assert e.value.code != 0
        assert message in capsys.readouterr().err


def test_the_language_model_holds_out_training_reviews_only_when_nothing_else_is():
    texts = np.arange(6000).astype(str).astype(object)
    train, held = lm.held_out(texts, np.array([], dtype=object))
    assert len(held) == lm.LM_HELDOUT and list(held) == list(texts[-lm.LM_HELDOUT:])
    assert len(train) + len(held) == len(texts) and not set(train) & set(held)
    train, held = lm.held_out(texts[:300], np.array([], dtype=object))  # a tenth of a small run
    assert (len(train), len(held)) == (270, 30)
    val = np.array(["a", "b"], dtype=object)
    train, held = lm.held_out(texts, val)  # the classifier's validation reviews where it has some
    assert train is texts and held is val


def test_sampled_loss_ignores_padding():
    layer = lm.SampledSoftmaxLM(50, num_sampled=10)
    hidden = tf.random.stateless_normal([2, 4, 8], seed=[1, 2])
    targets = tf.constant([[3, 4, 0, 0], [5, 0, 0, 0]], tf.int64)
    tf.random.set_seed(0)  # the same sampled candidates in both calls
    layer(hidden, targets)
    a = float(layer.losses[-1]) if layer.losses else None
    # the padded positions' hidden states may be anything: the loss must not change
    noisy = tf.where((targets > 0)[..., None], hidden, hidden + 100.0)
    tf.random.set_seed(0)
    layer(noisy, targets)
    assert a is not None and float(layer.losses[-1]) == pytest.approx(a, rel=1e-6)


# -- discriminative rates and gradual unfreezing (shared/) -------------------------------------


def _two_layer_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(3, use_bias=False, name="low")(inputs)
    out = keras.layers.Dense(1, use_bias=False, name="top")(x)
    return keras.Model(inputs, out)


def test_layer_rate_adam_scales_each_layers_step():
    model = _two_layer_model()
    opt = LayerRateAdam(0.1, layer_rates={"low": 0.25})
    model.compile(optimizer=opt, loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    x, y = np.ones((4, 3), np.float32), np.full((4, 1), 10.0, np.float32)
    model.train_on_batch(x, y)
    after = [w.numpy() for w in model.trainable_weights]
    # Adam's first step moves every weight by ~lr (m/sqrt(v) = sign(g)): 0.025 for "low"
    low, top = (np.abs(a - b) for a, b in zip(after, before))
    np.testing.assert_allclose(low[low > 0], 0.025, rtol=1e-3)
    np.testing.assert_allclose(top, 0.1, rtol=1e-3)
    opt.set_multiplier("low", 0.0)  # frozen: a rate of 0
    frozen = model.get_layer("low").kernel.numpy().copy()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(model.get_layer("low").kernel.numpy(), frozen)
    assert opt.get_config()["layer_rates"] == {"low": 0.25}


def test_gradual_unfreezing_opens_one_layer_per_epoch():
    model = _two_layer_model()
    model.compile(optimizer=LayerRateAdam(0.1, layer_rates={"top": 0.5, "low": 0.2}), loss="mse")
    cb = GradualUnfreezing(["top", "low"])
    cb.set_model(model)
    seen = []
    for epoch in range(4):
        cb.on_epoch_begin(epoch)
        seen.append((model.optimizer.multiplier("top"), model.optimizer.multiplier("low")))
    assert np.allclose(seen, [(0.0, 0.0), (0.5, 0.0), (0.5, 0.2), (0.5, 0.2)])
