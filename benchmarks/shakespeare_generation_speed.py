"""Generation speed: the exported ``generate`` signature vs the keras-io loop, side by side.

    python -m benchmarks.shakespeare_generation_speed                  # default architecture
    python -m benchmarks.shakespeare_generation_speed --chars 1000 --baseline-chars 200

Both generators use the same model (same architecture, same weight values) and the vocabulary of
the real training text:

- **in-graph** (this app): the model exported with ``apps.shakespeare_lstm.train.APP.export``,
  reloaded with ``tf.saved_model.load`` as TensorFlow Serving would, and its ``generate``
  signature called once for the whole text (one LSTM step per character inside a while loop);
- **keras-io** (``lstm_character_level_text_generation``): one ``model.predict`` call per
  generated character on the last ``maxlen`` = 40 characters, sampling in NumPy with the same
  temperature, as the example does.

Weights do not change the speed, so by default the model is freshly initialized (seeded); pass
``--saved-model`` to time an already exported version's ``generate`` instead (the baseline then
uses a freshly built model of the architecture given by the flags). Each side is timed after one
warm-up call; the median of ``--repeats`` timings is reported. One JSON line goes to
``benchmarks/results/shakespeare_generation_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.side import Side  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.run import git_commit, library_versions  # noqa: E402
from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.flags import positive_int  # noqa: E402
from shared.runs import cpu_model  # noqa: E402

KERAS_IO_MAXLEN = 40  # keras-io lstm_character_level_text_generation: maxlen = 40


def keras_io_generate(model, vocab, prompt: str, num_chars: int, temperature: float,
                      rng, maxlen: int = KERAS_IO_MAXLEN, predict=None) -> str:
    """The keras-io example's loop: one predict call per character on the last maxlen chars."""
    import numpy as np

    from apps.shakespeare_lstm.data import encode

    predict = predict or (lambda x: model.predict(x, verbose=0))
    sentence, generated = prompt[-maxlen:], ""
    chars = ["[UNK]", *vocab]
    for _ in range(num_chars):
        x_pred = encode(sentence, vocab)[None, :]
        logits = np.asarray(predict(x_pred))[0, -1].astype("float64")
        logits[0] = -np.inf  # never the unknown slot (as the exported sampler)
        preds = np.exp((logits - logits.max()) / temperature)
        preds /= preds.sum()
        next_char = chars[int(np.argmax(rng.multinomial(1, preds, 1)))]
        sentence = (sentence + next_char)[-maxlen:]
        generated += next_char
    return generated


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (tracing, predict's first-call setup)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shakespeare_generation_speed",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=positive_int, default=2000,
                        help="characters per generate call")
    parser.add_argument("--baseline-chars", type=positive_int, default=200,
                        help="characters per keras-io run (one predict call each)")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--prompt", default=None,
                        help="seed text (default: the first 40 characters of the corpus; the "
                             "keras-io loop always feeds maxlen = 40 characters, one input shape)")
    parser.add_argument("--units", type=positive_int, nargs="+", default=None,
                        help="LSTM layer widths (default: the app's)")
    parser.add_argument("--embed-dim", type=positive_int, default=None,
                        help="character embedding size (default: the app's)")
    parser.add_argument("--saved-model", default=None,
                        help="time this exported version's generate signature instead")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from apps.shakespeare_lstm import data
    from apps.shakespeare_lstm.model import build_model
    from apps.shakespeare_lstm.train import APP
    from shared.app import Data

    app_defaults = APP.parse([])  # what `ksuite train shakespeare_lstm` builds
    args.units = list(args.units or app_defaults.units)
    args.embed_dim = args.embed_dim or app_defaults.embed_dim
    keras.utils.set_random_seed(args.seed)
    vocab, _, (train_text, _, _) = data.load()
    if args.prompt is None:
        args.prompt = train_text[:KERAS_IO_MAXLEN]
    if len(args.prompt) < KERAS_IO_MAXLEN:  # keep predict's input shape fixed, as keras-io does
        raise UserError(f"--prompt needs at least {KERAS_IO_MAXLEN} characters for the keras-io "
                        "loop (its seed sentence is always maxlen characters)")
    model = build_model(len(vocab) + 1, args.embed_dim, tuple(args.units))
    with tempfile.TemporaryDirectory() as tmp:
        # The app's own export: its endpoints (over a stateless copy) and metadata.
        path = args.saved_model or APP.export(APP.parse(["--export-dir", tmp]), model,
                                              Data(vocab=vocab), {}, run=None)
        served = tf.saved_model.load(str(path))
        generate = served.signatures["generate"]

        def in_graph():
            out = generate(prompt=tf.constant([args.prompt]),
                           num_chars=tf.constant([args.chars], tf.int32),
                           temperature=tf.constant([args.temperature], tf.float32),
                           top_k=tf.constant([0], tf.int32),
                           seed=tf.constant([args.seed], tf.int64))
            return out["generated"].numpy()[0].decode("utf-8")

        graph_s, text = timed(in_graph, args.repeats)
        if len(text) != args.chars:
            raise RuntimeError(f"generate returned {len(text)} characters, not {args.chars}")
    rng = np.random.default_rng(args.seed)
    base_s, base_text = timed(lambda: keras_io_generate(model, vocab, args.prompt,
                                                        args.baseline_chars, args.temperature,
                                                        rng), args.repeats)
    # A third column, not in the issue: the same loop with predict_on_batch, which skips
    # predict's per-call data-adapter setup (how much of the gap is predict's overhead).
    pob_s, _ = timed(lambda: keras_io_generate(model, vocab, args.prompt, args.baseline_chars,
                                               args.temperature, rng,
                                               predict=model.predict_on_batch), args.repeats)
    pob_rate = args.baseline_chars / pob_s
    graph_rate = args.chars / graph_s
    base_rate = args.baseline_chars / base_s
    record = {
        "benchmark": "shakespeare_lstm_generation",
        "model": {"units": args.units, "embed_dim": args.embed_dim, "vocabulary": len(vocab),
                  "saved_model": str(args.saved_model) if args.saved_model else "fresh export"},
        "temperature": args.temperature,
        "in_graph_generate": {"chars": args.chars, "median_seconds": round(graph_s, 4),
                              "chars_per_sec": round(graph_rate, 1)},
        "keras_io_predict_per_char": {"chars": args.baseline_chars, "maxlen": KERAS_IO_MAXLEN,
                                      "median_seconds": round(base_s, 4),
                                      "chars_per_sec": round(base_rate, 1)},
        "keras_predict_on_batch_per_char": {"chars": args.baseline_chars,
                                            "maxlen": KERAS_IO_MAXLEN,
                                            "median_seconds": round(pob_s, 4),
                                            "chars_per_sec": round(pob_rate, 1)},
        "speedup": round(graph_rate / base_rate, 1),
        "speedup_vs_predict_on_batch": round(graph_rate / pob_rate, 1),
        "target_speedup": 20,
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
        "libraries": library_versions(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"in-graph generate: {graph_rate:,.0f} chars/s ({args.chars} chars in {graph_s:.3f} s)")
    print(f"keras-io predict per char: {base_rate:,.1f} chars/s ({args.baseline_chars} chars in "
          f"{base_s:.3f} s)")
    print(f"same loop with predict_on_batch: {pob_rate:,.1f} chars/s "
          f"(in-graph is {record['speedup_vs_predict_on_batch']}x faster)")
    print(f"speedup {record['speedup']}x (target >= 20x); load average {record['load_average']}")
    if args.record:
        print(f"-> {SIDE.append(record)}")
    return record


def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import commit, get, num, table, times, when

    def speed(r, key):
        return num(get(r, key, "chars_per_sec"), "chars/s")

    def width(r):
        units = get(r, "model", "units")
        return " x ".join(map(str, units)) if units else "–"

    def load(r):
        loads = r.get("load_average")
        return f"{loads[0]:.1f}" if loads else "–"

    headers = ["date", "LSTM units", "load (1 min)", "in-graph generate",
               "predict_on_batch per char", "keras-io predict per char", "speedup vs keras-io",
               "speedup vs predict_on_batch", "target speedup", "commit"]
    return ["### Generation speed: in-graph `generate` vs one `predict` per character", "",
            *table(headers, [[when(r), width(r), load(r), speed(r, "in_graph_generate"),
                              speed(r, "keras_predict_on_batch_per_char"),
                              speed(r, "keras_io_predict_per_char"), times(r.get("speedup")),
                              times(r.get("speedup_vs_predict_on_batch")),
                              f">= {times(r.get('target_speedup'))}",
                              commit(r)] for r in rows])]


SIDE = Side("shakespeare_generation_speed", app="shakespeare_lstm", render=render)


if __name__ == "__main__":
    main()
