"""IMDB: the suite's GRU beside NBSVM with word bigrams, on the same split and tokenisation.

    python -m benchmarks.sentiment_vs_nbsvm                        # GRU (default budget) + NBSVM
    python -m benchmarks.sentiment_vs_nbsvm --budget small --runs-dir /data/runs --resume
    python -m benchmarks.sentiment_vs_nbsvm --nbsvm-only           # NBSVM alone (a few minutes)

Why this baseline. A practitioner deciding whether a recurrent network is worth its training time
on review polarity compares it with the linear model first: a bag of uni- and bigrams with an SVM
on Naive Bayes log-count ratios, NBSVM (Wang & Manning 2012, "Baselines and Bigrams: Simple, Good
Sentiment and Topic Classification", ACL). It trains in a minute on a CPU and its published IMDB
figure, 91.22% test accuracy (NBSVM-bi, the paper's Table 3), is above most single recurrent
models of its time. The GRU has to beat that to earn its cost.

The method (the paper's section 2), on binarized features f^ (1 if the uni- or bigram occurs in
the review, else 0), labels y in {0, 1}:

* log-count ratio (§2.1): p = alpha + sum of f^ over positive reviews, q = alpha + the same over
  negative reviews, r = log((p / |p|_1) / (q / |q|_1)), alpha = 1;
* a linear SVM (§2.2: L2-regularised, squared hinge, LIBLINEAR; C = 1) trained on x^ = r * f^
  (elementwise: each feature scaled by its ratio);
* interpolation (§2.3) between the SVM's weights and their mean magnitude (which makes the model
  lean towards Naive Bayes, whose score is the sum of r over the review's features):
  w' = (1 - beta) * mean(|w|) + beta * w, beta = 0.25.

The values alpha = 1, C = 1, beta = 0.25 are the paper's for every dataset (its experimental
setup) and those of the authors' released code (sidaw/nbsvm, ``src/master.m``, which trains
with LIBLINEAR ``-s 1 -c 1``: the dual L2-loss solver, no bias term). Nothing is tuned here.

Same data as the GRU: ``apps.sentiment_gru.data.load(seed=42, val_size=V)`` with the GRU's own
``--val-size`` at the budget (the default: V = 0, all 25,000 training reviews, as the paper
trained; with V > 0 the same 25,000 - V / V split), and the 25,000 test reviews. Same
tokenisation: the GRU's own ``standardize`` (lower case, ``<br />`` removed, ASCII punctuation
removed), then a split on ASCII whitespace (what its
``TextVectorization(split="whitespace")`` does). The vocabulary is every uni- and bigram of the
training reviews (no cut-off: the paper's NBSVM keeps them all).

The GRU runs first, exactly as ``python -m benchmarks.run sentiment_gru --budget B`` runs it
(``benchmarks.run.run_once``, a child process; ``--runs-dir``/``--resume`` as there), and its
normal record is appended to ``benchmarks/results/sentiment_gru.jsonl``. Then NBSVM trains and
predicts in this process, timed in three parts (vectorising, training, predicting; reading the
review files is timed apart). One record goes to ``benchmarks/results/sentiment_vs_nbsvm.jsonl``.

Needs scikit-learn (benchmark-only: the app never imports this module).
"""

from __future__ import annotations

import argparse
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.side import Side
from shared.errors import UserError, exit_on_user_error

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

APP = "sentiment_gru"
SEED = 42  # apps.sentiment_gru.data.load's and the GRU's default seed: the same split

# Wang & Manning 2012's settings: the values of the paper's experimental setup (§4.1), the same
# for every dataset, and of the authors' src/master.m (params.a = 1, params.C = 1,
# params.beta = 0.25; binarized features: params.trainp = params.testp = 0).
ALPHA = 1.0  # §2.1: the smoothing added to every feature count of p and q
C = 1.0  # §2.2 + §4.1: NBSVM's C (LIBLINEAR -c 1; the paper's plain SVM used C = 0.1)
BETA = 0.25  # §2.3 + §4.1: w' = (1 - beta) * mean(|w|) + beta * w
NGRAMS = (1, 2)  # "NBSVM-bi": unigrams and bigrams (the "-bi" rows of the paper's tables)

# The solver's stopping rule: scikit-learn's LinearSVC defaults (LIBLINEAR's own `train` stops
# at eps = 0.1, far looser). On the 22,500 reviews the dual solver reaches max_iter before
# tol (recorded as svm_converged = false); the accuracy is the paper's all the same.
SVM_TOL = 1e-4
SVM_MAX_ITER = 1000

