"""Classify MNIST digits with the classic Keras multilayer perceptron; export raw-pixel serving.

    python -m apps.mnist_mlp.train                      # the default configuration
    python -m apps.mnist_mlp.train --epochs 2 --limit 5000
    python -m apps.mnist_mlp.train --strategy mirrored --devices 2
"""

from __future__ import annotations

from shared.app import App, Data, UserError

# Fashion-MNIST's labels 0..9 (Xiao et al. 2017, Table 1).
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")


class MnistMLP(App):
    name = "mnist_mlp"
    description = "digit classification with a multilayer perceptron (MNIST)"
    order = 1
    metric = "accuracy"
    defaults = dict(
        epochs=15,  # the budget; keras mnist_mlp.py uses 20 for 98.40%
        batch_size=128,  # keras examples/mnist_mlp.py
        optimizer="rmsprop",  # keras examples/mnist_mlp.py: RMSprop()
        learning_rate=1e-3,  # RMSprop's default lr in Keras (Hinton's lecture 6e)
        schedule="linear",  # Goodfellow §8.3.1: linear decay to 1% of lr over the run
        patience=5,  # early stopping (Algorithm 7.1): 5 epochs without improvement
        monitor="val_accuracy",  # Algorithm 7.1 watches the validation set error
    )
    anchor = {"value": 0.9840, "metric": "test accuracy", "target": ">= 0.984 in <= 15 epochs",
              "source": "Keras examples/mnist_mlp.py, 20 epochs"}
    # The contract test's tiny run (tests/test_apps_contract.py).
    smoke = ["--epochs", "1", "--limit", "1000"]
    budgets = {"default": [], "small": ["--epochs", "3"],
               "tiny": ["--epochs", "1", "--limit", "5000"]}

    def add_flags(self, a):
        a.add_argument("--dataset", choices=("mnist", "fashion_mnist"), default="mnist")
        a.add_argument("--data-source", choices=("auto", "idx", "npz"), default="auto",
                       help="IDX gzip files or Keras' mnist.npz")
        a.add_argument("--hidden", type=int, nargs="+", default=[512, 512],
                       help="hidden layer sizes (keras mnist_mlp.py: 512 512)")
        a.add_argument("--dropout", type=float, default=0.2,
                       help="dropout rate (keras mnist_mlp.py: 0.2)")
        a.add_argument("--input-dropout", type=float, default=0.0,
                       help="dropout rate on the pixels")
        a.add_argument("--val-size", type=int, default=5000, help="validation examples held out")
        a.add_argument("--steps-per-epoch", type=int, default=None,
                       help="cap the steps of each epoch (for quick checks)")

    def check(self, args):
        if not (0 <= args.dropout < 1 and 0 <= args.input_dropout < 1):
            raise UserError("--dropout and --input-dropout must be in [0, 1)")

    # 1. Data: uint8 images, a seeded 55k/5k train/validation split, the test set kept aside.
    def load_data(self, args, run, fold_validation=False):
        import numpy as np

        from apps.mnist_mlp import data

        (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = data.load(
            args.dataset, args.limit, args.seed, args.val_size, args.data_source)
        batch = run.global_batch(args.batch_size)
        print(f"data: {len(x_tr)} train, {len(x_val)} validation, {len(x_te)} test images"
              + (" (validation folded into training)" if fold_validation else ""))
        if fold_validation:
            x_tr, y_tr = np.concatenate([x_tr, x_val]), np.concatenate([y_tr, y_val])
        return Data(train=data.make_dataset(x_tr, y_tr, batch, shuffle=True, seed=args.seed),
                    val=None if fold_validation else data.make_dataset(x_val, y_val, batch),
                    test=data.make_dataset(x_te, y_te, batch),
                    steps_per_epoch=args.steps_per_epoch or -(-len(x_tr) // batch),
                    examples_per_step=batch,
                    probe=(x_val[:256].astype("float32"), y_val[:256].astype("int32")))

    # Algorithm 7.2 (--retrain-on-all): the same split, the validation images back in training.
    def load_all_data(self, args, run):
        return self.load_data(args, run, fold_validation=True)

    # 2. Model: 784 -> 512 -> 512 -> 10 with dropout (model.py); the runner compiles it with the
    #    shared optimizer factory inside the strategy's scope and trains it with the shared
    #    callbacks (early stopping, schedule, throughput, dead-ReLU and gradient-norm monitors).
    def build_model(self, args, data, run):
        from apps.mnist_mlp.model import build_mlp

        return build_mlp(tuple(args.hidden), args.dropout, input_dropout=args.input_dropout)

    # Per-class evaluation (the runner's): the confusion matrix and each class's
    # precision/recall/F1 on the test set, through the default ``test_predictions``.
    def class_names(self, args, data):
        return list(FASHION_NAMES if args.dataset == "fashion_mnist" else map(str, range(10)))

    # 3. Export: raw uint8 images [batch, 28, 28] in; probabilities [batch, 10] and classes out.
    def endpoints(self, args, model, data):
        import tensorflow as tf

        def serve(images):
            probabilities = model(tf.cast(images, tf.float32), training=False)
            return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

        spec = tf.TensorSpec([None, 28, 28], tf.uint8, name="images")
        return {"serving_default": (serve, [spec])}

    # The pipeline's first stage: the images and labels this run would train on.
    def validate_data(self, args):
        from shared.data import load_image_dataset
        from shared.validate import Report, check_image_app

        train, test = load_image_dataset(args.dataset, args.data_source)
        if args.limit:
            train = (train[0][: args.limit], train[1][: args.limit])
        return check_image_app(Report(self.name, args.dataset), train, test, (28, 28), 10)

    # What `ksuite skew` compares logged requests with: the training images, as served (uint8).
    def reference_inputs(self, model_name, limit=None):
        from shared.data import load_image_dataset

        (x_train, _), _ = load_image_dataset("mnist")
        return {"images": x_train[:limit]}


APP = MnistMLP()
main = APP.main

if __name__ == "__main__":
    main()
