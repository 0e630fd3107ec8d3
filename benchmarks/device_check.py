"""Check the whole suite on the devices at hand: every app's ``small`` budget under float32 and
mixed precision, with XLA off and on, mirrored over every GPU when there are several.

    python -m benchmarks.device_check                 # every app, every setting, `small` budget
    python -m benchmarks.device_check --quick         # `tiny` budgets (the contract's smoke
                                                      # flags where an app has none)
    python -m benchmarks.device_check --apps cifar_cnn --precision float32 mixed_bfloat16 --xla off
    python -m benchmarks.device_check --apps mnist_mlp -- --epochs 1   # extra flags go to each app

The settings come from the device kind TensorFlow sees: the mixed policy is ``mixed_float16`` on a
GPU (Tensor Cores) and ``mixed_bfloat16`` on a CPU (AVX512-BF16 / AMX); ``--strategy mirrored``
over every GPU when there are several (on a CPU: ``--strategy mirrored --devices N`` splits it
into N logical devices, which is how the tests exercise that branch). An app's own refusals
hold: word2vec trains in float32 only, the DQN's TD update takes no ``--jit-compile``. Every run
is a child process (``python -m apps.<app>.train <budget flags> --no-export
--no-deterministic``: the same kernel rules for XLA on and off) and appends one record to
``benchmarks/results/device_check.jsonl``: the device it ran on, precision, XLA, strategy and
replicas, examples/s (the median epoch after the first; a one-epoch budget's includes tracing
and XLA compilation), the app's metric, the peak memory (the
GPUs' peak allocation from ``tf.config.experimental.get_memory_info``, on a CPU the process's
peak RSS) and which of the two it is. The table at the end (pandas) gives each setting's
speed against the app's float32-without-XLA run.

Sized for: 10 minutes on one datacenter GPU (the ``small`` budgets), 30 minutes on 2 CPU cores
with ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.side import Side
from shared.errors import UserError, exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]
MIXED = {"gpu": "mixed_float16", "cpu": "mixed_bfloat16"}  # the device kind's 16-bit policy


def plan(apps: list[str], device_kind: str, gpus: int, precisions=None, xla=None,
         strategy: str | None = None) -> list[dict]:
    """The settings to run: per app, float32 and the device kind's mixed policy, XLA off and
    on, ``mirrored`` when there are several GPUs; narrowed by ``precisions`` / ``xla`` (lists)
    and the app's own refusals."""
    from apps import registry

    declared = registry()
    strategy = strategy or ("mirrored" if gpus > 1 else "default")
    out = []
    for name in apps:
        app = declared[name]
        policies = precisions or ["float32", MIXED[device_kind]]
        if app.float32_only:
            policies = [p for p in policies if p == "float32"]
        for precision in policies:
            for jit in (xla if xla is not None else [False, True]):
                if jit and app.no_jit_compile:
                    continue
                out.append({"app": name, "precision": precision, "jit_compile": jit,
                            "strategy": strategy})
    return out


def budget_flags(app, budget: str | None, quick: bool) -> tuple[str, list[str]]:
    """(budget name, its flags): ``--budget``, else ``tiny`` with ``--quick`` (the smoke flags
    when an app has no tiny budget), else ``small``."""
    if budget:
        if budget not in app.budgets:
            raise UserError(f"{app.name} has no budget {budget!r} "
                            f"({', '.join(app.budgets)})")
        return budget, list(app.budgets[budget])
    if quick:
        if "tiny" in app.budgets:
            return "tiny", list(app.budgets["tiny"])
        return "smoke", list(app.smoke or [])
    return "small", list(app.budgets.get("small", app.budgets["default"]))


