"""Train the MNIST multilayer perceptron, evaluate it once on the test set, export a SavedModel.

    python -m apps.mnist_mlp.train                      # the default configuration
    python -m apps.mnist_mlp.train --epochs 2 --limit 5000
    python -m apps.mnist_mlp.train --strategy mirrored --devices 2

Reads top to bottom: data -> model -> train -> evaluate -> export.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.errors import exit_on_user_error  # noqa: E402
from shared.flags import base_parser  # noqa: E402

MODEL_NAME = "mnist_mlp"

# Benchmark budgets (python -m benchmarks.run mnist_mlp --budget NAME): the flags added to the
# default configuration, and the metric reported.
BENCHMARK = {
    "metric": "accuracy",
    "anchor": {"value": 0.9840, "metric": "test accuracy", "target": ">= 0.984 in <= 15 epochs",
               "source": "Keras examples/mnist_mlp.py, 20 epochs"},
    "budgets": {
        "default": [],
        "small": ["--epochs", "3"],
        "tiny": ["--epochs", "1", "--limit", "5000"],
    },
}


def parse_args(argv=None):
    parser = base_parser(
        "python -m apps.mnist_mlp.train",
        "Classify MNIST digits with the classic Keras multilayer perceptron.",
    )
    parser.set_defaults(
        epochs=15,  # the budget; keras mnist_mlp.py uses 20 for 98.40%
        batch_size=128,  # keras examples/mnist_mlp.py
        optimizer="rmsprop",  # keras examples/mnist_mlp.py: RMSprop()
        learning_rate=1e-3,  # RMSprop default lr in Keras (Hinton's lecture 6e)
        schedule="linear",  # Goodfellow §8.3.1: linear decay to 1% of lr over the run
        patience=5,  # early stopping (Algorithm 7.1); 5 epochs of no val improvement
        monitor="val_accuracy",  # Algorithm 7.1 watches the validation set *error*
    )
    a = parser.add_argument_group("mnist_mlp")
    a.add_argument("--dataset", choices=("mnist", "fashion_mnist"), default="mnist")
    a.add_argument("--data-source", choices=("auto", "idx", "npz"), default="auto",
                   help="IDX gzip files or Keras' mnist.npz")
    a.add_argument("--hidden", type=int, nargs="+", default=[512, 512],
                   help="hidden layer sizes (keras mnist_mlp.py: 512 512)")
    a.add_argument("--dropout", type=float, default=0.2, help="dropout rate (keras mnist_mlp.py: 0.2)")
    a.add_argument("--val-size", type=int, default=5000, help="validation examples held out")
    a.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap the steps of each epoch (for quick checks)")
    args = parser.parse_args(argv)
    if not 0 <= args.dropout < 1:
        parser.error("--dropout must be in [0, 1)")
    return args


def export(model, export_dir, metrics: dict, gate_margin=None, name: str = MODEL_NAME):
    """SavedModel whose ``serving_default`` takes raw uint8 images [batch, 28, 28] and returns
    ``probabilities`` [batch, 10] and ``classes`` [batch] (int64)."""
    import tensorflow as tf

    from shared.export import Gate, export_keras

    def serve(images):
        probabilities = model(tf.cast(images, tf.float32), training=False)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    signature = [tf.TensorSpec([None, 28, 28], tf.uint8, name="images")]
    gate = Gate("accuracy", gate_margin) if gate_margin is not None else None
    return export_keras(name, {"serving_default": (serve, signature)}, [model], export_dir,
                        metadata={"app": "mnist_mlp", "metrics": metrics}, gate=gate)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)

    from shared.runs import Run

    run = Run.start(MODEL_NAME, args)
    import keras

    from apps.mnist_mlp import data
    from apps.mnist_mlp.model import build_mlp
    from shared.flags import make_optimizer

    # 1. Data: uint8 images, a seeded 55k/5k train/validation split, the test set kept aside.
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = data.load(
        args.dataset, args.limit, args.seed, args.val_size, args.data_source)
    batch = run.global_batch(args.batch_size)
    train_ds = data.make_dataset(x_tr, y_tr, batch, shuffle=True, seed=args.seed)
    val_ds = data.make_dataset(x_val, y_val, batch)
    steps = args.steps_per_epoch or -(-len(x_tr) // batch)
    print(f"data: {len(x_tr)} train, {len(x_val)} validation, {len(x_test)} test images")

    # 2. Model and optimizer, built inside the strategy's scope so variables are mirrored.
    with run.strategy.scope():
        model = build_mlp(tuple(args.hidden), args.dropout)
        model.compile(
            optimizer=make_optimizer(args, steps),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    model.summary(print_fn=lambda line, **_: print(line)) if args.verbose else None

    # 3. Train with the shared callbacks: early stopping (Algorithm 7.1, restores the best
    #    weights), learning-rate logging, throughput, dead-ReLU and gradient-norm monitors on a
    #    fixed validation batch, CSV/TensorBoard, and BackupAndRestore so a killed run resumes.
    probe = (x_val[:256].astype("float32"), y_val[:256].astype("int32"))
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        callbacks=run.callbacks(monitor=args.monitor, examples_per_step=batch, probe=probe),
        shuffle=False,  # the pipeline shuffles
        verbose=args.verbose,
    )

    # 4. Evaluate once on the test set.
    test = model.evaluate(data.make_dataset(x_test, y_test, batch), return_dict=True, verbose=0)
    metrics = {"accuracy": float(test["accuracy"]), "loss": float(test["loss"])}
    record = run.finish(metrics, plot_metrics=("accuracy",))
    print(f"test accuracy {metrics['accuracy']:.4f}, test loss {metrics['loss']:.4f} "
          f"({record.get('epochs_run', '?')} epochs, {record['wall_seconds']:.0f} s)")

    # 5. Export a versioned SavedModel (chief only under multi-worker training).
    if args.export and run.is_chief:
        path = export(model, args.export_dir, metrics, args.gate_margin)
        print(f"exported {path}")
        record["export"] = str(path)
    return record


if __name__ == "__main__":
    main()
