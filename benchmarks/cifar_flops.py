"""What fraction of this CPU's matrix-multiply peak does CIFAR-10 training reach, for the default
scratch recipe (airbench94, bfloat16, batch 1,024) and the old one (keras_classic, float32, 128)?

    python -m benchmarks.cifar_flops                       # both models, 4096^2 matmuls, 40 steps
    python -m benchmarks.cifar_flops --model scratch --steps 20

1. Peak: a timed large ``tf.matmul`` (n x n by n x n, 2 n^3 FLOPs) in float32 and in bfloat16,
   best of several repetitions after a warm-up, with TensorFlow's default thread pools.
2. Work per example: the model's forward multiply-adds counted from its layer shapes
   (``apps.cifar_cnn.model.flops_per_example``; conv and dense only), training = 3 x forward
   (forward, gradient w.r.t. activations, gradient w.r.t. weights) = 6 FLOPs per multiply-add.
3. Training speed: ``fit`` steps of each model's default configuration (its precision, batch and
   optimizer) on real CIFAR-10 images, (i) through the app's real input pipeline with its
   augmentation and (ii) on the same batches already in memory, first epoch (tracing) discarded.

fraction of peak = train FLOPs per example x examples/s / the peak of the model's precision.
Appends one record per model to ``benchmarks/results/cifar_flops.jsonl``. On a shared machine
every number moves with the load: the record includes the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.side import Side  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def matmul_peak(n: int, reps: int, dtype: str = "float32") -> float:
    """Best FLOP/s of an n x n matmul in ``dtype`` over ``reps`` timed runs (after a warm-up)."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)

    @tf.function
    def mm(x, y):
        return tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32))  # O(n^2): negligible

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


def model_config(name: str) -> dict:
    """The model's default training configuration: the app's preset and its CPU precision."""
    from apps.cifar_cnn.train import APP

    args = APP.parse(["--model", name])
    return {"args": args, "precision": APP.precision_for(args)["cpu"], "batch": args.batch_size}


MODELS = ("scratch", "keras_classic")


def build(name: str, x_train, cfg: dict):
    """The model compiled as the app compiles it (its loss, optimizer and weight decay)."""
    from apps.cifar_cnn import model as M
    from apps.cifar_cnn.train import APP
    from shared.app import Data
    from shared.precision import dtype_policy

    args = cfg["args"]
    data = Data(train=None, val=None, test=None, steps_per_epoch=1, examples_per_step=cfg["batch"],
                x_train=x_train, names=tuple(range(10)), record={})
    with dtype_policy(cfg["precision"]):
        model = APP.build_model(args, data, None)
        APP.compile(args, model, data, None)
    return model


def measure(name: str, x_tr, y_tr, args, peaks: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from apps.cifar_cnn import data
    from apps.cifar_cnn.model import flops_per_example

    cfg = model_config(name)
    b = args.batch_size or cfg["batch"]
    n = args.steps * b
    x, y = np.resize(x_tr, (n, 32, 32, 3)), np.resize(y_tr, n)
    counts = flops_per_example(build(name, x_tr, cfg))
    augment = cfg["args"].augment
    real = data.make_dataset(x, y, b, training=True, augment=augment, seed=0, drop_remainder=True)
    memory = tf.data.Dataset.from_tensor_slices(
        (tf.constant(x.astype("float32").reshape(-1, b, 32, 32, 3)),
         tf.constant(y.astype("int32").reshape(-1, b))))

    def model_fn():
        return build(name, x_tr, cfg)

    rate_real = train_rate(model_fn, real, args.steps, args.epochs, b)
    rate_mem = train_rate(model_fn, memory, args.steps, args.epochs, b)
    peak = peaks["bfloat16" if "bfloat16" in cfg["precision"] else "float32"]
    frac_real = counts["train_flops"] * rate_real / peak
    frac_mem = counts["train_flops"] * rate_mem / peak
    print(f"{name} ({cfg['precision']}, batch {b}): {counts['train_flops'] / 1e9:.3f} GFLOP per "
          f"training image; {rate_real:.0f} examples/s with the augmenting pipeline "
          f"({frac_real:.1%} of peak), {rate_mem:.0f} from memory ({frac_mem:.1%})")
    return {"model": name, "precision": cfg["precision"], "batch_size": b,
            "forward_macs_per_example": counts["forward_macs"],
            "train_flops_per_example": counts["train_flops"],
            "examples_per_sec_pipeline": rate_real, "examples_per_sec_memory": rate_mem,
            "fraction_of_peak_pipeline": frac_real, "fraction_of_peak_memory": frac_mem,
            "achieved_gflops_pipeline": counts["train_flops"] * rate_real / 1e9,
            "matmul_peak_gflops": peak / 1e9, "value": frac_real}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=(*MODELS, "both"), default="both",
                        help="which scratch model(s) to time")
    parser.add_argument("--matmul", type=int, default=4096, help="matmul size n")
    parser.add_argument("--reps", type=int, default=5, help="timed matmul repetitions")
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (first dropped)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override the models' own batch sizes")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from apps.cifar_cnn import data
    from benchmarks.run import git_commit, library_versions
    from shared.runs import cpu_model

    keras.utils.set_random_seed(0)
    load_before = os.getloadavg()
    peaks = {dtype: matmul_peak(args.matmul, args.reps, dtype) for dtype in ("float32", "bfloat16")}
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()) +
          f" (n={args.matmul}, best of {args.reps})")
    (x_tr, y_tr), _, _, _ = data.load()
    records = []
    for name in (MODELS if args.model == "both" else [args.model]):
        record = {"app": "cifar_flops", "metric": "fraction_of_matmul_peak",
                  **measure(name, x_tr, y_tr, args, peaks),
                  "matmul_n": args.matmul, "matmul_peaks_gflops": {k: v / 1e9 for k, v in
                                                                  peaks.items()},
                  "steps_per_epoch": args.steps, "loadavg_before": load_before,
                  "loadavg_after": os.getloadavg(),
                  "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                              "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
                  "cores": os.cpu_count(), "libraries": library_versions(), "cpu": cpu_model(),
                  "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "numpy": np.__version__}
        print(f"-> {SIDE.append(record)}")
        records.append(record)
    return records


def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import commit, load, pct, table, when

    headers = ["date", "model", "precision", "batch", "GFLOP per training image",
               "examples/s (tf.data)", "examples/s (in memory)",
               "train GFLOP/s (tf.data)", "matmul peak GFLOP/s", "fraction of peak (tf.data)",
               "fraction of peak (in memory)", "1-min load before", "commit"]
    return ["### Training FLOP/s as a fraction of this CPU's matmul peak", "",
            *table(headers, [[when(r), r.get("model", "keras_classic"),
                              r.get("precision", "float32"), r.get("batch_size"),
                              (r.get("train_flops_per_example") or 0) / 1e9 or None,
                              r.get("examples_per_sec_pipeline"),
                              r.get("examples_per_sec_memory"), r.get("achieved_gflops_pipeline"),
                              r.get("matmul_peak_gflops"), pct(r.get("fraction_of_peak_pipeline")),
                              pct(r.get("fraction_of_peak_memory")), load(r, "loadavg_before"),
                              commit(r)] for r in rows])]


SIDE = Side("cifar_flops", app="cifar_cnn", render=render)


if __name__ == "__main__":
    main()
