"""Helpers for tests that run the suite's commands in child processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_module(module: str, *args, timeout: float = 300, env: dict | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def run_modules(*commands, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run several ``(module, args)`` commands at the same time (independent child processes:
    on a multi-core machine much of a short run is single-threaded start-up and tracing) and
    check that each exits 0, as ``run_module`` does."""
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]
    procs = [subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                              env=child_env(), stdout=out, stderr=err, text=True)
             for (module, args), (out, err) in zip(commands, logs)]
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    results = []
    for p, (out, err) in zip(procs, logs):
        out.seek(0)
        err.seek(0)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read()))
        out.close()
        err.close()
    for (module, args), r in zip(commands, results):
        if r.returncode != 0:
            raise AssertionError(f"{module} {args} exited {r.returncode}\n"
                                 f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return results


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def worker_env(ports: list[int], index: int, **extra) -> dict:
    """A child environment whose TF_CONFIG names a local cluster of ``len(ports)`` workers
    (127.0.0.1:<port>) and makes this process worker ``index`` (worker 0 is the chief)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return child_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}}), **extra)


def run_workers(module: str, *args, workers: int = 2, timeout: float = 300) -> list[str]:
    """Run ``python -m module args`` as ``workers`` local processes of one multi-worker cluster
    (``--strategy multi_worker`` must be among ``args``) and wait for all of them. Returns each
    worker's combined stdout/stderr. Fails the test if a worker exits non-zero or time runs out,
    after killing the others: a worker that died leaves the rest blocked in a collective op."""
    ports = free_ports(workers)
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers)]
    procs = [subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                              env=worker_env(ports, i), stdout=log, stderr=subprocess.STDOUT,
                              text=True)
             for i, log in enumerate(logs)]
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.returncode not in (None, 0) for p in procs):
            break
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        why = (f"did not finish in {timeout:.0f} s" if time.monotonic() >= deadline
               else "exited non-zero")
        raise AssertionError(f"{module} {args}: worker(s) {failed} {why}" + "".join(
            f"\n--- worker {i} (exit {p.returncode}):\n{out[-3000:]}"
            for i, (p, out) in enumerate(zip(procs, outputs))))
    return outputs


def read_history(run_dir) -> "pandas.DataFrame":
    """The per-epoch history a run wrote (``<run dir>/history.csv``)."""
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "history.csv")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