# The reference: NBSVM-bi on IMDB, 25,000 train / 25,000 test reviews (Table 3).
PAPER_NBSVM_BI_IMDB = 0.9122
PAPER = "Wang & Manning 2012, Baselines and Bigrams, Table 3 (NBSVM-bi, IMDB)"

# tf.strings.split's (and so TextVectorization(split="whitespace")'s) separators: C isspace in
# the ASCII range only -- a no-break space stays inside its token, as in the GRU's vocabulary.
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")


# -------------------------------------------------------------------------------- the method

def split_whitespace(text: str) -> list[str]:
    """A standardized review's tokens, split as the GRU's ``TextVectorization`` splits it."""
    return [t for t in _WHITESPACE.split(text) if t]


def standardized(texts) -> list[str]:
    """Raw review bytes -> the GRU's standardized strings (``apps.sentiment_gru.data.standardize``:
    lower case, ``<br />`` to spaces, ASCII punctuation removed)."""
    from apps.sentiment_gru.data import standardize

    return [t.decode("utf-8", "replace") for t in standardize(np.asarray(texts)).numpy()]


def ngram_vectorizer(ngram_range=NGRAMS):
    """A scikit-learn ``CountVectorizer`` giving binarized (f^, §2.1) uni+bigram features of
    already standardized strings: no lower-casing or token pattern of its own."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(tokenizer=split_whitespace, preprocessor=None, lowercase=False,
                           token_pattern=None, ngram_range=tuple(ngram_range), binary=True,
                           dtype=np.float64)


def log_count_ratio(f_hat, y, alpha: float = ALPHA) -> np.ndarray:
    """r = log((p / |p|_1) / (q / |q|_1)), p = alpha + sum of the positive rows of f^, q the same
    over the negative rows (§2.1). ``f_hat``: [reviews, features] 0/1 (dense or SciPy sparse),
    ``y``: 0/1 labels."""
    y = np.asarray(y)
    p = alpha + np.asarray(f_hat[y == 1].sum(axis=0), dtype=np.float64).ravel()
    q = alpha + np.asarray(f_hat[y == 0].sum(axis=0), dtype=np.float64).ravel()
    return np.log((p / p.sum()) / (q / q.sum()))


def nbsvm_features(f_hat, r: np.ndarray):
    """x^ = r o f^: every review's binarized features scaled by their log-count ratio (§2.3)."""
    import scipy.sparse as sp

    if sp.issparse(f_hat):
        return sp.csr_matrix(f_hat @ sp.diags(r))
    return np.asarray(f_hat, dtype=np.float64) * r


def interpolate(w: np.ndarray, beta: float = BETA) -> np.ndarray:
    """w' = (1 - beta) * w_bar + beta * w, w_bar = |w|_1 / |V| the mean magnitude of w (§2.3)."""
    w = np.asarray(w, dtype=np.float64)
    return (1.0 - beta) * np.mean(np.abs(w)) + beta * w


@dataclass
class NBSVM:
    """A trained NBSVM: the log-count ratios r and the interpolated weights w' (no bias term,
    as the authors' LIBLINEAR training); ``iterations``/``converged`` are the SVM solver's."""

    r: np.ndarray
    w: np.ndarray
    iterations: int = 0
    converged: bool = True

    def decision(self, f_hat) -> np.ndarray:
        """w'^T x^ for each review: > 0 is positive."""
        return np.asarray(nbsvm_features(f_hat, self.r) @ self.w).ravel()


def fit_nbsvm(f_hat, y, alpha: float = ALPHA, c: float = C, beta: float = BETA,
              seed: int = 0) -> NBSVM:
    """r from the training reviews, a linear SVM on x^ = r o f^, then w' (§2.1-2.3).

    The SVM is scikit-learn's ``LinearSVC``, i.e. LIBLINEAR's L2-regularised squared-hinge SVM
    solved in the dual (LIBLINEAR ``-s 1``, the authors' solver), without an intercept (the
    authors' ``train`` call has no ``-B``); ``seed`` fixes the dual coordinate descent's order."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    r = log_count_ratio(f_hat, y, alpha)
    svm = LinearSVC(C=c, loss="squared_hinge", penalty="l2", dual=True, fit_intercept=False,
                    tol=SVM_TOL, max_iter=SVM_MAX_ITER, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(nbsvm_features(f_hat, r), np.asarray(y))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return NBSVM(r=r, w=interpolate(svm.coef_.ravel(), beta), iterations=int(svm.n_iter_),
                 converged=converged)


def predict(model: NBSVM, f_hat) -> np.ndarray:
    """0/1 labels: positive where w'^T x^ > 0."""
    return (model.decision(f_hat) > 0).astype("int32")


