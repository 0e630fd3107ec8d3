"""The README's main job, end to end on real data:

1. train the MNIST MLP at a small budget (3 epochs) with the shared callbacks;
2. export it as a versioned SavedModel under ``saved_models/mnist_mlp/<version>/``;
3. reload the export with ``tf.saved_model.load`` (what TensorFlow Serving does) and print its
   predictions for a few real test digits next to their labels;
4. start the local TensorFlow-Serving-compatible server on that folder, query the model over REST
   and gRPC, print the answers, and stop the server.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.errors import exit_on_user_error  # noqa: E402


def ascii_digit(img) -> list[str]:
    """A 28x28 digit as 14 text lines (2x2 pixels per character)."""
    chars = " .:-=+*#%@"
    rows = []
    for r in range(0, 28, 2):
        row = ""
        for c in range(0, 28, 2):
            v = int(img[r:r + 2, c:c + 2].mean())
            row += chars[min(v * len(chars) // 256, len(chars) - 1)]
        rows.append(row)
    return rows


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(prog="ksuite demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="training budget")
    parser.add_argument("--export-dir", default="saved_models")
    parser.add_argument("--run-dir", default="runs/demo_mnist_mlp")
    parser.add_argument("--digits", type=int, default=8, help="test digits to predict")
    parser.add_argument("--no-serve", dest="serve", action="store_false",
                        help="skip starting the local server")
    args = parser.parse_args(argv)

    import shutil

    from apps.mnist_mlp import train
    from shared.data import load_image_dataset

    print("== 1. train the MNIST MLP on real data, small budget")
    shutil.rmtree(args.run_dir, ignore_errors=True)  # a fresh run, not a resumed one
    record = train.main(["--epochs", str(args.epochs), "--run-dir", args.run_dir,
                         "--export-dir", args.export_dir, "--verbose", "2"])
    export_path = record["export"]

    print(f"\n== 2-3. reload {export_path} with tf.saved_model.load and predict real test digits")
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(export_path)
    serve = loaded.signatures["serving_default"]
    _, (x_test, y_test) = load_image_dataset("mnist")
    idx = np.random.default_rng(0).choice(len(x_test), args.digits, replace=False)
    out = serve(images=tf.constant(x_test[idx]))
    classes = out["classes"].numpy()
    probs = out["probabilities"].numpy()
    pictures = [ascii_digit(x_test[i]) for i in idx]
    for line in range(14):
        print("  ".join(p[line] for p in pictures))
    print("  ".join(f"label {y_test[i]} pred {c}".ljust(14) for i, c in zip(idx, classes)))
    print("  ".join(f"p={probs[k, c]:.3f}".ljust(14) for k, c in enumerate(classes)))
    correct = int(np.sum(classes == y_test[idx]))
    print(f"{correct}/{len(idx)} correct; test accuracy of this model "
          f"{record['metrics']['accuracy']:.4f}")

    if args.serve:
        try:
            from serving import demo as serving_demo
        except ImportError:
            print("\n(serving/ is not available in this checkout: skipping the server step)")
        else:
            print("\n== 4. serve it with the local TensorFlow-Serving-compatible server, query "
                  "over REST and gRPC")
            serving_demo.run(args.export_dir, "mnist_mlp", x_test[idx], y_test[idx])
    return 0


if __name__ == "__main__":
    main()
