"""word2vec (this suite) and gensim ``Word2Vec(sg=1)`` side by side, same corpus, same settings.

    python -m benchmarks.word2vec_vs_gensim --dataset gutenberg --limit 3000000
    python -m benchmarks.word2vec_vs_gensim --dataset gutenberg          # the full 10.1M words
    python -m benchmarks.word2vec_vs_gensim --dataset text8 --sample 1e-4  # where text8 is at hand

Both models get the same lower-case tokens (the app's tokenizer; gensim gets them as sentences of
10,000 tokens, its maximum), the same dimension, window, negatives, subsampling threshold,
min_count, epochs, initial and final learning rate; gensim runs with ``workers=2`` (the machine's
two cores). Both are evaluated by the same code (``apps/word2vec/evaluate.py``: analogies among
the 30,000 most frequent words, WordSim-353 Spearman); gensim's own
``evaluate_word_analogies(restrict_vocab=30000)`` is recorded too as a cross-check. Speed is corpus
words (all tokens, as gensim counts them) times epochs over the training wall time of each.

Subsampling: gensim discards with word2vec.c's rule (keep sqrt(t/f) + t/f), so the app runs
with ``--subsample-rule word2vec`` here for equal settings (``--subsample-rule paper`` to compare
the paper's rule instead). One JSON record is appended to
``benchmarks/results/word2vec_vs_gensim.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.side import Side  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.word2vec_vs_gensim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("auto", "text8", "gutenberg"), default="gutenberg")
    p.add_argument("--corpus", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N tokens (default: all)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negatives", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-4)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--subsample-rule", choices=("paper", "word2vec"), default="word2vec")
    p.add_argument("--skip-gensim", action="store_true")
    p.add_argument("--no-record", dest="record", action="store_false",
                   help="print only; do not append to benchmarks/results/word2vec_vs_gensim.jsonl")
    return p.parse_known_args(argv)  # unknown flags go to the app (e.g. --batch-size)


def run_gensim(args, tokens: list[str]) -> dict:
    from gensim.models import Word2Vec

    from apps.word2vec import data
    from apps.word2vec import evaluate as ev

    sentences = [tokens[i:i + 10_000] for i in range(0, len(tokens), 10_000)]
    model = Word2Vec(sg=1, vector_size=args.dim, window=args.window, negative=args.negatives,
                     sample=args.sample, min_count=args.min_count, epochs=args.epochs,
                     workers=args.workers, seed=args.seed, alpha=0.025, min_alpha=1e-4)
    model.build_vocab(sentences)
    t0 = time.time()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    seconds = time.time() - t0
    words, vectors = model.wv.index_to_key, model.wv.vectors
    sections = data.read_analogies(data.gensim_datapath("questions-words.txt"))
    pairs = data.read_word_pairs(data.gensim_datapath("wordsim353.tsv"))
    own, _ = model.wv.evaluate_word_analogies(data.gensim_datapath("questions-words.txt"),
                                              restrict_vocab=30_000)
    return {
        **ev.analogy_accuracy(words, vectors, sections),
        **ev.wordsim_spearman(words, vectors, pairs),
        "gensim_own_analogy_accuracy": float(own),
        "vocab_size": len(words),
        "train_seconds": round(seconds, 2),
        "words_per_sec": len(tokens) * args.epochs / seconds,
    }


def main(argv=None):
    args, extra = parse_args(argv)
    from apps.word2vec import data
    from apps.word2vec.train import main as app_main
    from benchmarks.run import git_commit, library_versions
    from shared.runs import cpu_model

    path, name = data.resolve_corpus(args.dataset, args.corpus)
    tokens = data.tokenize(data.read_text(path), args.limit)
    print(f"corpus {name}: {len(tokens):,} tokens", flush=True)
    settings = {k: getattr(args, k) for k in ("dim", "window", "negatives", "sample", "min_count",
                                              "epochs", "seed", "workers", "subsample_rule")}
    gensim = None
    if not args.skip_gensim:
        print("gensim Word2Vec(sg=1) ...", flush=True)
        gensim = run_gensim(args, tokens)
        print(f"gensim: analogy {gensim['analogy_accuracy']:.4f}, WordSim "
              f"{gensim['wordsim_spearman']:.4f}, {gensim['words_per_sec']:,.0f} words/s",
              flush=True)

    run_dir = tempfile.mkdtemp(prefix="word2vec-bench-", dir=os.environ.get("TMPDIR"))
    argv_app = ["--dataset", args.dataset, "--epochs", str(args.epochs), "--dim", str(args.dim),
                "--window", str(args.window), "--negatives", str(args.negatives),
                "--sample", str(args.sample), "--min-count", str(args.min_count),
                "--seed", str(args.seed), "--subsample-rule", args.subsample_rule,
                "--run-dir", run_dir, "--no-export", "--verbose", "2", *extra]
    if args.corpus:
        argv_app += ["--corpus", args.corpus]
    if args.limit:
        argv_app += ["--limit", str(args.limit)]
    t0 = time.time()
    ours = app_main(argv_app)["metrics"]
    wall = time.time() - t0

    record = {
        "app": "word2vec",
        "benchmark": "word2vec_vs_gensim",
        "corpus": name,
        "tokens": len(tokens),
        "settings": settings,
        "app_flags": argv_app,
        "word2vec": ours,
        "gensim": gensim,
        "app_wall_seconds": round(wall, 1),
        "libraries": {**library_versions(), "gensim": __import__("gensim").__version__},
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if gensim:
        record["analogy_gap_points"] = 100 * (gensim["analogy_accuracy"] - ours["analogy_accuracy"])
        record["speed_ratio"] = ours["words_per_sec"] / gensim["words_per_sec"]
        record["targets"] = {
            "analogy_within_2_points": record["analogy_gap_points"] <= 2.0,
            "speed_at_least_quarter": record["speed_ratio"] >= 0.25,
        }
    out = SIDE.append(record) if args.record else "(not recorded)"
    print(f"word2vec: analogy {ours['analogy_accuracy']:.4f}, WordSim "
          f"{ours['wordsim_spearman']:.4f}, {ours['words_per_sec']:,.0f} words/s")
    if gensim:
        print(f"gap {record['analogy_gap_points']:+.2f} points (gensim - ours), speed ratio "
              f"{record['speed_ratio']:.3f} -> {out}")
    return record


def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import commit, get, num, pct, table, times, when

    def pair(r, key, fmt):
        return f"{fmt(get(r, 'word2vec', key))} / {fmt(get(r, 'gensim', key))}"

    def gap(r):
        ours, theirs = get(r, "word2vec", "analogy_accuracy"), get(r, "gensim", "analogy_accuracy")
        return "–" if ours is None or theirs is None else f"{100 * (ours - theirs):+.1f} points"

    headers = ["date", "corpus", "tokens", "vocabulary", "analogy ours / gensim", "ours − gensim",
               "WordSim ours / gensim", "words/s ours", "words/s gensim", "speed ratio",
               "within 2 points", "commit"]
    return ["### word2vec vs gensim `Word2Vec(sg=1)`, same corpus and settings", "",
            "Analogy accuracy (30,000 most frequent words) and WordSim-353 Spearman, "
            "ours / gensim; speed ratio = our words/s over gensim's (2 workers).", "",
            *table(headers, [[when(r), r.get("corpus", "–"), r.get("tokens"),
                              get(r, "word2vec", "vocab_size"), pair(r, "analogy_accuracy", pct),
                              gap(r), pair(r, "wordsim_spearman", num),
                              get(r, "word2vec", "words_per_sec"),
                              get(r, "gensim", "words_per_sec"),
                              times(r.get("speed_ratio")),
                              get(r, "targets", "analogy_within_2_points"), commit(r)]
                             for r in rows])]


SIDE = Side("word2vec_vs_gensim", app="word2vec", render=render)


if __name__ == "__main__":
    main()
