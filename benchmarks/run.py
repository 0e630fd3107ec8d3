"""Train an app at a named budget on real data and append one JSON record.

    python -m benchmarks.run mnist_mlp --budget default
    ksuite bench mnist_mlp --budget small --repeat 2
    ksuite bench mnist_mlp --budget small --strategy mirrored --devices 2   # extra app flags
    ksuite bench cifar_cnn --runs-dir /data/ksuite-runs --resume   # a run longer than a session
    python -m benchmarks.run mnist_mlp --budget default --seeds 3   # one record: the mean

The app runs in a child process (so its peak resident memory is measured alone) with its run
directory under ``benchmarks/runs/`` (``--runs-dir``); the record goes to
``benchmarks/results/<app>.jsonl``:
app, budget, command, metric name and value, epochs, wall seconds, examples/s, peak RSS, library
versions, CPU model, git commit. ``--resume`` keeps an existing run directory instead of starting
over: the app restores its last epoch-end backup (shared/callbacks.AtomicBackupAndRestore), so a
run killed mid-way (or cut by a time limit) continues where it was by running the same command;
its record's wall time is the total over all sittings, kept in the run directory's sittings.json
every 30 s (so a killed sitting counts too).
``--seeds N`` trains the budget with seeds 42 (the apps' default, so the first run is the plain
command), 43, ... and appends one record whose value is the mean, with every seed's value and
wall time; with ``--resume``, a seed whose run already finished is read, not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.budgets import BUDGETS
from shared.errors import UserError, exit_on_user_error
from shared.runs import cpu_model, library_versions  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def append_record(name: str, record: dict) -> Path:
    """Append one JSON line to results/<name>.jsonl (a single write of one line)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    return path


def epoch_seconds_total(run_dir: Path) -> float | None:
    """Sum of the ``epoch_seconds`` column of the run's history.csv files: its own and those of
    its training stages' sub-directories (VGG16's stage1/stage2, train_all). None without any."""
    import csv

    seconds = []
    for history in [run_dir / "history.csv", *sorted(run_dir.glob("*/history.csv"))]:
        try:
            with open(history, newline="") as f:
                seconds += [float(row["epoch_seconds"]) for row in csv.DictReader(f)
                            if row.get("epoch_seconds")]
        except (OSError, KeyError, ValueError):
            continue
    return round(sum(seconds), 1) if seconds else None


class Sittings:
    """The wall time of every sitting (invocation) of one run directory, in its sittings.json.

    A run resumed across sessions is several sittings, and its record states their total. The
    current sitting's entry is rewritten every ``beat`` seconds, so a sitting killed at a
    session's end still counts up to its last beat. A run directory from before the ledger
    starts it with one entry for its earlier sittings: the sum of their epochs' times."""

    FILE = "sittings.json"

    def __init__(self, run_dir: Path, beat: float = 30.0):
        self.path, self.beat = Path(run_dir) / self.FILE, beat
        self.entries: list[dict] = []
        self._stop, self._lock, self._thread = threading.Event(), threading.Lock(), None

    @property
    def total(self) -> float:
        return round(sum(e["seconds"] for e in self.entries), 1)

    def __enter__(self) -> "Sittings":
        if self.path.is_file():
            self.entries = json.loads(self.path.read_text())
        else:
            earlier = epoch_seconds_total(self.path.parent)
            if earlier:
                self.entries = [{"started": None, "seconds": earlier, "ended": True,
                                 "from": "history.csv epoch_seconds (before sittings.json)"}]
        self._t0 = time.time()
        self.entries.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": 0.0,
                             "ended": False})
        self._write()
        self._thread = threading.Thread(target=self._beats, daemon=True)
        self._thread.start()
        return self

    def _beats(self):
        while not self._stop.wait(self.beat):
            self._write()

    def _write(self, ended: bool = False):
        from shared.io import atomic_write_json

        with self._lock:
            self.entries[-1].update(seconds=round(time.time() - self._t0, 1), ended=ended)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self.entries)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._write(ended=True)
        return False


