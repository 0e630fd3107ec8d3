"""Single-review serving latency of the sentiment_gru SavedModel, reloaded as TF Serving does.

    python -m benchmarks.sentiment_latency                         # default architecture
    python -m benchmarks.sentiment_latency --saved-model saved_models/sentiment_gru/1

Without ``--saved-model``, the default configuration's vectorizer (adapted on the 25,000 training
reviews) and model (untrained weights: the compute, hence the latency, does not depend on the
weight values) are exported to a temporary folder with the app's own ``APP.export``. The SavedModel
is reloaded with ``tf.saved_model.load`` and ``serving_default`` is called with one review at a
time: real test reviews of the 10th/50th/90th percentile length, each ``--repeat`` times after a
warm-up. Then the same version is served by the local TF-Serving-compatible server and each
review is POSTed alone to ``/v1/models/sentiment_gru:predict`` by the suite's RestClient (one
kept-alive HTTP session; ``rest_*`` results: JSON encoding, HTTP and the server included).
One JSON line goes to ``benchmarks/results/sentiment_latency.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.side import Side  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.run import git_commit, library_versions  # noqa: E402
from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.runs import cpu_model  # noqa: E402


def _export_default(tmp: str, seed: int) -> tuple[str, str]:
    """The app's own data and model steps at its default flags (no training), exported with its
    own endpoints by ``APP.export`` into ``tmp``; returns the folder and the model's policy."""
    import keras

    from apps.sentiment_gru import data
    from apps.sentiment_gru.train import APP
    from shared.app import Data
    from shared.precision import dtype_policy, resolve_precision

    args = APP.parse(["--embeddings", "random", "--export-dir", tmp, "--seed", str(seed)])
    keras.utils.set_random_seed(seed)
    (x_tr, _), _, _ = data.load(None, seed)
    state = Data(vectorizer=data.make_vectorizer(x_tr, args.max_tokens, args.sequence_length),
                 initial=None, lm=None)
    # In the policy the runner builds the app's model in (shared/app.py): the served layers
    # compute in it (mixed_bfloat16 on a CPU with bfloat16 hardware, since 2026-12-06).
    args.precision = resolve_precision(args.precision, APP.precision_for(args))
    with dtype_policy(args.precision):
        model = APP.build_model(args, state, run=None)
    return str(APP.export(args, model, state, {}, run=None)), args.precision


def _latency_ms(call, repeat: int, warmup: int = 5) -> dict:
    """Median / p90 / mean milliseconds of ``repeat`` calls of ``call()``, after ``warmup``
    untimed ones (the first calls trace and allocate)."""
    import numpy as np

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(float(np.median(times)), 2),
            "p90_ms": round(float(np.percentile(times, 90)), 2),
            "mean_ms": round(float(np.mean(times)), 2)}


def _report(q: int, review, stats: dict, repeat: int, rest: bool = False) -> dict:
    """``{"[rest_]p<q>_length_review": {words, median_ms, p90_ms, mean_ms}}``, printed."""
    words = len(review.split())
    print(f"{'REST, ' if rest else ''}review of {words} words (p{q} length): median "
          f"{stats['median_ms']} ms, p90 {stats['p90_ms']} ms over {repeat} calls")
    return {f"{'rest_' if rest else ''}p{q}_length_review": {"words": words, **stats}}


def _rest_latency(version_dir: str, reviews: dict, repeat: int) -> dict:
    """One-review REST predict calls to the local server serving the model: ``rest_*`` keys."""
    from pathlib import Path

    from serving.client import RestClient
    from serving.server import ModelServer, ServerOptions

    base = Path(version_dir).resolve().parent
    server = ModelServer(ServerOptions(port=None, rest_api_port=0, model_name="sentiment_gru",
                                       model_base_path=str(base),
                                       file_system_poll_wait_seconds=0)).start()
    out = {}
    try:
        with RestClient(f"127.0.0.1:{server.rest_port}", timeout=30, retries=0) as rest:
            for q, review in reviews.items():
                text = [review.decode("utf-8", "replace")]
                stats = _latency_ms(lambda: rest.predict("sentiment_gru", instances=text), repeat)
                out.update(_report(q, review, stats, repeat, rest=True))
    finally:
        server.stop()
    return out


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sentiment_latency",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", default=None, help="a sentiment_gru version folder")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per review")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        raise UserError("--repeat must be at least 1")

    import numpy as np
    import tensorflow as tf

    from apps.sentiment_gru import data

    with tempfile.TemporaryDirectory(prefix="sentiment-latency-") as tmp:
        path, policy = (args.saved_model, None) if args.saved_model else _export_default(
            tmp, args.seed)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise UserError(f"{path} is not a SavedModel folder (no saved_model.pb)")
        t0 = time.perf_counter()
        serve = tf.saved_model.load(path).signatures["serving_default"]
        load_seconds = time.perf_counter() - t0

        x_test, _ = data.read_reviews(data.dataset_dir() / "test", args.seed, shuffle=True)
        x_test = x_test[:2000]
        words = np.array([len(t.split()) for t in x_test])
        picked = {q: x_test[int(np.argmin(np.abs(words - np.percentile(words, q))))]
                  for q in (10, 50, 90)}
        results = {}
        for q, text in picked.items():
            review = tf.constant([text])
            stats = _latency_ms(lambda: serve(reviews=review)["probability"].numpy(),
                                args.repeat)
            results.update(_report(q, text, stats, args.repeat))
        results.update(_rest_latency(path, picked, args.repeat))
    record = {
        "app": "sentiment_gru",
        "benchmark": "single_review_latency",
        "saved_model": args.saved_model or "default architecture, untrained weights (temporary)",
        "precision": policy,  # the default model's training policy (None: a given SavedModel)
        "load_seconds": round(load_seconds, 2),
        "repeat": args.repeat,
        "results": results,
        "load_average": os.getloadavg(),
        "libraries": library_versions(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.record:
        print(f"-> {SIDE.append(record)}")
    return record


def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import commit, get, load, num, table, when

    lengths = ("p10_length_review", "p50_length_review", "p90_length_review")

    def cell(r, key):
        res = get(r, "results", key)
        return "–" if not res else f"{num(res.get('median_ms'))} / {num(res.get('p90_ms'))} ms"

    def header(key):
        words = sorted({get(r, "results", key, "words") for r in rows} - {None})
        return f"{key.split('_')[0]} review ({'/'.join(map(str, words))} words)"

    headers = ["date", *map(header, lengths), "repeats", "1-min load", "model", "commit"]
    return ["### Single-review latency of the exported model (median / p90)", "",
            *table(headers, [[when(r), *(cell(r, k) for k in lengths), r.get("repeat"),
                              load(r, "load_average"), r.get("saved_model", "–"), commit(r)]
                             for r in rows])]


SIDE = Side("sentiment_latency", app="sentiment_gru", render=render)


if __name__ == "__main__":
    main()
