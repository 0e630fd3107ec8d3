"""Distribution of the MNIST MLP: the same training under `mirrored` on 2 logical CPU devices and
on one device gives the same loss; `multi_worker` with two local worker processes trains and both
finish (the other apps: test_distributed_apps.py).

Each run is a child process because logical devices and collective ops can only be configured
before TensorFlow initializes.
"""

from __future__ import annotations

from tests.helpers import read_history, read_json, run_module, run_workers

# Same global batch (64), same seed, dropout off (dropout masks are drawn per replica, so with
# dropout the two computations are not the same one), 2 epochs x 15 steps on real images.
COMMON = ["--recipe", "keras", "--epochs", "2", "--steps-per-epoch", "15", "--limit", "3000",
          "--dropout", "0",
          "--no-export", "--verbose", "0", "--patience", "5"]
# float32 sums in a different order (two partial gradients all-reduced vs one batch): after
# 30 RMSprop steps (which divide by running RMS, amplifying round-off) the losses measured here
# differ by ~2e-4 relative. 1e-3 allows for that without hiding a real bug: a wrong loss scaling
# or a skipped all-reduce changes the loss by more than 1e-2 in this setting.
RTOL = 1e-3


def _train(tmp_path, name, *flags):
    run_dir = tmp_path / name
    run_module("apps.mnist_mlp.train", *COMMON, *flags, "--run-dir", run_dir, timeout=240)
    return read_history(run_dir), read_json(run_dir / "config.json")


def test_mirrored_two_devices_matches_one_device(tmp_path, mirror):
    single, cfg1 = _train(tmp_path, "one", "--strategy", "one_device", "--batch-size", "64")
    mirrored, cfg2 = _train(tmp_path, "two", "--strategy", "mirrored", "--devices", "2",
                            "--batch-size", "32")
    assert cfg1["replicas"] == 1 and cfg2["replicas"] == 2
    assert cfg1["global_batch_size"] == cfg2["global_batch_size"] == 64
    for column in ("loss", "val_loss"):
        a, b = single[column].to_numpy(), mirrored[column].to_numpy()
        assert a[-1] < a[0]  # it trained
        assert abs(a[-1] - b[-1]) <= RTOL * abs(a[-1]), (column, a, b)


def test_multi_worker_two_processes_finish(tmp_path, mirror):
    run_dir = tmp_path / "mw"
    outputs = run_workers(
        "apps.mnist_mlp.train", "--recipe", "keras", "--strategy", "multi_worker", "--epochs", "1",
        "--limit", "2000",
        "--batch-size", "32", "--run-dir", run_dir, "--export-dir", tmp_path / "models",
        "--verbose", "0", timeout=240)
    assert all("test accuracy" in out for out in outputs)
    config = read_json(run_dir / "config.json")
    assert config["replicas"] == 2 and config["global_batch_size"] == 64
    # The chief writes the run record and the export; the other worker only its own logs.
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "workers" / "1" / "metrics.json").is_file()
    assert (tmp_path / "models" / "mnist_mlp" / "1" / "saved_model.pb").is_file()
    chief = read_json(run_dir / "metrics.json")["metrics"]
    other = read_json(run_dir / "workers" / "1" / "metrics.json")["metrics"]
    assert chief == other  # synchronous training: both workers hold the same model


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path):
    proc = run_module("apps.mnist_mlp.train", "--strategy", "multi_worker", "--run-dir",
                      tmp_path / "x", check=False, timeout=60)
    assert proc.returncode == 2
    assert "TF_CONFIG" in proc.stderr and "Traceback" not in proc.stderr
