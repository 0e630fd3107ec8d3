"""benchmarks/sentiment_vs_nbsvm.py: NBSVM's pieces on hand-made data, its renderer, and the
``--nbsvm-only`` measurement end to end on a tiny monkeypatched dataset (no real IMDB)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import sentiment_vs_nbsvm as nb

# Four reviews, three features (already binarized f^), labels 1 = positive.
F_HAT = np.array([[1, 1, 0],   # positive
                  [1, 0, 0],   # positive
                  [0, 1, 1],   # negative
                  [1, 0, 1]])  # negative
Y = np.array([1, 1, 0, 0])


def test_log_count_ratio_equals_the_hand_computed_values():
    # p = 1 + (2, 1, 0) = (3, 2, 1), |p|_1 = 6;  q = 1 + (1, 1, 2) = (2, 2, 3), |q|_1 = 7.
    expected = [math.log((3 / 6) / (2 / 7)), math.log((2 / 6) / (2 / 7)),
                math.log((1 / 6) / (3 / 7))]
    assert nb.log_count_ratio(F_HAT, Y) == pytest.approx(expected)
    # The same from a SciPy sparse matrix (what the vectorizer gives).
    import scipy.sparse as sp

    assert nb.log_count_ratio(sp.csr_matrix(F_HAT), Y) == pytest.approx(expected)
    # alpha is the smoothing: alpha = 0.5 gives p = (2.5, 1.5, 0.5), q = (1.5, 1.5, 2.5).
    assert nb.log_count_ratio(F_HAT, Y, alpha=0.5)[0] == pytest.approx(
        math.log((2.5 / 4.5) / (1.5 / 5.5)))


def test_features_are_the_binarized_counts_scaled_by_r():
    import scipy.sparse as sp

    r = np.array([0.5, -2.0, 3.0])
    dense = nb.nbsvm_features(F_HAT, r)
    assert dense.tolist() == [[0.5, -2.0, 0.0], [0.5, 0.0, 0.0], [0.0, -2.0, 3.0],
                              [0.5, 0.0, 3.0]]
    assert nb.nbsvm_features(sp.csr_matrix(F_HAT), r).toarray().tolist() == dense.tolist()


def test_interpolation_formula():
    w = np.array([1.0, -3.0, 0.0, 2.0])  # mean |w| = 1.5
    # w' = (1 - 0.25) * 1.5 + 0.25 * w
    assert nb.interpolate(w).tolist() == pytest.approx([1.375, 0.375, 1.125, 1.625])
    assert nb.interpolate(w, beta=1.0).tolist() == pytest.approx(w.tolist())  # the plain SVM
    assert nb.interpolate(w, beta=0.0).tolist() == pytest.approx([1.5] * 4)  # NB-like, constant
    assert nb.BETA == 0.25 and nb.C == 1.0 and nb.ALPHA == 1.0  # the paper's values


def test_tokens_split_on_ascii_whitespace_only_as_the_grus_vectorizer():
    # tf.strings.split keeps a no-break space inside its token; so must the baseline.
    assert nb.split_whitespace("not  good\tat\nall\xa0really ") == ["not", "good", "at",
                                                                   "all\xa0really"]


def test_bigrams_separate_what_unigrams_cannot():
    """"good movie" / "not bad" are positive, "not good" / "bad movie" negative: any linear
    model on unigrams scores (not + good) + (bad + movie) = (good + movie) + (not + bad), so it
    cannot get all four right; with bigrams NBSVM does, and generalizes to new reviews."""
    pytest.importorskip("sklearn")
    train = ["good movie", "not bad", "not good", "bad movie",
             "a good movie", "not bad at all", "really not good", "a bad movie"]
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    vectorizer = nb.ngram_vectorizer()
    f_hat = vectorizer.fit_transform(train)
    assert f_hat.max() == 1  # binarized
    model = nb.fit_nbsvm(f_hat, y)
    assert nb.predict(model, f_hat).tolist() == y.tolist()
    assert model.converged
    test = ["this is not bad", "honestly not good", "a good movie indeed", "what a bad movie"]
    assert nb.predict(model, vectorizer.transform(test)).tolist() == [1, 0, 1, 0]
    # The unigram features alone: some training review is misclassified.
    uni = nb.ngram_vectorizer((1, 1))
    f_uni = uni.fit_transform(train[:4])
    unigram_model = nb.fit_nbsvm(f_uni, y[:4])
    assert nb.predict(unigram_model, f_uni).tolist() != y[:4].tolist()


def test_vectorizer_binarizes_and_keeps_the_standardized_tokens():
    pytest.importorskip("sklearn")
    vectorizer = nb.ngram_vectorizer()
    f = vectorizer.fit_transform(["good good film", "it's"])
    vocab = vectorizer.vocabulary_
    assert f[0, vocab["good"]] == 1 and f[0, vocab["good good"]] == 1
    assert "it's" in vocab  # no token pattern of its own: the standardization decides


# ------------------------------------------------------------------------------------ render

def _record(**extra):
    r = {"benchmark": "sentiment_vs_nbsvm", "app": "sentiment_gru", "budget": "default",
         "time": "2026-12-04T10:00:00+0000", "git_commit": "abc1234",
         "gru": {"test_accuracy": 0.8931, "wall_seconds": 5400.0},
         "nbsvm": {"test_accuracy": 0.9071, "val_accuracy": 0.9088, "wall_seconds": 95.3,
                   "reviews": {"train": 25000, "val": 0, "test": 25000}},
         "reference": {"nbsvm_bi_imdb_test_accuracy": 0.9122}, "gru_minus_nbsvm": -1.4}
    r.update(extra)
    return r


def test_render_names_the_flags_the_gru_ran_with_beyond_its_budget():
    command = "python -m apps.sentiment_gru.train {}--run-dir runs/x --no-export"
    plain = _record(gru={"test_accuracy": 0.9, "command": command.format("")})
    probe = _record(gru={"test_accuracy": 0.9, "command": command.format("--units 64 ")})
    rows = [line for line in nb.render([plain, probe]) if line.startswith("| 2026-")]
    assert [[c.strip() for c in row.strip("|").split("|")][1] for row in rows] == [
        "default", "default + `--units 64`"]


def test_render_header_and_one_row_per_record_with_missing_keys():
    assert nb.render([])[0] == \
        "### IMDB: the GRU beside NBSVM-bigram (same split, same tokenisation)"
    full = _record()
    nbsvm_only = _record(budget=None, gru_minus_nbsvm=None)
    del nbsvm_only["gru"]
    bare = {"time": "2026-12-05T09:00:00+0000"}  # every key missing
    lines = nb.render([full, nbsvm_only, bare])
    assert lines[0].startswith("### IMDB: the GRU beside NBSVM-bigram")
    rows = [line for line in lines if line.startswith("| 2026-")]
    assert len(rows) == 3
    header = next(line for line in lines if line.startswith("| date |"))
    assert "GRU test acc" in header and "NBSVM test acc" in header and "commit" in header
    assert "89.31%" in rows[0] and "90.71%" in rows[0] and "-1.40" in rows[0]
    assert "90.0 min" in rows[0] and "95 s" in rows[0] and "91.22%" in rows[0]
    assert "abc1234" in rows[0] and "| 25,000 |" in rows[0]  # both models' training reviews
    assert "training reviews" in header
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    assert cells[1] == "–" and cells[2] == "25,000" and cells[3] == cells[4] == "–"
    assert cells[5] == "90.71%"
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells.count("–") == len(cells) - 2  # the date and the paper's figure only
    assert "91.22%" in rows[2]


def test_side_benchmark_is_discovered_under_the_sentiment_app():
    from benchmarks.side import discover

    side = discover()["sentiment_vs_nbsvm"]
    assert side is nb.SIDE and side.app == "sentiment_gru"


# ------------------------------------------------------------------------------ end to end

def _tiny_imdb():
    """A stand-in for apps.sentiment_gru.data.load: raw review bytes, 0/1 labels."""
    pos = [b"A good movie.<br /><br />Really GOOD!", b"Not bad at all, a good film",
           b"good acting, good story", b"not bad; I liked it"]
    neg = [b"Not good. A bad movie.", b"bad acting, not good at all", b"a BAD film",
           b"not good, not funny"]
    texts, labels = pos + neg, [1] * len(pos) + [0] * len(neg)
    x, y = np.array(texts * 2, dtype=object), np.array(labels * 2, dtype="int32")
    # Validation and test hold a third copy of each review: a model that fits its training
    # reviews gets them all right (the check is of the plumbing, not of generalization).
    third = np.array(texts, dtype=object), np.array(labels, dtype="int32")
    val, test = [0, 1, 4, 5], [2, 3, 6, 7]
    return (x, y), (third[0][val], third[1][val]), (third[0][test], third[1][test])


@pytest.fixture()
def tiny(monkeypatch, tmp_path):
    """The loader replaced by a tiny dataset, records redirected to a temporary folder."""
    pytest.importorskip("sklearn")
    pytest.importorskip("tensorflow")  # the GRU's standardize
    from apps.sentiment_gru import data
    from benchmarks import run as bench_run

    calls = []

    def load(limit=None, seed=42, val_size=0, data_dir=None, test_limit=None):
        calls.append({"seed": seed, "limit": limit, "data_dir": data_dir, "val_size": val_size})
        train, val, test = _tiny_imdb()
        if not val_size:  # as data.load: every training review trains, none validates
            val = val[0][:0], val[1][:0]
        return train, val, test

    monkeypatch.setattr(data, "load", load)
    monkeypatch.setattr(bench_run, "RESULTS", tmp_path / "results")
    return calls, tmp_path / "results"


def test_nbsvm_only_runs_end_to_end_and_appends_one_record(tiny, monkeypatch):
    from benchmarks import run as bench_run

    calls, results = tiny

    def no_gru(*args, **kwargs):
        raise AssertionError("--nbsvm-only trained the GRU")

    monkeypatch.setattr(bench_run, "run_once", no_gru)
    record = nb.main(["--nbsvm-only"])
    # The GRU's default split: all training reviews, nothing held out.
    assert calls == [{"seed": 42, "limit": None, "data_dir": None, "val_size": 0}]
    assert "gru" not in record and record["budget"] is None
    assert "gru_minus_nbsvm" not in record
    n = record["nbsvm"]
    assert n["reviews"] == {"train": 16, "val": 0, "test": 4}
    assert n["test_accuracy"] == n["train_accuracy"] == 1.0 and n["val_accuracy"] is None
    assert n["features"] > 10 and n["wall_seconds"] >= 0
    assert set(n["seconds"]) == {"vectorize", "train", "predict", "load"}
    assert record["reference"]["nbsvm_bi_imdb_test_accuracy"] == 0.9122
    assert "scikit-learn" in record["libraries"] and len(record["load_average"]) == 3
    lines = (results / "sentiment_vs_nbsvm.jsonl").read_text().splitlines()
    assert len(lines) == 1
    saved = json.loads(lines[0])
    assert saved["benchmark"] == "sentiment_vs_nbsvm" and saved["nbsvm"]["features"] == \
        n["features"]
    assert not (results / "sentiment_gru.jsonl").exists()
    # The renderer reads what was written.
    assert sum(line.startswith("| 20") for line in nb.render([saved])) == 1


def test_with_the_gru_both_records_are_written(tiny, monkeypatch, tmp_path):
    from benchmarks import run as bench_run

    _, results = tiny
    seen = {}

    def fake_run_once(app, budget, extra, tag, runs_dir=None, resume=False):
        seen.update(app=app, budget=budget, extra=extra, tag=tag, runs_dir=runs_dir,
                    resume=resume)
        return {"app": app, "budget": budget, "metric": "accuracy", "value": 0.9,
                "epochs": 1, "best_epoch": 1, "wall_seconds": 12.5, "resumed": resume,
                "command": "python -m apps.sentiment_gru.train", "run_dir": str(tmp_path)}

    monkeypatch.setattr(bench_run, "run_once", fake_run_once)
    record = nb.main(["--budget", "tiny", "--runs-dir", str(tmp_path / "runs"), "--resume"])
    assert seen == {"app": "sentiment_gru", "budget": "tiny", "extra": [], "tag": "0",
                    "runs_dir": tmp_path / "runs", "resume": True}
    assert record["gru"]["test_accuracy"] == 0.9 and record["gru"]["wall_seconds"] == 12.5
    assert record["gru_minus_nbsvm"] == pytest.approx(100 * (0.9 - 1.0))
    gru_lines = (results / "sentiment_gru.jsonl").read_text().splitlines()
    assert len(gru_lines) == 1 and json.loads(gru_lines[0])["repeat"] == 0
    assert len((results / "sentiment_vs_nbsvm.jsonl").read_text().splitlines()) == 1


def test_nbsvm_shares_the_grus_validation_split(tiny, monkeypatch, tmp_path):
    """A GRU budget or flag that holds reviews out holds the same ones out of NBSVM's training."""
    from benchmarks import run as bench_run

    calls, _ = tiny
    assert nb.gru_val_size(None, []) == 0  # the app's default
    assert nb.gru_val_size("default", ["--val-size", "2500"]) == 2500
    monkeypatch.setattr(bench_run, "run_once", lambda *a, **k: {
        "app": "sentiment_gru", "metric": "accuracy", "value": 0.9, "epochs": 1,
        "wall_seconds": 1.0})
    monkeypatch.setattr(nb, "gru_val_size", lambda budget, extra: 4)
    record = nb.main(["--budget", "tiny", "--runs-dir", str(tmp_path / "runs")])
    assert calls[-1]["val_size"] == 4
    assert record["nbsvm"]["reviews"]["val"] == 4 and record["nbsvm"]["val_accuracy"] == 1.0


def _has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from benchmarks import run as bench_run

    monkeypatch.setattr(bench_run, "RESULTS", tmp_path / "results")
    with pytest.raises(SystemExit) as exc:
        nb.main(["--budget", "enormous"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown budget 'enormous'") and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        nb.main(["--nbsvm-only", "--data-dir", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err
    if _has_sklearn():  # a folder without the aclImdb layout: the app's check
        (tmp_path / "empty").mkdir()
        with pytest.raises(SystemExit) as exc:
            nb.main(["--nbsvm-only", "--data-dir", str(tmp_path / "empty")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "aclImdb layout" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:  # argparse: a flag that does not exist
        nb.main(["--nbsvm-onyl"])
    assert exc.value.code == 2
    assert not (tmp_path / "results").exists()


def test_help_has_one_line_per_flag():
    from tests.helpers import run_module

    out = run_module("benchmarks.sentiment_vs_nbsvm", "--help", timeout=60).stdout
    for flag in ("--budget", "--nbsvm-only", "--runs-dir", "--resume", "--data-dir",
                 "--no-record"):
        assert flag in out