def accuracy(predicted, y) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(y)))


# ---------------------------------------------------------------------------- the measurement

def gru_val_size(budget: str | None, extra: list[str]) -> int:
    """The GRU's ``--val-size`` at ``budget`` (its flags, then ``extra``; None: the app's
    defaults): the split NBSVM must share."""
    from apps.sentiment_gru.train import APP as GRU
    from benchmarks.budgets import BUDGETS

    flags = BUDGETS[APP]["budgets"][budget] if budget else []
    return GRU.parse([*flags, *extra]).val_size


def run_nbsvm(data_dir=None, val_size: int = 0) -> dict:
    """NBSVM-bigram trained on the GRU's training reviews (all 25,000 with ``val_size`` 0),
    evaluated on its validation reviews (if any) and the 25,000 test reviews; accuracies,
    timings and sizes."""
    from apps.sentiment_gru import data

    t0 = time.perf_counter()
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = data.load(seed=SEED, val_size=val_size,
                                                               data_dir=data_dir)
    load_seconds = time.perf_counter() - t0
    print(f"reviews: {len(x_tr):,} train / {len(x_val):,} validation / {len(x_test):,} test "
          f"({load_seconds:.0f} s to read)", flush=True)

    t0 = time.perf_counter()
    vectorizer = ngram_vectorizer()
    f_tr = vectorizer.fit_transform(standardized(x_tr))
    f_val = vectorizer.transform(standardized(x_val)) if len(x_val) else None
    f_test = vectorizer.transform(standardized(x_test))
    vectorize_seconds = time.perf_counter() - t0
    print(f"vectorised: {f_tr.shape[1]:,} uni+bigram features ({vectorize_seconds:.0f} s)",
          flush=True)

    t0 = time.perf_counter()
    model = fit_nbsvm(f_tr, y_tr)
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    val_pred = predict(model, f_val) if f_val is not None else None
    test_pred = predict(model, f_test)
    predict_seconds = time.perf_counter() - t0
    result = {
        "test_accuracy": accuracy(test_pred, y_test),
        "val_accuracy": accuracy(val_pred, y_val) if val_pred is not None else None,
        "train_accuracy": accuracy(predict(model, f_tr), y_tr),
        "features": int(f_tr.shape[1]),
        "reviews": {"train": len(x_tr), "val": len(x_val), "test": len(x_test)},
        "wall_seconds": round(vectorize_seconds + train_seconds + predict_seconds, 2),
        "seconds": {"vectorize": round(vectorize_seconds, 2), "train": round(train_seconds, 2),
                    "predict": round(predict_seconds, 2), "load": round(load_seconds, 2)},
        "svm_iterations": model.iterations,
        "svm_converged": model.converged,
        "settings": {"alpha": ALPHA, "C": C, "beta": BETA, "ngram_range": list(NGRAMS),
                     "binary": True, "loss": "squared_hinge", "penalty": "l2", "dual": True,
                     "intercept": False, "seed": SEED, "svm_seed": 0, "tol": SVM_TOL,
                     "max_iter": SVM_MAX_ITER,
                     "tokens": "apps.sentiment_gru.data.standardize + ASCII-whitespace split"},
    }
    val = result["val_accuracy"]
    print(f"NBSVM-bigram: test {100 * result['test_accuracy']:.2f}%, validation "
          f"{'–' if val is None else f'{100 * val:.2f}%'} "
          f"({result['wall_seconds']:.0f} s: vectorise "
          f"{vectorize_seconds:.0f}, train {train_seconds:.0f}, predict {predict_seconds:.1f}; "
          f"{model.iterations} SVM iterations)", flush=True)
    return result


