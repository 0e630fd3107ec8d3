"""What test-time augmentation costs per image in serving: the CIFAR-10 export's
``serving_default`` signature timed with ``--tta none``, ``mirror`` (2 views) and
``mirror_translate`` (6 views, the default).

    python -m benchmarks.cifar_tta_cost                  # batches of 1 and 100, 30 calls each
    python -m benchmarks.cifar_tta_cost --calls 100

Each SavedModel comes from a one-epoch run of the default recipe on 1,000 images (the cost of a
forward pass does not depend on the weights), exported once per TTA level into a temporary
folder; each signature is called on raw uint8 images as a client sends them, after a warm-up,
and the median wall time per call is recorded. The accuracy TTA buys is in the app's own records
(``accuracy`` beside ``accuracy_without_tta``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.side import Side

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
LEVELS = ("none", "mirror", "mirror_translate")


def time_signature(sig, images, calls: int) -> float:
    """Median seconds per call of ``sig(images=...)`` after two warm-up calls."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(images)
    for _ in range(2):
        sig(images=x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        sig(images=x)["class_ids"].numpy()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100],
                        help="batch sizes to time")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from apps.cifar_cnn import train
    from benchmarks.run import git_commit, library_versions
    from shared.runs import cpu_model

    rng = np.random.default_rng(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for level in LEVELS:
            record = train.main(["--epochs", "1", "--limit", "1000", "--test-limit", "100",
                                 "--tta", level, "--run-dir", f"{tmp}/run-{level}",
                                 "--export-dir", f"{tmp}/models-{level}", "--verbose", "0"])
            sig = tf.saved_model.load(record["export"]).signatures["serving_default"]
            rows[level] = {}
            for b in args.batches:
                images = rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8)
                seconds = time_signature(sig, images, args.calls)
                rows[level][str(b)] = {"ms_per_call": 1e3 * seconds,
                                       "ms_per_image": 1e3 * seconds / b}
                print(f"--tta {level}, batch {b}: {1e3 * seconds:.1f} ms per call, "
                      f"{1e3 * seconds / b:.2f} ms per image")
    record = {"app": "cifar_tta_cost", "metric": "ms_per_image", "levels": rows,
              "value": rows["mirror_translate"][str(args.batches[-1])]["ms_per_image"],
              "calls": args.calls, "loadavg": os.getloadavg(), "cores": os.cpu_count(),
              "libraries": library_versions(), "cpu": cpu_model(), "git_commit": git_commit(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"-> {SIDE.append(record)}")
    return record


def render(rows):
    """The report's lines: ms per image for each TTA level and batch size."""
    from benchmarks.report import commit, table, when

    headers = ["date", "batch", *(f"--tta {level} (ms/image)" for level in LEVELS),
               "1-min load", "commit"]
    body = []
    for r in rows:
        levels = r.get("levels", {})
        for b in levels.get("none", {}):
            body.append([when(r), int(b), *(levels.get(level, {}).get(b, {}).get("ms_per_image")
                                            for level in LEVELS),
                         (r.get("loadavg") or [None])[0], commit(r)])
    return ["### What test-time augmentation costs in serving (the export's signature)", "",
            *table(headers, body)]


SIDE = Side("cifar_tta_cost", app="cifar_cnn", render=render)


if __name__ == "__main__":
    main()
