"""Train a character-level LSTM on tiny-shakespeare, evaluate it in nats and bits per character,
and export a SavedModel that writes text in one call.

    python -m apps.shakespeare_lstm.train                       # stateful TBPTT, the defaults
    python -m apps.shakespeare_lstm.train --mode stateless --stride 100
    python -m apps.shakespeare_lstm.train --epochs 1 --limit 50000

Reads top to bottom: data -> model -> train -> evaluate -> export.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.flags import base_parser, positive_int  # noqa: E402

MODEL_NAME = "shakespeare_lstm"
LN2 = math.log(2.0)

# Benchmark budgets (python -m benchmarks.run shakespeare_lstm --budget NAME). The metric is the
# validation loss in nats/char of the restored best weights (the target: <= 1.45).
BENCHMARK = {
    "metric": "val_loss",
    "anchor": {"value": 1.4786, "metric": "validation nats/char",
               "target": "<= 1.45", "source": "Géron, stateful GRU"},
    "budgets": {
        # The defaults: what 2 shared CPU cores afford in ~40 minutes (see parse_args).
        "default": [],
        "small": ["--epochs", "2", "--units", "128", "128"],
        "tiny": ["--epochs", "1", "--limit", "100000", "--units", "64"],
    },
}


def parse_args(argv=None):
    parser = base_parser(
        "python -m apps.shakespeare_lstm.train",
        "Character-level LSTM language model of tiny-shakespeare, and a text generator.",
    )
    parser.set_defaults(
        # A CPU budget: 16 passes over the 1M training characters (~1.5 min each on 2 cores at
        # 2 x 256 units; measured val 1.4287 nats/char); Géron's stateful GRU trains 50 epochs,
        # char-rnn 50.
        epochs=16,
        batch_size=32,  # rows = parallel text streams; Géron's stateful model 32 (char-rnn 50)
        optimizer="adam",  # Géron's Shakespeare models use Adam (char-rnn: RMSprop)
        learning_rate=2e-3,  # char-rnn's default learning_rate 2e-3
        schedule="cosine",  # 5% warm-up, cosine to 0 over the fixed budget (Loshchilov &
        # Hutter 2017); char-rnn instead decays x0.97 per epoch after epoch 10
        clipnorm=5.0,  # char-rnn's default grad_clip 5
        patience=3,  # Algorithm 7.1: stop after 3 epochs without a better val loss
        monitor="val_loss",
    )
    a = parser.add_argument_group("shakespeare_lstm")
    a.add_argument("--mode", choices=("stateful", "stateless"), default="stateful",
                   help="stateful: truncated BPTT, each row continues the previous batch's row "
                        "and the LSTM state carries over (Géron's stateful model: 1.4786 val "
                        "loss vs 1.5477 stateless); stateless: independent shuffled windows")
    a.add_argument("--seq-len", type=positive_int, default=100,
                   help="characters per training chunk/window, the TBPTT truncation length "
                        "(Géron: 100; char-rnn: 50)")
    a.add_argument("--stride", type=positive_int, default=None,
                   help="stateless mode: characters between window starts (1 = every window, "
                        "as Géron; default: --seq-len, disjoint windows)")
    a.add_argument("--units", type=positive_int, nargs="+", default=[256, 256],
                   help="LSTM layer widths (char-rnn: 2 layers; 256 wide, between char-rnn's "
                        "128 default and its 512 for larger data, to fit a CPU budget)")
    a.add_argument("--embed-dim", type=positive_int, default=64,
                   help="character embedding size (Géron: 16)")
    a.add_argument("--dropout", type=float, default=0.25,
                   help="dropout between layers, not on recurrent connections (Zaremba et al. "
                        "2014: 0.5 for their medium net; char-rnn: 0 by default, 0.5 for large "
                        "nets). 0.25: at 0.1 this 2 x 256 net overfits by epoch 9 (val 1.471)")
    a.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="cap the steps of each epoch (for quick checks)")
    a.add_argument("--sample-chars", type=int, default=300,
                   help="characters generated per temperature after each epoch (0: none)")
    a.add_argument("--sample-prompt", default="ROMEO:\n", help="prompt of the per-epoch samples")
    args = parser.parse_args(argv)
    if not 0 <= args.dropout < 1:
        parser.error("--dropout must be in [0, 1)")
    if args.sample_chars < 0:
        parser.error("--sample-chars must be >= 0")
    if args.stride is not None and args.mode != "stateless":
        parser.error("--stride only applies to --mode stateless")
    args.stride = args.stride or args.seq_len
    return args


def bits_per_char(y_true, y_pred):
    """Cross-entropy in bits (the loss is in nats): nats / ln 2."""
    import keras

    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True) / LN2


def export(model, vocab, export_dir, metrics: dict, gate_margin=None, name: str = MODEL_NAME):
    """SavedModel with two signatures over raw UTF-8 strings (see generate.py):

    - ``serving_default``: ``prompt`` [B] -> ``probabilities`` [B, ids] of the next character,
      ``top_characters`` / ``top_probabilities`` [B, 5];
    - ``generate``: ``prompt``, ``num_chars``, ``temperature``, ``top_k``, ``seed`` (each [B]) ->
      ``generated`` [B] (exactly num_chars characters) and ``text`` (prompt + generated).
    """
    from apps.shakespeare_lstm.generate import GENERATE_SIGNATURE, NEXT_CHAR_SIGNATURE, CharSampler
    from apps.shakespeare_lstm.model import stateless_copy
    from shared.export import Gate, export_keras

    served = stateless_copy(model)  # free batch size, no carried-state variables
    sampler = CharSampler(served, vocab)
    gate = Gate("val_loss", gate_margin, higher_is_better=False) if gate_margin is not None else None
    return export_keras(
        name,
        {"serving_default": (sampler.next_char, NEXT_CHAR_SIGNATURE),
         "generate": (sampler.generate, GENERATE_SIGNATURE)},
        [served, sampler.to_ids, sampler.to_chars],
        export_dir,
        metadata={"app": "shakespeare_lstm", "metrics": metrics, "vocabulary": ["[UNK]", *vocab]},
        gate=gate,
    )


def reset_states_callback(model):
    """Stateful mode: zero the carried LSTM state when an epoch starts and before validation,
    so every pass over a split starts each stream from the beginning of its text."""
    import keras

    from apps.shakespeare_lstm.model import reset_states

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: reset_states(model),
        on_test_begin=lambda logs=None: reset_states(model),
    )


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)

    from shared.runs import Run

    run = Run.start(MODEL_NAME, args)
    import keras

    from apps.shakespeare_lstm import data
    from apps.shakespeare_lstm.generate import CharSampler, SampleTexts
    from apps.shakespeare_lstm.model import build_model, reset_states
    from shared.flags import make_optimizer

    # 1. Data: contiguous 90/5/5 split, character ids with an unknown slot at 0.
    vocab, (train_ids, val_ids, test_ids), _ = data.load(args.limit)
    batch = run.global_batch(args.batch_size)
    stateful = args.mode == "stateful"
    if stateful:
        # Stateful TBPTT: the batch rows are `batch` parallel streams of text, batch b+1
        # continues batch b row by row, so the order is fixed and there is no shuffling. The
        # state lives in per-row variables, which a replicated model cannot share.
        if run.replicas > 1:
            raise UserError("--mode stateful carries LSTM state in per-row variables and runs "
                            "on one replica; use --mode stateless with --strategy mirrored")
        train_ds = data.stateful_dataset(train_ids, batch, args.seq_len)
        # Validation and test use as many rows as training (the stateful model's batch size is
        # fixed); their streams are shorter, and the chunk shrinks if a stream is too short.
        val_ds = data.stateful_dataset(val_ids, batch, min(args.seq_len, _chunk(val_ids, batch)))
        test_ds = data.stateful_dataset(test_ids, batch, min(args.seq_len, _chunk(test_ids, batch)))
    else:
        # Stateless windows: shuffled, each starting from a zero state. Several replicas get
        # whole batches only (a last partial batch would split unevenly across them).
        full = run.replicas > 1
        train_ds = data.window_dataset(train_ids, batch, args.seq_len, args.stride, shuffle=True,
                                       seed=args.seed, drop_remainder=full)
        val_ds = data.window_dataset(val_ids, batch, args.seq_len, args.seq_len,
                                     drop_remainder=full)
        test_ds = data.window_dataset(test_ids, batch, args.seq_len, args.seq_len,
                                      drop_remainder=full)
    steps = args.steps_per_epoch or int(train_ds.cardinality())
    print(f"data: {len(train_ids)} train, {len(val_ids)} validation, {len(test_ids)} test "
          f"characters; vocabulary {len(vocab)} + unknown; {args.mode} batches of "
          f"{batch} x {args.seq_len}, {steps} steps per epoch")

    # 2. Model: embedding -> stacked LSTM -> logits, Adam with gradient clipping by norm
    #    (char-rnn clips at 5: exploding gradients are the classic RNN failure, Pascanu et al.
    #    2013). The loss is the cross-entropy in nats per character; bits = nats / ln 2.
    with run.strategy.scope():
        model = build_model(len(vocab) + 1, args.embed_dim, tuple(args.units), args.dropout,
                            batch_size=batch if stateful else None, stateful=stateful)
        model.compile(
            optimizer=make_optimizer(args, steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[bits_per_char],
        )
    if args.verbose:
        model.summary(print_fn=lambda line, **_: print(line))

    # 3. Train with the shared callbacks (early stopping with restore, LR and throughput
    #    logging, CSV/TensorBoard, BackupAndRestore), plus: reset the carried state at each
    #    epoch and before validation (stateful mode), and write sample texts at temperatures
    #    0.2 / 0.5 / 1.0 after each epoch.
    extra = [reset_states_callback(model)] if stateful else []
    sampler = CharSampler(model, vocab)  # shares the training model's weights
    if args.sample_chars and run.is_chief:
        extra.append(SampleTexts(sampler, run.dir, args.sample_prompt, args.sample_chars,
                                 seed=args.seed))
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        callbacks=run.callbacks(monitor=args.monitor, examples_per_step=batch * args.seq_len,
                                extra=extra),
        shuffle=False,  # the pipeline shuffles (stateless) or must keep its order (stateful)
        verbose=args.verbose,
    )

    # 4. Evaluate the restored best weights on validation and, once, on the test set (each
    #    pass starting from a zero state).
    scores = {}
    for split_name, ds in (("val", val_ds), ("test", test_ds)):
        reset_states(model)
        scores[split_name] = model.evaluate(ds, return_dict=True, verbose=0)["loss"]
    metrics = {
        "loss": float(scores["test"]),  # nats/char on the test set
        "bits_per_char": float(scores["test"]) / LN2,
        "val_loss": float(scores["val"]),
        "val_bits_per_char": float(scores["val"]) / LN2,
    }
    record = run.finish(metrics, plot_metrics=("bits_per_char",))
    print(f"validation {metrics['val_loss']:.4f} nats/char ({metrics['val_bits_per_char']:.4f} "
          f"bits), test {metrics['loss']:.4f} nats/char ({metrics['bits_per_char']:.4f} bits) "
          f"({record.get('epochs_run', '?')} epochs, {record['wall_seconds']:.0f} s)")
    print("sample (temperature 0.5):\n" + args.sample_prompt
          + sampler.sample_text(args.sample_prompt, 200, 0.5, 0, args.seed))

    # 5. Export a versioned SavedModel with the `generate` and `serving_default` signatures.
    if args.export and run.is_chief:
        path = export(model, vocab, args.export_dir, metrics, args.gate_margin)
        print(f"exported {path}")
        record["export"] = str(path)
    return record


def _chunk(ids, batch: int) -> int:
    """Longest chunk that still gives every one of ``batch`` streams one full chunk."""
    length = (len(ids) - 1) // batch
    if length < 1:
        raise UserError(f"the validation/test part ({len(ids)} characters) is too short for "
                        f"{batch} streams; lower --batch-size or raise --limit")
    return length


if __name__ == "__main__":
    main()
