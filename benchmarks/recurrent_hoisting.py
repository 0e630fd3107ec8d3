"""Training-step time of Keras' LSTM/GRU against shared.recurrent's hoisted twins, side by side.

    python -m benchmarks.recurrent_hoisting                # both apps' default shapes
    python -m benchmarks.recurrent_hoisting --rounds 3 --no-record

``HoistedLSTM``/``HoistedGRU`` compute the input half of every gate for the whole sequence before
the time loop (shared/recurrent.py). This times a training step (forward, backward, Adam) of the
recurrent core of each app at its default flags and precision, once with Keras' layers and once
with the hoisted ones, alternating the two in rounds so that any drift in the machine's load
falls on both; the median step of each is reported with their ratio.

- ``shakespeare_lstm``: embedding -> stacked stateful LSTMs with dropout between -> logits over
  66 characters, batch x sequence length as the app trains (32 x 50 at its defaults);
- ``sentiment_gru``: embedding (30,000 words, masked) -> bidirectional GRU -> mean pooling ->
  P(positive), a batch of 128 reviews of 250 words (the test reviews' median is ~170, their mean
  ~230), a quarter of the rows padded from word 200 on.

One JSON line per app goes to ``benchmarks/results/recurrent_hoisting.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.side import Side
from shared.errors import UserError, exit_on_user_error

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REVIEW_WORDS, REVIEW_BATCH = 250, 128  # a typical review batch (see the docstring)
CHARACTERS = 66  # tiny-shakespeare's 65 characters + the unknown id


def shakespeare_model(layer_class, args):
    import keras
    import numpy as np

    ids = keras.Input((args.seq_len,), batch_size=args.batch_size, dtype="int32")
    x = keras.layers.Embedding(CHARACTERS, args.embed_dim)(ids)
    for units in args.units:
        x = layer_class(units, return_sequences=True, stateful=True)(x)
        x = keras.layers.Dropout(args.dropout)(x)
    logits = keras.layers.Dense(CHARACTERS, dtype="float32")(x)
    model = keras.Model(ids, logits)
    model.compile(keras.optimizers.Adam(args.learning_rate, clipnorm=args.clipnorm),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    batch = rng.integers(0, CHARACTERS, (args.batch_size, args.seq_len + 1))
    return model, (batch[:, :-1], batch[:, 1:])


def sentiment_model(layer_class, args):
    import keras
    import numpy as np

    ids = keras.Input((None,), dtype="int64")
    x = keras.layers.Embedding(args.max_tokens, args.embedding_dim, mask_zero=True)(ids)
    x = keras.layers.Bidirectional(layer_class(args.units, return_sequences=True))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    model = keras.Model(ids, out)
    model.compile(keras.optimizers.Adam(args.learning_rate, clipnorm=args.clipnorm),
                  "binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(2, args.max_tokens, (REVIEW_BATCH, REVIEW_WORDS))
    x[: REVIEW_BATCH // 4, 200:] = 0
    return model, (x, rng.integers(0, 2, (REVIEW_BATCH, 1)))


def measure(app_name: str, rounds: int, steps: int) -> dict:
    import keras

    from apps import get
    from shared import precision
    from shared.recurrent import HoistedGRU, HoistedLSTM

    app = get(app_name)
    args = app.parse([])
    args.precision = precision.resolve_precision(args.precision, app.precision_for(args))
    build, pair = {"shakespeare_lstm": (shakespeare_model, (keras.layers.LSTM, HoistedLSTM)),
                   "sentiment_gru": (sentiment_model, (keras.layers.GRU, HoistedGRU))}[app_name]
    with precision.dtype_policy(args.precision):  # as the runner builds the app's model
        models = {cls.__name__: build(cls, args) for cls in pair}
    for model, (x, y) in models.values():  # trace and warm up
        for _ in range(2):
            model.train_on_batch(x, y)
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name, (model, (x, y)) in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            seconds[name].append((time.perf_counter() - start) / steps)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    keras_name, hoisted_name = (cls.__name__ for cls in pair)
    x = models[keras_name][1][0]  # both models train on the same batch
    return {"app": app_name, "precision": args.precision,
            "shape": {"units": args.units, "batch": int(x.shape[0]),
                      "steps_per_sequence": int(x.shape[1])},
            "keras_step_ms": round(1000 * medians[keras_name], 1),
            "hoisted_step_ms": round(1000 * medians[hoisted_name], 1),
            "speedup": round(medians[keras_name] / medians[hoisted_name], 3),
            "rounds": rounds, "steps_per_round": steps}


@exit_on_user_error
def main(argv=None) -> list[dict]:
    from benchmarks.run import git_commit, library_versions
    from shared.runs import cpu_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", nargs="+", default=["shakespeare_lstm", "sentiment_gru"],
                   choices=["shakespeare_lstm", "sentiment_gru"], help="which apps' shapes")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per layer kind")
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                   help="append the records to benchmarks/results/recurrent_hoisting.jsonl")
    args = p.parse_args(argv)
    if args.rounds < 1:
        raise UserError("--rounds must be at least 1")
    records = []
    for app in args.apps:
        steps = 20 if app == "shakespeare_lstm" else 3  # ~5 s a round for each
        record = {**measure(app, args.rounds, steps), "load_average": os.getloadavg(),
                  "libraries": library_versions(), "cpu": cpu_model(), "cores": os.cpu_count(),
                  "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        print(f"{app} ({record['precision']}, units {record['shape']['units']}): Keras "
              f"{record['keras_step_ms']} ms a step, hoisted {record['hoisted_step_ms']} ms: "
              f"{record['speedup']}x", flush=True)
        if args.record:
            SIDE.append(record)
        records.append(record)
    return records


def render(rows):
    """The report's lines: one row per record."""
    from benchmarks.report import commit, table, times, when

    def shape(r):
        s = r.get("shape", {})
        units = s.get("units")
        units = " x ".join(map(str, units)) if isinstance(units, list) else units
        return f"{units} units, {s.get('batch')} x {s.get('steps_per_sequence')} steps"

    return ["### Recurrent layers: Keras' loop against the hoisted input projection "
            "(`python -m benchmarks.recurrent_hoisting`)", "",
            *table(["date", "app shape", "precision", "Keras ms/step", "hoisted ms/step",
                    "speed-up", "load (1 min)", "commit"],
                   [[when(r), f"{r['app']}: {shape(r)}", r.get("precision"),
                     r.get("keras_step_ms"), r.get("hoisted_step_ms"), times(r.get("speedup")),
                     f"{r['load_average'][0]:.1f}" if r.get("load_average") else "–",
                     commit(r)] for r in rows])]


SIDE = Side("recurrent_hoisting", app="devices", render=render)


if __name__ == "__main__":
    main()
