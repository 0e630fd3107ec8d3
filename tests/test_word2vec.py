"""word2vec: tokenizer and vocabulary, subsampling, pair generation, negatives, sparse SGD, the
learning-rate schedule, resume, the word2vec file formats (read back by gensim), the SavedModel
round trip, data validation and the app's own flag checks. (--help, bad flags in general, missing
data and the export's reload are the contract test's, tests/test_apps_contract.py.)"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from apps.word2vec import data
from apps.word2vec import evaluate as ev
from apps.word2vec.train import APP, main

# --------------------------------------------------------------------------------------------
# A tiny corpus with structure: subjects, verbs and objects drawn from small groups.
# --------------------------------------------------------------------------------------------
SUBJECTS = ["king", "queen", "prince", "princess", "man", "woman", "boy", "girl"]
VERBS = ["rules", "loves", "sees", "visits", "guards"]
OBJECTS = ["kingdom", "castle", "city", "river", "forest", "garden"]


def tiny_text(sentences: int = 3000, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        lines.append(f"The {rng.choice(SUBJECTS)} {rng.choice(VERBS)} the {rng.choice(OBJECTS)}.")
    lines.append("A rare word appears once: zyzzyva. Don't split it!")
    return " ".join(lines)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w2v") / "tiny.txt"
    path.write_text(tiny_text(), encoding="utf-8")
    return path


def test_tokenize_lowercases_and_keeps_inner_apostrophes():
    assert data.tokenize("The King’s men DON'T run, 3 times!") == [
        "the", "king's", "men", "don't", "run", "3", "times"]
    assert data.tokenize("a b c d e", limit=3) == ["a", "b", "c"]


def test_vocabulary_min_count_and_order():
    tokens = "a b a c a b d".split()
    vocab = data.Vocabulary.build(tokens, min_count=2)
    assert vocab.words == ["a", "b"]  # c, d below min_count; most frequent first
    assert vocab.counts.tolist() == [3, 2]
    assert vocab.encode(tokens).tolist() == [0, 1, 0, 0, 1]  # OOV tokens dropped
    with pytest.raises(data.UserError):
        data.Vocabulary.build(tokens, min_count=10)


def test_subsampling_probabilities():
    counts = np.array([1000, 100, 10, 1])  # f = counts / 1111
    f = counts / counts.sum()
    t = 1e-2
    paper = data.keep_probabilities(counts, t, "paper")
    np.testing.assert_allclose(paper, np.minimum(np.sqrt(t / f), 1), rtol=1e-6)
    assert 1 - paper[0] == pytest.approx(1 - np.sqrt(t / f[0]), rel=1e-5)  # P(discard)
    w2v = data.keep_probabilities(counts, t, "word2vec")
    np.testing.assert_allclose(w2v, np.minimum(np.sqrt(t / f) + t / f, 1), rtol=1e-6)
    assert np.all(data.keep_probabilities(counts, 0.0) == 1)
    assert paper[-1] == 1.0 and paper[0] < paper[1] < 1


def _batches(ids, keep, window, batch, steps, seed=1):
    ds = data.make_dataset(ids, keep, window=window, batch=batch, seed=seed)
    return [tuple(t.numpy() for t in b) for b in ds.take(steps)]


def _pairs(ids, keep, window, batch, steps, **kw):
    """(centres, contexts) of every pair."""
    out = _batches(ids, keep, window, batch, steps, **kw)
    pairs = [data.window_pairs(w, c) for c, w in out]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_windows_match_a_brute_force_reference():
    """id = position and no subsampling: every batch holds centres of one reduced window b, in
    turn b = 1..W; each centre's window is exactly the positions c-b..c-1, c+1..c+b inside the
    corpus (-1 past its ends); over an epoch each position is a centre once, its b uniform."""
    n, window, batch = 3000, 3, 50
    ids = np.arange(n, dtype=np.int32)
    keep = np.ones(n, np.float32)
    steps = data.steps_per_epoch(ids, keep, batch)
    out = _batches(ids, keep, window, batch, steps - window)  # the first epoch only
    seen = []
    for step, (centres, windows) in enumerate(out):
        b = step % window + 1
        assert windows.shape == (batch, 2 * b) and centres.shape == (batch,)
        for c, row in zip(centres, windows):
            reference = [p if 0 <= p < n else -1 for p in
                         [c + o for o in range(-b, b + 1) if o != 0]]
            assert row.tolist() == reference
        seen.append(centres)
    seen = np.concatenate(seen)
    assert len(np.unique(seen)) == len(seen) > 0.9 * n  # no centre twice in an epoch
    # Dynamic window: the pairs at distance d are (W - d + 1) / W of those at distance 1.
    centres, contexts = _pairs(ids, keep, window, batch, steps - window)
    distance = np.abs(centres.astype(int) - contexts)
    counts = np.bincount(distance, minlength=window + 1)[1:]
    expected = np.array([(window - d + 1) / window for d in range(1, window + 1)])
    np.testing.assert_allclose(counts / counts[0], expected, atol=0.06)
    assert abs(len(centres) - data.expected_pairs(ids, keep, window)) < 0.1 * len(centres)


def test_subsampled_windows_skip_discarded_words():
    ids = np.array([0, 1] * 2000, dtype=np.int32)  # word 1 is always discarded
    keep = np.array([1.0, 0.0], np.float32)
    centres, contexts = _pairs(ids, keep, 2, 64, 10)
    assert set(centres.tolist()) == {0} and set(contexts.tolist()) == {0}


def test_the_alias_table_is_exact():
    """Walker's alias table gives back every probability exactly: column i keeps prob[i] of
    itself and gives 1 - prob[i] to alias[i]."""
    counts = np.random.default_rng(0).zipf(1.3, 5000).astype(np.int64)
    p = data.noise_distribution(counts)
    prob, alias = data.alias_table(p)
    assert prob.dtype == np.float32 and alias.dtype == np.int32 and np.all(prob <= 1)
    back = prob.astype(np.float64).copy()
    np.add.at(back, alias, 1.0 - prob)
    np.testing.assert_allclose(back / len(p), p, rtol=1e-5, atol=1e-9)


def test_negatives_follow_unigram_to_the_three_quarters():
    """The step's draws (SkipGram.draw_negatives): U(w)^0.75, k per centre, fresh every step,
    the same for the same step and seed."""
    import keras
    import tensorflow as tf

    from apps.word2vec.model import build_skipgram

    counts = np.array([5000, 1000, 200, 50, 10], dtype=np.int64)
    noise = data.noise_distribution(counts)
    np.testing.assert_allclose(noise, counts**0.75 / np.sum(counts**0.75))
    model = build_skipgram(5, 4)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.set_noise(noise, negatives=5, seed=3)
    centres = tf.zeros([1000], tf.int32)
    draws = []
    for step in range(30):
        model.optimizer.iterations.assign(step)
        draws.append(model.draw_negatives(centres).numpy())
    assert draws[0].shape == (1000, 5) and draws[0].dtype == np.int32
    freq = np.bincount(np.concatenate(draws).ravel(), minlength=5) / draws[0].size / 30
    np.testing.assert_allclose(freq, noise, atol=0.01)
    assert not np.array_equal(draws[0], draws[1])
    model.optimizer.iterations.assign(0)
    np.testing.assert_array_equal(model.draw_negatives(centres).numpy(), draws[0])


def test_loss_decreases_with_sparse_sgd():
    import keras

    from apps.word2vec.model import build_skipgram

    tokens = data.tokenize(tiny_text(1500))
    vocab = data.Vocabulary.build(tokens, 2)
    ids = vocab.encode(tokens)
    keep = np.ones(len(vocab), np.float32)
    ds = data.make_dataset(ids, keep, window=2, batch=64, seed=0)
    model = build_skipgram(len(vocab), 16)
    model.set_noise(data.noise_distribution(vocab.counts), 3, 0)
    model.compile(optimizer=keras.optimizers.SGD(0.025), jit_compile=True)
    before = model.centre_vectors.numpy().copy()
    hist = model.fit(ds, epochs=4, steps_per_epoch=20, verbose=0).history["loss"]
    assert hist[-1] < hist[0] - 0.2
    assert not np.allclose(before, model.centre_vectors.numpy())


def _reference_update(v, u, batch, lr):
    """word2vec.c's update for every (context word, centre) pair of a batch, NumPy, one loop per
    pair: input v[o], targets u[centre] (label 1) and u[negatives] (label 0, skipped when equal
    to the centre); gradients summed over the batch at the old values."""
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    dv, du = np.zeros_like(v), np.zeros_like(u)
    for c, window, negs in zip(*batch):
        for o in window[window >= 0]:
            for t, label in [(c, 1.0)] + [(n, 0.0) for n in negs if n != c]:
                g = sigmoid(v[o] @ u[t]) - label
                dv[o] += g * u[t]
                du[t] += g * v[o]
    return v - lr * dv, u - lr * du


def test_sparse_update_matches_word2vec_and_touches_only_the_batch_rows():
    import keras
    import tensorflow as tf

    from apps.word2vec.model import build_skipgram

    rng = np.random.default_rng(0)
    vocab, dim, lr = 12, 4, 0.1
    model = build_skipgram(vocab, dim)
    model.compile(optimizer=keras.optimizers.SGD(lr))
    v0 = rng.normal(size=(vocab, dim)).astype(np.float32)
    u0 = rng.normal(size=(vocab, dim)).astype(np.float32)
    model.centre_vectors.assign(v0)
    model.context_vectors.assign(u0)
    # Two centres (3 and 5) with windows of b = 2 (one slot past the corpus end), negatives
    # shared by each centre's pairs; negative 3 of centre 3 is skipped, word 2 occurs twice.
    batch = (np.array([3, 5], np.int32), np.array([[1, 2, 4, -1], [2, 6, 7, 8]], np.int32),
             np.array([[3, 9], [0, 9]], np.int32))
    logs = model.train_step(tuple(tf.constant(b) for b in batch))
    v_ref, u_ref = _reference_update(v0, u0, batch, lr)
    np.testing.assert_allclose(model.centre_vectors.numpy(), v_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.context_vectors.numpy(), u_ref, rtol=1e-5, atol=1e-6)
    changed_v = np.where(np.any(model.centre_vectors.numpy() != v0, axis=1))[0]
    changed_u = np.where(np.any(model.context_vectors.numpy() != u0, axis=1))[0]
    assert changed_v.tolist() == [1, 2, 4, 6, 7, 8]  # the window words only
    assert changed_u.tolist() == [0, 3, 5, 9]  # the centres and their negatives only
    assert float(logs["pairs"]) == 7


def test_evaluation_matches_a_hand_check():
    words = ["a", "b", "c", "d", "e"]
    vectors = np.array([[1, 0], [1, 1], [0, 1], [0, 2.1], [-1, 0]], np.float32)
    # a:b :: c:? -> b - a + c = (0, 2) -> d (a, b, c excluded)
    res = ev.analogy_accuracy(words, vectors, [("test", [("a", "b", "c", "d"), ("a", "b", "c", "e"),
                                                         ("a", "b", "c", "zz")])])
    assert res["analogy_accuracy"] == 0.5 and res["analogy_questions"] == 2
    assert res["analogy_skipped"] == 1
    assert ev.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ev.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


# --------------------------------------------------------------------------------------------
# End to end: main() on the tiny corpus, files on disk, gensim loads them, export round trip.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(corpus_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("w2v-run")
    record = main(["--corpus", str(corpus_file), "--min-count", "2", "--dim", "16",
                   "--epochs", "3", "--batch-size", "64", "--sample", "1e-3",
                   "--run-dir", str(root / "run"), "--export-dir", str(root / "export"),
                   "--probe", "king", "castle", "--verbose", "0"])
    return record, root


def test_main_trains_and_writes_outputs(trained):
    record, root = trained
    run = root / "run"
    m = record["metrics"]
    assert set(m) >= {"analogy_accuracy", "analogy_semantic", "analogy_syntactic",
                      "analogy_questions", "wordsim_spearman", "corpus_tokens", "train_seconds",
                      "words_per_sec", "xla"}
    # (m["xla"] is not asserted: Keras turns XLA off in a process where an earlier test enabled
    # op determinism, and this fixture runs in the test session's process.)
    assert m["vocab_size"] == 1 + len(SUBJECTS) + len(VERBS) + len(OBJECTS)  # "the" + the groups
    assert "analogy_accuracy" in m and "wordsim_spearman" in m and m["words_per_sec"] > 0
    with open(run / "history.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    for name in ("metrics.json", "neighbours.txt", "vectors.txt", "vectors.bin", "pca_map.png",
                 "projector/vectors.tsv", "projector/metadata.tsv"):
        assert (run / name).exists(), name
    assert (run / "neighbours.txt").read_text().startswith("king:")
    meta = (run / "projector" / "metadata.tsv").read_text().split("\n")
    vecs = (run / "projector" / "vectors.tsv").read_text().strip().split("\n")
    assert len(vecs) == m["vocab_size"] and len(vecs[0].split("\t")) == 16 and meta[0] == "the"


def test_gensim_loads_the_vectors(trained):
    from gensim.models import KeyedVectors

    _, root = trained
    text = KeyedVectors.load_word2vec_format(str(root / "run" / "vectors.txt"), binary=False)
    binary = KeyedVectors.load_word2vec_format(str(root / "run" / "vectors.bin"), binary=True)
    assert text.index_to_key == binary.index_to_key and text.index_to_key[0] == "the"
    assert text.vector_size == 16
    np.testing.assert_allclose(text["king"], binary["king"], atol=1e-5)


def test_export_round_trip_with_unknown_words(trained):
    import tensorflow as tf
    from gensim.models import KeyedVectors

    record, root = trained
    loaded = tf.saved_model.load(record["export"])
    meta = json.loads((Path(record["export"]) / "assets.extra" / "ksuite.json").read_text())
    assert meta["app"] == "word2vec" and meta["config"] == {
        "dim": 16, "window": 5, "vectors": "v", "corpus": "tiny.txt"}
    assert {"serving_default", "embed", "nearest"} <= set(loaded.signatures)
    kv = KeyedVectors.load_word2vec_format(str(root / "run" / "vectors.bin"), binary=True)
    out = loaded.signatures["embed"](words=tf.constant(["King", "qwertyuiop"]))
    assert out["known"].numpy().tolist() == [True, False]
    np.testing.assert_allclose(out["vectors"].numpy()[0], kv["king"], atol=1e-5)
    assert np.all(out["vectors"].numpy()[1] == 0)
    near = loaded.signatures["nearest"](words=tf.constant(["king", "nope"]), k=tf.constant(3))
    assert near["known"].numpy().tolist() == [True, False]
    got = [w.decode() for w in near["neighbours"].numpy()[0]]
    assert got == [w for w, _ in kv.most_similar("king", topn=3)]
    np.testing.assert_allclose(near["scores"].numpy()[0],
                               [s for _, s in kv.most_similar("king", topn=3)], atol=1e-4)
    assert near["neighbours"].numpy()[1].tolist() == [b"", b"", b""]


# --------------------------------------------------------------------------------------------
# Errors a user can cause: one line, non-zero exit, nothing written.
# --------------------------------------------------------------------------------------------


def test_missing_corpus_file_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--corpus", str(tmp_path / "nope.txt"), "--run-dir", str(tmp_path / "run"),
              "--no-export"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corpus file not found" in err[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_flags(tmp_path, capsys):
    for argv in (["--sample", "2"], ["--optimizer", "adam"], ["--window", "0"],
                 ["--clipnorm", "1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--run-dir", str(tmp_path / "run")])
        assert exc.value.code == 2
    assert not (tmp_path / "run").exists()


def test_corpus_with_no_frequent_word(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("every word here differs")
    with pytest.raises(data.UserError, match="min-count"):
        data.load_corpus(corpus=str(path), min_count=5)


def test_same_seed_same_vectors(corpus_file, tmp_path):
    """XLA on, op determinism off (the app's default): two runs with one seed agree exactly."""
    out = []
    for i in range(2):
        main(["--corpus", str(corpus_file), "--min-count", "2", "--dim", "8", "--epochs", "1",
              "--batch-size", "64", "--run-dir", str(tmp_path / f"r{i}"), "--no-export",
              "--verbose", "0", "--seed", "7"])
        out.append((tmp_path / f"r{i}" / "vectors.bin").read_bytes())
    assert out[0] == out[1]


def test_schedule_is_word2vec_linear_decay():
    """The shared factory gives word2vec.c's schedule: plain SGD, alpha linear from 0.025 to
    --final-learning-rate over steps x epochs (what the app built inline before the contract)."""
    import keras

    from shared.app import Data
    from shared.optim import learning_rate, make_optimizer
    from shared.schedules import LinearDecay

    args = APP.parse(["--epochs", "3", "--final-learning-rate", "2e-4"])
    config = APP.optimizer_config(args, Data(steps_per_epoch=7), name="sgd",
                                  final_learning_rate=args.final_learning_rate)
    schedule = learning_rate(config)
    assert isinstance(schedule, LinearDecay)
    assert schedule.get_config() == {"initial": 0.025, "final": 2e-4, "tau": 21}
    assert float(schedule(0)) == pytest.approx(0.025) and float(schedule(21)) == pytest.approx(2e-4)
    assert float(schedule(99)) == pytest.approx(2e-4)  # constant after tau
    optimizer = make_optimizer(config)
    assert type(optimizer) is keras.optimizers.SGD and float(optimizer.momentum) == 0.0


def test_backup_epoch_resumes_after_the_last_saved_epoch(tmp_path):
    from types import SimpleNamespace

    from apps.word2vec.train import backup_epoch

    run = SimpleNamespace(dir=tmp_path)
    assert backup_epoch(run) == 0
    meta = tmp_path / "checkpoints" / "backup" / "training_metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"epoch": 2}))
    assert backup_epoch(run) == 3  # epochs 0..2 done: the pipeline starts with epoch 3's pairs
    meta.write_text("{not json")
    assert backup_epoch(run) == 0


def test_validate_data(corpus_file):
    ok = APP.validate_data(APP.parse(["--corpus", str(corpus_file), "--min-count", "2"]))
    assert ok.ok and [c.name for c in ok.checks] == ["corpus: count", "corpus: vocabulary"]
    rare = APP.validate_data(APP.parse(["--corpus", str(corpus_file), "--min-count", "100000"]))
    assert not rare.ok and rare.failed[0].name == "corpus: vocabulary"
