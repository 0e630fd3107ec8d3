"""Multi-worker fault tolerance: one of two workers is killed with SIGKILL mid-epoch; the job is
restarted (as a cluster manager would: every worker, same command) and resumes from the chief's
last checkpoint, then finishes with its metrics file written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import ROOT, child_env, free_ports

EPOCHS = 3


def _start_job(run_dir, ports):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = child_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "apps.mnist_mlp.train", "--recipe", "keras", "--strategy",
             "multi_worker",
             "--epochs", str(EPOCHS), "--limit", "10000", "--batch-size", "32", "--patience", "10",
             "--run-dir", str(run_dir), "--no-export", "--verbose", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _kill_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(timeout=30)


def test_worker_killed_mid_epoch_then_job_resumes(tmp_path, mirror):
    run_dir = tmp_path / "mw"
    meta = run_dir / "checkpoints" / "backup" / "training_metadata.json"
    procs = _start_job(run_dir, free_ports(2))
    try:
        deadline = time.time() + 300
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if meta.exists() and json.loads(meta.read_text())["epoch"] >= 1:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), (
            "a worker ended before the kill:\n" + "".join(p.stdout.read()[-2000:] for p in procs
                                                           if p.poll() is not None))
        time.sleep(0.5)  # into the next epoch
        os.kill(procs[1].pid, signal.SIGKILL)  # lose the non-chief worker mid-epoch
        procs[1].wait(timeout=30)
        assert procs[1].returncode == -signal.SIGKILL
    finally:
        # The surviving worker is blocked in an all-reduce with a dead peer: the job has failed,
        # and the cluster manager tears it down.
        _kill_all(procs)
    resumed_from = json.loads(meta.read_text())["epoch"]
    assert 1 <= resumed_from < EPOCHS
    assert not (run_dir / "metrics.json").exists()

    procs = _start_job(run_dir, free_ports(2))  # restart the whole job, same command
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=400)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        _kill_all(procs)
        pytest.fail("the restarted job did not finish")
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert f"resuming from the end of epoch {resumed_from}" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == resumed_from
    assert metrics["epochs_run"] == EPOCHS
    assert metrics["metrics"]["accuracy"] > 0.85
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == list(range(EPOCHS))