def fresh_or_resumed(run_dir: Path, resume: bool) -> Path:
    """``run_dir`` as an earlier invocation left it (``--resume``) or deleted to start over."""
    if run_dir.exists() and not resume:
        import shutil

        shutil.rmtree(run_dir)
    return run_dir


def run_child(cmd: list[str]) -> int:
    """Run the app in a child process and return its exit code. When this process is told to
    stop (SIGTERM, SIGHUP, Ctrl-C), the child is stopped too: an orphaned app would go on
    training into the run directory that the next ``--resume`` opens again."""
    import signal

    proc = subprocess.Popen(cmd, cwd=ROOT)

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signals = (signal.SIGTERM, signal.SIGHUP)
    main = threading.current_thread() is threading.main_thread()
    earlier = {s: signal.signal(s, stop) for s in signals} if main else {}
    try:
        return proc.wait()
    finally:
        for s, handler in earlier.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_once(app: str, budget: str, extra: list[str], tag: str, runs_dir: Path | None = None,
             resume: bool = False) -> dict:
    spec = BUDGETS[app]
    run_dir = fresh_or_resumed(
        Path(runs_dir or ROOT / "benchmarks" / "runs") / f"{app}-{budget}-{tag}", resume)
    cmd = [sys.executable, "-m", f"apps.{app}.train", *spec["budgets"][budget], *extra,
           "--run-dir", str(run_dir), "--no-export"]
    print("$ " + " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with Sittings(run_dir) as sittings:
        returncode = run_child(cmd)
    wall = time.time() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if returncode != 0:
        raise UserError(f"{app} exited with {returncode}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metric = spec["metric"]
    return {
        "app": app,
        "budget": budget,
        "command": "python -m " + " ".join(cmd[2:]),
        "run_dir": str(run_dir),
        "resumed": resume,  # wall_seconds then covers only this invocation
        # Every sitting of the run directory, killed ones included (sittings.json).
        "wall_seconds_all_sittings": sittings.total,
        "sittings": len(sittings.entries),
        "metric": metric,
        "value": metrics["metrics"][metric],
        "metrics": metrics["metrics"],
        "epochs": metrics.get("epochs_run"),
        "best_epoch": metrics.get("early_stopping", {}).get("best_epoch"),
        "wall_seconds": round(wall, 1),
        # A resumed run's wall time covers only the last invocation; the epochs' own timings
        # (history.csv, every session) add up to the whole training.
        "epoch_seconds_total": epoch_seconds_total(run_dir),
        "train_wall_seconds": metrics.get("wall_seconds"),
        "examples_per_sec": metrics.get("examples_per_sec"),
        "peak_rss_mb": round(max(peak_kb, before) / 1024, 1),
        "libraries": library_versions(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


DEFAULT_SEED = 42  # shared/flags.py's --seed default


def run_seeds(app: str, budget: str, extra: list[str], seeds: int, runs_dir: Path | None = None,
              resume: bool = False) -> dict:
    """The budget trained with ``seeds`` seeds; one record whose ``value`` is their mean."""
    import statistics

    runs = []
    for seed in range(DEFAULT_SEED, DEFAULT_SEED + seeds):
        flags = extra + (["--seed", str(seed)] if seed != DEFAULT_SEED else [])
        run_dir = Path(runs_dir or ROOT / "benchmarks" / "runs") / f"{app}-{budget}-seed{seed}"
        done = resume and (run_dir / "metrics.json").is_file() and \
            (run_dir / "seed_record.json").is_file()
        if done:
            print(f"seed {seed}: finished earlier, read from {run_dir}", flush=True)
            record = json.loads((run_dir / "seed_record.json").read_text())
        else:
            record = run_once(app, budget, flags, tag=f"seed{seed}", runs_dir=runs_dir,
                              resume=resume)
            from shared.io import atomic_write_json

            atomic_write_json(run_dir / "seed_record.json", record)
        print(f"seed {seed}: {record['metric']} = {record['value']:.4f}, "
              f"{wall_seconds_of(record):.0f} s", flush=True)
        runs.append((seed, record))
    values = [r["value"] for _, r in runs]
    walls = [wall_seconds_of(r) for _, r in runs]
    first, slowest = runs[0][1], walls.index(max(walls))
    return {
        **first,
        "value": statistics.fmean(values),
        "value_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "seeds": {str(seed): {"value": r["value"], "wall_seconds": wall,
                              "epochs": r["epochs"], "best_epoch": r["best_epoch"],
                              "examples_per_sec": r["examples_per_sec"],
                              "command": r["command"]} for (seed, r), wall in zip(runs, walls)},
        # Each seed is a separate run: the target "each <= T" reads the slowest one.
        "wall_seconds": walls[slowest],
        "wall_seconds_all_sittings": walls[slowest],
        "sittings": runs[slowest][1].get("sittings", 1),
        "resumed": False,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def sittings_text(record: dict) -> str:
    """`` (4 sittings: 9,120 s in all)`` for a run resumed across invocations, else ''."""
    if record.get("sittings", 1) > 1:
        total = record["wall_seconds_all_sittings"]
        return f" ({record['sittings']} sittings: {total:,.0f} s in all)"
    return ""


def wall_seconds_of(record: dict):
    """A run's wall time: over all its sittings where the record has them; for an older record
    of a run resumed across invocations, the sum of its epochs' times. A record of several seeds
    states its slowest seed's (each seed's own time already over all its sittings)."""
    if record.get("seeds"):
        return record.get("wall_seconds")
    if record.get("wall_seconds_all_sittings"):
        return record["wall_seconds_all_sittings"]
    if record.get("resumed") and record.get("epoch_seconds_total"):
        return record["epoch_seconds_total"]
    return record.get("wall_seconds")


@exit_on_user_error
def main(argv=None):
    # No abbreviations: the app's flags pass through, and --seed would be taken for --seeds.
    parser = argparse.ArgumentParser(prog="ksuite bench", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", choices=sorted(BUDGETS))
    parser.add_argument("--budget", default="default")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run N times (same seed: checks that metrics are identical)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where run directories go (default benchmarks/runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing run directory from its last backup instead "
                             "of deleting it")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train with seeds 42, 43, ... and record their mean")
    args, extra = parser.parse_known_args(argv)  # unknown flags go to the app
    if args.budget not in BUDGETS[args.app]["budgets"]:
        raise UserError(f"unknown budget {args.budget!r} for {args.app}; "
                        f"choose from {', '.join(BUDGETS[args.app]['budgets'])}")
    extra = [a for a in extra if a != "--"]
    if args.seeds < 1 or (args.seeds > 1 and ("--seed" in extra or args.repeat > 1)):
        raise UserError("--seeds N needs N >= 1, without --seed or --repeat")
    if args.seeds > 1:
        record = run_seeds(args.app, args.budget, extra, args.seeds, args.runs_dir, args.resume)
        path = append_record(args.app, record)
        per_seed = ", ".join(f"{s}: {v['value']:.4f}" for s, v in record["seeds"].items())
        print(f"{args.app} [{args.budget}] {record['metric']} = {record['value']:.4f} "
              f"(mean of {args.seeds} seeds; {per_seed}), slowest {record['wall_seconds']:.0f} s "
              f"-> {path}")
        return 0
    values = []
    for i in range(args.repeat):
        record = run_once(args.app, args.budget, extra, tag=str(i), runs_dir=args.runs_dir,
                          resume=args.resume)
        record["repeat"] = i
        values.append(record["value"])
        path = append_record(args.app, record)
        print(f"{args.app} [{args.budget}] {record['metric']} = {record['value']:.4f} in "
              f"{record['epochs']} epochs, {record['wall_seconds']} s"
              f"{sittings_text(record)}, "
              f"{record['examples_per_sec'] or 0:.0f} examples/s, peak RSS "
              f"{record['peak_rss_mb']} MB -> {path}")
    if args.repeat > 1:
        same = len(set(values)) == 1
        print(f"same seed, {args.repeat} runs: {'identical' if same else 'DIFFERENT'} {values}")
    return 0


if __name__ == "__main__":
    main()
