"""A training process killed with SIGKILL mid-run resumes from its last completed epoch when
the same command is run again, and finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from tests.helpers import ROOT, child_env

EPOCHS = 5


def test_sigkill_then_resume(tmp_path, mirror):
    run_dir = tmp_path / "run"
    # Full training set: ~4 s per epoch on 2 cores, so the kill lands inside an epoch.
    cmd = [sys.executable, "-m", "apps.mnist_mlp.train", "--recipe", "keras",
           "--epochs", str(EPOCHS),
           "--run-dir", str(run_dir), "--no-export", "--verbose", "0", "--patience", "10"]
    meta = run_dir / "checkpoints" / "backup" / "training_metadata.json"

    first = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    completed = 0
    while time.time() < deadline and first.poll() is None:
        if meta.exists():
            try:
                completed = json.loads(meta.read_text())["epoch"]
            except (json.JSONDecodeError, KeyError):
                completed = 0  # never expected: the backup is written atomically
            if completed >= 2:
                break
        time.sleep(0.05)
    assert first.poll() is None, "training ended before it could be killed:\n" + first.stdout.read()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    killed_at = json.loads(meta.read_text())["epoch"]
    assert 2 <= killed_at < EPOCHS
    assert not (run_dir / "metrics.json").exists()

    second = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming from the end of epoch {killed_at}" in second.stdout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == killed_at
    hist = pd.read_csv(run_dir / "history.csv")
    # One row per epoch: the first process's completed epochs, then the resumed ones.
    assert hist["epoch"].tolist() == list(range(EPOCHS))
    assert metrics["epochs_run"] == EPOCHS
    assert metrics["metrics"]["accuracy"] > 0.95
    assert not meta.exists()  # the backup is removed when training completes


def test_a_second_process_on_a_run_directory_in_use_stops_with_the_holders_pid(tmp_path):
    """Two trainers in one run directory would overwrite each other's checkpoints: the second
    stops in one line, naming the first; the holder itself may take its lock again."""
    from shared.errors import UserError
    from shared.runs import hold_run_dir, release_run_dir

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from shared.runs import hold_run_dir; "
         "hold_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        try:
            hold_run_dir(tmp_path)
        except UserError as e:
            assert f"pid {holder.pid}" in str(e) and "--run-dir" in str(e)
        else:
            raise AssertionError("a run directory in use was opened twice")
    finally:
        holder.kill()
        holder.wait()
    hold_run_dir(tmp_path)  # released with its process
    hold_run_dir(tmp_path)  # and taken again by the same process without error
    probe = [sys.executable, "-c", "import sys; from shared.runs import hold_run_dir; "
             "hold_run_dir(sys.argv[1])", str(tmp_path)]
    busy = subprocess.run(probe, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    assert busy.returncode != 0 and f"pid {os.getpid()}" in busy.stderr
    release_run_dir(tmp_path)  # a run that ended in-process (App.run's finally) frees it
    assert subprocess.run(probe, cwd=ROOT, env=child_env()).returncode == 0


def test_a_stopped_benchmark_stops_its_app(tmp_path):
    """benchmarks.run runs the app as a child: SIGTERM to the runner ends the child too, so no
    orphaned trainer keeps writing into the run directory."""
    marker = tmp_path / "child.pid"
    child = (f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); "
             "time.sleep(120)")
    runner = subprocess.Popen(
        [sys.executable, "-c", "import sys; from benchmarks.run import run_child; "
         "sys.exit(run_child([sys.executable, '-c', sys.argv[1]]))", child],
        cwd=ROOT, env=child_env())
    deadline = time.time() + 60
    while not (marker.is_file() and marker.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    pid = int(marker.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the app outlived its benchmark runner")