def run_setting(setting: dict, budget: str, flags: list[str], extra: list[str], runs_dir: Path,
                devices: int | None, device: str, device_kind: str) -> dict:
    """One child run; its record (``error`` set when it failed)."""
    from benchmarks.run import fresh_or_resumed, git_commit
    from shared.runs import cpu_model, library_versions

    app = setting["app"]
    tag = (f"{setting['precision']}-xla{int(setting['jit_compile'])}-{setting['strategy']}")
    run_dir = fresh_or_resumed(runs_dir / f"{app}-{budget}-{tag}", resume=False)
    cmd = [sys.executable, "-m", f"apps.{app}.train", *flags, *extra,
           "--precision", setting["precision"],
           "--jit-compile" if setting["jit_compile"] else "--no-jit-compile",
           "--no-deterministic", "--verbose", "0", "--no-export", "--run-dir", str(run_dir)]
    if setting["strategy"] != "default":
        cmd += ["--strategy", setting["strategy"]]
    if devices:
        cmd += ["--devices", str(devices)]
    print("$ python -m " + " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    record = {**setting, "budget": budget, "device": device, "device_kind": device_kind,
              "command": "python -m " + " ".join(cmd[2:]), "wall_seconds": round(wall, 1),
              # The 1-min load average when the run ended (a shared machine slows every run).
              "load_1min": round(os.getloadavg()[0], 2),
              "cpu": cpu_model(), "libraries": library_versions(), "git_commit": git_commit(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    metrics_file = run_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_file.exists():
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        record["error"] = lines[-1] if lines else f"exit {proc.returncode}"
        print(f"  failed: {record['error']}", flush=True)
        return record
    from apps import registry

    result = json.loads(metrics_file.read_text())
    metric = registry()[app].metric
    device_memory = result.get("peak_device_memory_mb")
    record.update({
        "jit_compile": result.get("jit_compile"),  # what the run compiled with
        "replicas": result.get("replicas"),
        "metric": metric,
        "value": result["metrics"].get(metric),
        "examples_per_sec": result.get("examples_per_sec")
        or result["metrics"].get("words_per_sec") or result["metrics"].get("env_steps_per_sec"),
        "epochs": result.get("epochs_run"),
        "train_wall_seconds": result.get("wall_seconds"),
        "peak_memory_mb": max(device_memory) if device_memory else result.get("peak_rss_mb"),
        "peak_memory_kind": "GPU peak allocation (max over GPUs)" if device_memory
        else "process peak RSS",
        "peak_device_memory_mb": device_memory,
        "peak_rss_mb": result.get("peak_rss_mb"),
    })
    return record


def speedups(records: list[dict]) -> list[dict]:
    """Each record with ``speedup``: its examples/s over its app's float32, XLA-off run of the
    same budget and strategy (None where that run is missing)."""
    base = {(r["app"], r["budget"], r["strategy"]): r.get("examples_per_sec") for r in records
            if r["precision"] == "float32" and not r.get("jit_compile") and not r.get("error")}
    out = []
    for r in records:
        ref = base.get((r["app"], r["budget"], r["strategy"]))
        rate = r.get("examples_per_sec")
        out.append({**r, "speedup": round(rate / ref, 3) if rate and ref else None})
    return out


COLUMNS = ["app", "budget", "precision", "jit_compile", "strategy", "replicas",
           "examples_per_sec", "speedup", "metric", "value", "peak_memory_mb", "device"]


def print_table(records: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(speedups(records))
    for col in COLUMNS:
        if col not in frame:
            frame[col] = None
    shown = frame[COLUMNS].rename(columns={"examples_per_sec": "examples/s",
                                           "jit_compile": "xla", "peak_memory_mb": "peak MB"})
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 40):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    failed = [r for r in records if r.get("error")]
    for r in failed:
        print(f"failed: {r['app']} {r['precision']} xla={r['jit_compile']}: {r['error']}")


def render(rows: list[dict]) -> list[str]:
    """The report's section: one table per device, speed against float32 without XLA."""
    from benchmarks.report import table, when

    lines = ["## Devices (`python -m benchmarks.device_check`)", "",
             "Each app's budget under float32 and mixed precision, XLA off and on; speed-up is "
             "examples/s over the same app's float32, XLA-off run. Peak memory: the GPUs' peak "
             "allocation on a GPU, the process's peak RSS on a CPU.", ""]
    for device in dict.fromkeys(r.get("device") for r in rows):
        mine = speedups([r for r in rows if r.get("device") == device])
        lines += [f"### {device}", "",
                  *table(["date", "app", "budget", "precision", "XLA", "strategy x replicas",
                          "examples/s", "speed-up", "metric", "peak MB", "commit"],
                         [[when(r), r["app"], r["budget"], r["precision"],
                           "on" if r.get("jit_compile") else "off",
                           f"{r['strategy']} x {r.get('replicas') or '?'}",
                           r.get("examples_per_sec"), r.get("speedup"),
                           r.get("error") or f"{r.get('metric')} {r.get('value')}",
                           r.get("peak_memory_mb"), r.get("git_commit") or "–"]
                          for r in mine])]
    return lines


SIDE = Side("device_check", app="devices", render=render)


@exit_on_user_error
def main(argv=None):
    from apps import registry

    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check",
                                     description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    declared = registry()
    parser.add_argument("--apps", nargs="+", choices=list(declared), default=list(declared),
                        help="apps to check (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets (smoke flags where an app has none): 2 CPU cores")
    parser.add_argument("--budget", default=None, help="this budget for every app")
    parser.add_argument("--precision", nargs="+", default=None,
                        choices=("float32", "mixed_bfloat16", "mixed_float16"),
                        help="policies (default: float32 and the device kind's mixed one)")
    parser.add_argument("--xla", choices=("both", "on", "off"), default="both",
                        help="XLA settings to run")
    parser.add_argument("--strategy", choices=("default", "mirrored"), default=None,
                        help="default: mirrored over every GPU when there are several")
    parser.add_argument("--devices", type=int, default=None,
                        help="passed to each app: N logical CPU devices, or the first N GPUs")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs",
                        help="where the run directories go")
    parser.add_argument("--results", type=Path, default=None,
                        help="append records here (default benchmarks/results/device_check.jsonl)")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]

    from shared.precision import device_kind, device_name

    import tensorflow as tf

    kind, name = device_kind(), device_name()
    gpus = len(tf.config.list_physical_devices("GPU"))
    settings = plan(args.apps, kind, gpus, args.precision,
                    {"both": None, "on": [True], "off": [False]}[args.xla], args.strategy)
    if not settings:
        raise UserError("nothing to run: every setting asked for is refused by the apps")
    print(f"device_check on {name} ({kind}, {gpus} GPU(s)): {len(settings)} runs", flush=True)
    records = []
    for setting in settings:
        app = declared[setting["app"]]
        budget, flags = budget_flags(app, args.budget, args.quick)
        record = run_setting(setting, budget, flags, extra, args.runs_dir, args.devices, name,
                             kind)
        record["benchmark"] = SIDE.name
        if args.results:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            with open(args.results, "a") as f:
                f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        else:
            SIDE.append(record)
        records.append(record)
        if not record.get("error"):
            print(f"  {record['app']} {record['precision']} xla={record['jit_compile']}: "
                  f"{record['examples_per_sec'] or 0:.0f} examples/s, {record['metric']} "
                  f"{record['value']}, peak {record['peak_memory_mb']} MB", flush=True)
    print_table(records)
    return 1 if any(r.get("error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