def run_gru(budget: str, runs_dir: Path | None, resume: bool, extra: list[str]) -> dict:
    """The GRU at ``budget`` as ``python -m benchmarks.run sentiment_gru --budget B`` runs it,
    its record appended to results/sentiment_gru.jsonl as there."""
    from benchmarks import run

    record = run.run_once(APP, budget, extra, tag="0", runs_dir=runs_dir, resume=resume)
    record["repeat"] = 0
    path = run.append_record(APP, record)
    print(f"{APP} [{budget}] {record['metric']} = {record['value']:.4f} in {record['epochs']} "
          f"epochs, {run.wall_seconds_of(record)} s -> {path}", flush=True)
    return record


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.sentiment_vs_nbsvm",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="default", help="the GRU's budget (benchmarks/budgets.py)")
    p.add_argument("--nbsvm-only", action="store_true", help="skip the GRU; record NBSVM alone")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="GRU run directories (default benchmarks/runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the GRU's run directory from its last backup")
    p.add_argument("--data-dir", default=None, help="an extracted aclImdb/ (default: the mirror)")
    p.add_argument("--no-record", dest="record", action="store_false",
                   help="print only; append nothing to sentiment_vs_nbsvm.jsonl")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    from benchmarks.budgets import BUDGETS
    from benchmarks.run import git_commit, library_versions, wall_seconds_of
    from shared.runs import cpu_model

    budgets = BUDGETS[APP]["budgets"]
    if not args.nbsvm_only and args.budget not in budgets:
        raise UserError(f"unknown budget {args.budget!r} for {APP}; choose from "
                        f"{', '.join(budgets)}")
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise UserError(f"--data-dir {args.data_dir}: no such folder (an extracted aclImdb/)")
    try:
        import sklearn
    except ImportError:
        raise UserError("scikit-learn is not installed (this benchmark's baseline needs it): "
                        "pip install scikit-learn") from None

    gru = None
    extra = ["--data-dir", str(args.data_dir)] if args.data_dir else []
    val_size = gru_val_size(None if args.nbsvm_only else args.budget, extra)
    if not args.nbsvm_only:
        gru = run_gru(args.budget, args.runs_dir, args.resume, extra)
    nbsvm = run_nbsvm(args.data_dir, val_size)

    import scipy

    record = {
        "app": APP,
        "budget": None if args.nbsvm_only else args.budget,
        "nbsvm": nbsvm,
        "reference": {"nbsvm_bi_imdb_test_accuracy": PAPER_NBSVM_BI_IMDB, "source": PAPER},
        "libraries": {**library_versions(), "scikit-learn": sklearn.__version__,
                      "scipy": scipy.__version__},
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if gru is not None:
        record["gru"] = {"test_accuracy": gru["value"], "wall_seconds": wall_seconds_of(gru),
                         "epochs": gru.get("epochs"), "best_epoch": gru.get("best_epoch"),
                         "resumed": gru.get("resumed"), "command": gru.get("command"),
                         "run_dir": gru.get("run_dir")}
        record["gru_minus_nbsvm"] = round(100 * (gru["value"] - nbsvm["test_accuracy"]), 2)
        print(f"GRU - NBSVM: {record['gru_minus_nbsvm']:+.2f} points", flush=True)
    if args.record:
        print(f"-> {SIDE.append(record)}", flush=True)
    return record


# ------------------------------------------------------------------------------------ the report

def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import budget_label, commit, get, minutes, table, when

    def pct2(value):
        return "–" if value is None else f"{100 * value:.2f}%"

    def points(value):
        return "–" if value is None else f"{value:+.2f}"

    def thousands(value):
        return "–" if value is None else f"{value:,}"

    def budget_of(record):  # with the flags the GRU's command added to its budget's
        return budget_label({**(record.get("gru") or {}), "budget": record.get("budget") or "–"},
                            {})

    headers = ["date", "budget", "training reviews", "GRU test acc", "GRU wall",
               "NBSVM test acc", "NBSVM val acc",
               "NBSVM wall", "GRU − NBSVM (points)", "paper's NBSVM-bi", "commit"]
    return ["### IMDB: the GRU beside NBSVM-bigram (same split, same tokenisation)", "",
            ("NBSVM (Wang & Manning 2012: an SVM on Naive Bayes log-count ratios of binarized "
             "uni+bigrams, alpha = 1, C = 1, beta = 0.25) trained on the GRU's training reviews "
             "(both models on the same ones) with the GRU's own standardisation, tested on the same 25,000 reviews; "
             "its wall time is vectorising + training + predicting, the GRU's its whole run, "
             "and the paper's figure (trained on 25,000) is the reference."),
            "",
            *table(headers, [[when(r), budget_of(r),
                              thousands(get(r, "nbsvm", "reviews", "train")),
                              pct2(get(r, "gru", "test_accuracy")),
                              minutes(get(r, "gru", "wall_seconds")),
                              pct2(get(r, "nbsvm", "test_accuracy")),
                              pct2(get(r, "nbsvm", "val_accuracy")),
                              minutes(get(r, "nbsvm", "wall_seconds")),
                              points(r.get("gru_minus_nbsvm")),
                              pct2(get(r, "reference", "nbsvm_bi_imdb_test_accuracy",
                                       default=PAPER_NBSVM_BI_IMDB)),
                              commit(r)]
                             for r in rows])]


SIDE = Side("sentiment_vs_nbsvm", app=APP, render=render)


if __name__ == "__main__":
    main()
