"""What fraction of this CPU's matrix-multiply peak does the scratch CIFAR CNN's training reach?

    python -m benchmarks.cifar_flops                       # defaults: 4096^2 matmul, 40 steps
    python -m benchmarks.cifar_flops --steps 100 --matmul 6144

1. Peak: a timed large float32 ``tf.matmul`` (n x n by n x n, 2 n^3 FLOPs), best of several
   repetitions after a warm-up, with TensorFlow's default thread pools (all cores).
2. Work per example: the scratch CNN's forward multiply-adds counted from its layer shapes
   (``apps.cifar_cnn.model.flops_per_example``; conv and dense only), training = 3 x forward
   (forward, gradient w.r.t. activations, gradient w.r.t. weights) = 6 FLOPs per multiply-add.
3. Training speed: ``fit`` steps of the default configuration (batch 128, Adam) on real CIFAR-10
   images, (i) through the app's real input pipeline with augmentation and (ii) on the same batches
   already in memory (no pipeline), first epoch (tracing) discarded.

fraction of peak = train FLOPs per example x examples/s / peak FLOP/s. Appends a record to
``benchmarks/results/cifar_flops.jsonl``. On a shared machine every number moves with the load:
the record includes the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.side import Side  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def matmul_peak(n: int, reps: int) -> float:
    """Best FLOP/s of an n x n float32 matmul over ``reps`` timed runs (after one warm-up)."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))

    @tf.function
    def mm(x, y):
        return tf.reduce_sum(tf.matmul(x, y))  # the reduction is O(n^2): negligible

    mm(a, b).numpy()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_rate(model_fn, ds, steps: int, epochs: int, batch: int) -> float:
    """Median training examples/s over ``epochs`` epochs of ``steps`` steps, the first dropped."""
    import keras

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model = model_fn()
    model.fit(ds.repeat(), epochs=epochs, steps_per_epoch=steps, callbacks=[Timer()], verbose=0)
    rates = sorted(steps * batch / t for t in times[1:])
    return rates[len(rates) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matmul", type=int, default=4096, help="matmul size n")
    parser.add_argument("--reps", type=int, default=5, help="timed matmul repetitions")
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (first dropped)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from apps.cifar_cnn import data
    from apps.cifar_cnn.model import build_keras_classic, flops_per_example
    from benchmarks.run import git_commit, library_versions
    from shared.runs import cpu_model

    keras.utils.set_random_seed(0)
    load_before = os.getloadavg()
    peak = matmul_peak(args.matmul, args.reps)
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (float32, n={args.matmul}, best of {args.reps})")

    counts = flops_per_example(build_keras_classic())
    print(f"scratch CNN: {counts['forward_macs'] / 1e6:.1f} M multiply-adds forward per image, "
          f"{counts['train_flops'] / 1e6:.0f} MFLOPs per training image")

    (x_tr, y_tr), _, _, _ = data.load()
    b = args.batch_size
    n = args.steps * b
    x, y = x_tr[:n], y_tr[:n]

    def model_fn():
        m = build_keras_classic()
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        return m

    real = data.make_dataset(x, y, b, training=True, augment=True, seed=0, drop_remainder=True)
    memory = tf.data.Dataset.from_tensor_slices(
        (tf.constant(x.astype("float32").reshape(-1, b, 32, 32, 3)),
         tf.constant(y.astype("int32").reshape(-1, b))))
    rate_real = train_rate(model_fn, real, args.steps, args.epochs, b)
    rate_mem = train_rate(model_fn, memory, args.steps, args.epochs, b)
    frac_real = counts["train_flops"] * rate_real / peak
    frac_mem = counts["train_flops"] * rate_mem / peak
    print(f"training: {rate_real:.0f} examples/s with the augmenting pipeline "
          f"({frac_real:.1%} of peak), {rate_mem:.0f} examples/s from memory ({frac_mem:.1%})")
    record = {
        "app": "cifar_flops",
        "metric": "fraction_of_matmul_peak",
        "value": frac_real,
        "matmul_n": args.matmul,
        "matmul_peak_gflops": peak / 1e9,
        "forward_macs_per_example": counts["forward_macs"],
        "train_flops_per_example": counts["train_flops"],
        "examples_per_sec_pipeline": rate_real,
        "examples_per_sec_memory": rate_mem,
        "fraction_of_peak_pipeline": frac_real,
        "fraction_of_peak_memory": frac_mem,
        "achieved_gflops_pipeline": counts["train_flops"] * rate_real / 1e9,
        "batch_size": b,
        "steps_per_epoch": args.steps,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "cores": os.cpu_count(),
        "libraries": library_versions(),
        "cpu": cpu_model(),
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "numpy": np.__version__,
    }
    path = SIDE.append(record)
    print(f"-> {path}")
    return record


def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import commit, load, pct, table, when

    headers = ["date", "batch", "examples/s (tf.data)", "examples/s (in memory)",
               "train GFLOP/s (tf.data)", "matmul peak GFLOP/s", "fraction of peak (tf.data)",
               "fraction of peak (in memory)", "1-min load before", "commit"]
    return ["### Training FLOP/s as a fraction of this CPU's matmul peak", "",
            *table(headers, [[when(r), r.get("batch_size"), r.get("examples_per_sec_pipeline"),
                              r.get("examples_per_sec_memory"), r.get("achieved_gflops_pipeline"),
                              r.get("matmul_peak_gflops"), pct(r.get("fraction_of_peak_pipeline")),
                              pct(r.get("fraction_of_peak_memory")), load(r, "loadavg_before"),
                              commit(r)] for r in rows])]


SIDE = Side("cifar_flops", app="cifar_cnn", render=render)


if __name__ == "__main__":
    main()
