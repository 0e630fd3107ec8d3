"""Promotion pipeline: validate -> train -> evaluate -> gate -> publish as ``canary`` ->
``promote`` to ``stable`` -> ``rollback``.

    ksuite pipeline APP [pipeline flags] [APP's own train flags]
    ksuite promote MODEL        # stable := canary
    ksuite rollback MODEL       # stable := the version that was stable before

``pipeline`` runs, for any app:

1. **validate** the data the app is about to train on (its ``validate_data``, with the checks of
   shared/validate.py: schema, value ranges, label balance); on failure print the report and
   stop (exit 4) before any training;
2. **train and evaluate** with the app's own train script, in a child process, exporting into a
   candidates folder that neither TensorFlow Serving nor ``ksuite serving-config`` look at
   (``<export-dir>/.candidates/``); the app evaluates on its test split and records the metrics in
   the SavedModel's ``assets.extra/ksuite.json``;
3. **gate**: compare the candidate's metric with the version labelled ``stable`` in the serving
   config (``--serving-config``); refuse (exit 3, candidate deleted) when it is worse by more than
   ``--margin``. The default margin 0 is TFX's: its Keras tutorial blesses a model only when
   it is not worse than the baseline (``change_threshold`` with ``absolute: -1e-10``). With
   ``--class-margin M`` (classifiers), also refuse when any class's test recall is below the
   stable version's recall of that class by more than M (the one line names the class): the
   course's "behaviour on subpopulations", read from both versions' ``per_class`` metrics in
   ``assets.extra/ksuite.json`` (shared/export.Gate says why per-class recall);
4. **publish** the candidate as the next integer version (an atomic rename, so a server never
   sees it half-written) and label it ``canary`` in the serving config; ``stable`` does not move.

Labels live where TensorFlow Serving reads them: ``version_labels`` in the ``--model_config_file``.
TF Serving only lets a label point at a version that is already loaded, so the config is written
in two steps: first the new version joins the ``specific`` version policy, then (once a server
given with ``--server`` reports it AVAILABLE, or at once without ``--server``) the label moves.
The previous ``stable`` stays in the policy after a promotion, so that ``rollback`` is a label
change the server applies instantly. Both TF Serving (``--model_config_file_poll_wait_seconds``)
and the local server (same flag) re-read the file while serving: no restart.

The history of promotions (needed to know what "the previous stable" was) is kept next to the
versions in ``<export-dir>/<model>/promotions.json``; servers ignore it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from apps import get as get_app
from apps import registry
from shared.app import App
from shared.errors import UserError, exit_on_user_error
from shared.export import Gate, GateRefused, publish, read_metadata, versions
from shared.io import atomic_write_json, atomic_write_text

CANDIDATES = ".candidates"
HISTORY_FILE = "promotions.json"


# -- the serving config ------------------------------------------------------------------------


def load_config(path: Path):
    """The ModelServerConfig in ``path``, or an empty model_config_list when there is none."""
    from serving.config import _pb, read_model_config

    if path.exists():
        return read_model_config(path)
    config = _pb().ModelServerConfig()
    config.model_config_list.SetInParent()
    return config


def save_config(path: Path, config) -> None:
    from serving.config import check_model_config, config_to_text

    problems = check_model_config(config)
    if problems:  # never write a config TF Serving would refuse
        raise UserError(f"refusing to write {path}: {'; '.join(problems)}")
    atomic_write_text(path, config_to_text(
        config, "TensorFlow Serving --model_config_file, maintained by `ksuite pipeline`, "
                "`ksuite promote` and `ksuite rollback`."))


def find_entry(config, name: str):
    for mc in config.model_config_list.config:
        if mc.name == name:
            return mc
    return None


def labels_of(config, name: str) -> dict[str, int]:
    mc = find_entry(config, name)
    return dict(mc.version_labels) if mc is not None else {}


def set_entry(config, name: str, base_path: str, serve: set[int], labels: dict[str, int]):
    """Make ``name`` serve exactly ``serve`` (a ``specific`` policy) with ``labels``."""
    mc = find_entry(config, name)
    if mc is None:
        mc = config.model_config_list.config.add()
        mc.name = name
        mc.base_path = base_path
        mc.model_platform = "tensorflow"
    mc.model_version_policy.specific.ClearField("versions")
    mc.model_version_policy.specific.versions.extend(sorted(serve))
    mc.ClearField("version_labels")
    for label, version in sorted(labels.items()):
        mc.version_labels[label] = version
    return mc


# -- promotion history -------------------------------------------------------------------------


def read_history(model_base: Path) -> dict:
    path = model_base / HISTORY_FILE
    if not path.exists():
        return {"previous_stable": [], "log": []}
    return json.loads(path.read_text())


def write_history(model_base: Path, history: dict, action: str, labels: dict) -> None:
    history["log"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action,
                           "labels": labels})
    atomic_write_json(model_base / HISTORY_FILE, history)


def wanted_versions(labels: dict[str, int], history: dict) -> set[int]:
    """Versions to keep loaded: the labelled ones and the previous stable (instant rollback)."""
    keep = set(labels.values())
    if history["previous_stable"]:
        keep.add(history["previous_stable"][-1])
    return keep


def wait_available(server: str | None, name: str, version: int, timeout: float = 120.0) -> None:
    """Poll a server's REST model status until ``version`` is AVAILABLE (TF Serving's rule: a
    label may only point at a loaded version)."""
    if not server:
        return
    from serving.client import RestClient
    from serving import ServingError

    deadline = time.monotonic() + timeout
    last = ""
    with RestClient(server, timeout=5, retries=0) as rest:
        while time.monotonic() < deadline:
            try:
                last = rest.model_status(name, version)["model_version_status"][0]["state"]
                if last == "AVAILABLE":
                    return
            except (ServingError, KeyError, IndexError) as exc:
                last = str(exc)
            time.sleep(0.5)
    raise UserError(f"{server}: {name} version {version} not AVAILABLE after {timeout:.0f} s "
                    f"({last}); the label was not moved")


def relabel(config_path: Path, model_base: Path, name: str, labels: dict[str, int],
            history: dict, action: str, server: str | None, base_path: str | None = None) -> None:
    """Write the config in TF Serving's order: load new versions, then move labels."""
    config = load_config(config_path)
    mc = find_entry(config, name)
    base = mc.base_path if mc is not None else (base_path or str(model_base.resolve()))
    old = labels_of(config, name)
    serving_now = set(mc.model_version_policy.specific.versions) if mc is not None else set()
    serve = wanted_versions(labels, history)
    new = serve - serving_now
    if new and old:  # step 1: new versions join the policy, labels stay where they were
        set_entry(config, name, base, serve | set(old.values()), old)
        save_config(config_path, config)
        for v in sorted(new):
            wait_available(server, name, v)
    set_entry(config, name, base, serve, labels)  # step 2: the labels move
    save_config(config_path, config)
    write_history(model_base, history, action, labels)


# -- pipeline ----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="ksuite pipeline",
        description="Validate the data, train, evaluate, gate against the stable version and "
                    "publish as canary. Flags not listed here go to the app's train script.",
        epilog="example: ksuite pipeline mnist_mlp --margin 0.002 --epochs 5",
        allow_abbrev=False)
    p.add_argument("app", choices=tuple(registry()), help="the app to train")
    p.add_argument("--export-dir", default="saved_models",
                   help="model repository: <export-dir>/<model>/<version>/ (default saved_models)")
    p.add_argument("--serving-config", default=None,
                   help="the TF Serving --model_config_file holding the labels "
                        "(default <export-dir>/models.config)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="publish only if the metric is not worse than stable's by more than this "
                        "(default 0: not worse, as TFX's Evaluator in its Keras tutorial)")
    p.add_argument("--class-margin", type=float, default=None,
                   help="also refuse when any class's test recall is below stable's by more "
                        "than this (classifiers; default: off). Per-class, not the worst-class "
                        "minimum, which can hide a class that fell")
    p.add_argument("--run-dir", default=None,
                   help="where the training run and pipeline.json go "
                        "(default runs/pipeline/<app>-<time>)")
    p.add_argument("--base-path-prefix", default=None,
                   help="base_path prefix written for a model new to the config (default: the "
                        "absolute export dir; /models for the container in serving/)")
    p.add_argument("--server", default=None,
                   help="REST address of a running server (e.g. localhost:8501): wait until it "
                        "has loaded a new version before pointing a label at it")
    p.add_argument("--validate-only", action="store_true", help="stop after data validation")
    args, app_flags = p.parse_known_args(argv)
    for flag in ("--export-dir", "--no-export", "--gate-margin", "--run-dir"):
        if any(f == flag or f.startswith(flag + "=") for f in app_flags):
            raise UserError(f"{flag} is set by the pipeline; do not pass it to the app")
    if args.margin < 0:
        raise UserError("--margin must be >= 0")
    if args.class_margin is not None and args.class_margin < 0:
        raise UserError("--class-margin must be >= 0")
    args.app_flags = [f for f in app_flags if f != "--"]
    args.argv = list(argv)
    return args


def _train(app: str, flags: list[str], candidates: Path, run_dir: Path) -> int:
    cmd = [sys.executable, "-m", f"apps.{app}.train", *flags,
           "--export-dir", str(candidates), "--run-dir", str(run_dir)]
    print("train:", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd)


def run_pipeline(args) -> dict:
    from shared.validate import DataValidationError

    app = args.app
    declared = get_app(app)
    if args.class_margin is not None and type(declared).class_names is App.class_names:
        raise UserError(f"--class-margin: {app} is not a classifier (it declares no classes)")
    export_dir = Path(args.export_dir)
    config_path = Path(args.serving_config or export_dir / "models.config")
    run_dir = Path(args.run_dir or f"runs/pipeline/{app}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"app": app, "command": "ksuite pipeline " + " ".join(args.argv),
              "run_dir": str(run_dir), "serving_config": str(config_path), "margin": args.margin,
              "class_margin": args.class_margin}

    def finish(stage: str, **extra) -> dict:
        record.update(stage=stage, **extra)
        atomic_write_json(run_dir / "pipeline.json", record)
        return record

    # 1. Validate the data (with the app's own flag parsing, so --dataset/--env/--limit count).
    app_args = declared.parse([*args.app_flags, "--run-dir", str(run_dir), "--no-export"])
    report = declared.validate_data(app_args)
    print(report.text(), flush=True)
    record["validation"] = report.to_dict()
    if not report.ok:
        finish("validation failed")
        names = ", ".join(c.name for c in report.failed)
        raise DataValidationError(f"data validation failed ({names}); nothing was trained. "
                                  f"Report: {run_dir / 'pipeline.json'}")
    if args.validate_only:
        return finish("validated")

    # 2. Train and evaluate; the app exports its candidate where no server looks.
    candidates = export_dir / CANDIDATES / run_dir.name
    shutil.rmtree(candidates, ignore_errors=True)
    code = _train(app, args.app_flags, candidates, run_dir)
    if code != 0:
        finish("training failed", exit_code=code)
        raise UserError(f"training failed (exit {code}); see {run_dir}")
    exported = [p for p in candidates.glob("*/*") if p.is_dir() and p.name.isdigit()]
    if len(exported) != 1:
        raise UserError(f"expected one exported model under {candidates}, found {len(exported)}")
    candidate = exported[0]
    name = candidate.parent.name
    model_base = export_dir / name
    meta = read_metadata(candidate)
    metrics = meta.get("metrics", {})
    metric, higher = declared.metric, declared.higher_is_better
    record.update(model=name, metric=metric, candidate_metrics=metrics)

    # 3. Gate against the version labelled stable in the serving config.
    try:
        labels = labels_of(load_config(config_path), name)
        stable = labels.get("stable")
        gate = Gate(metric, args.margin, higher_is_better=higher,
                    class_margin=args.class_margin)
        if stable is None:
            verdict = "gate: no stable version in the serving config; publishing"
        else:
            if stable not in versions(model_base):
                raise UserError(f"{config_path}: {name} stable -> version {stable}, which is not "
                                f"under {model_base}")
            verdict = gate.check(model_base, metrics, reference=stable)
        print(verdict, flush=True)
    except GateRefused as exc:
        shutil.rmtree(candidates, ignore_errors=True)
        finish("refused", verdict=str(exc), stable=stable)
        raise
    record["verdict"] = verdict

    # 4. Publish (atomic rename into the next version) and label it canary.
    def move(staging: Path) -> None:
        os.rename(candidate, staging)

    meta["pipeline"] = {"run_dir": str(run_dir), "gate": verdict, "stable_at_gate": stable}
    path = publish(name, move, export_dir, metadata=meta)
    shutil.rmtree(candidates, ignore_errors=True)
    version = int(path.name)
    history = read_history(model_base)
    new_labels = dict(labels, canary=version)
    prefix = args.base_path_prefix
    relabel(config_path, model_base, name, new_labels, history, f"publish {version}", args.server,
            base_path=f"{prefix.rstrip('/')}/{name}" if prefix else None)
    print(f"published {name} version {version} as canary ({path}); stable is "
          f"{'version ' + str(stable) if stable else 'not set'}. "
          f"Make it stable with: ksuite promote {name}", flush=True)
    return finish("published", version=version, labels=new_labels, path=str(path))


# -- promote / rollback ------------------------------------------------------------------------


def _label_args(prog: str, what: str, argv):
    p = argparse.ArgumentParser(prog=prog, description=what, allow_abbrev=False)
    p.add_argument("model", help="model name as exported (e.g. mnist_mlp, dqn_cartpole)")
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--serving-config", default=None,
                   help="TF Serving --model_config_file (default <export-dir>/models.config)")
    p.add_argument("--server", default=None,
                   help="REST address of a running server: wait until it has loaded the version "
                        "before moving the label")
    args = p.parse_args(argv)
    export_dir = Path(args.export_dir)
    config_path = Path(args.serving_config or export_dir / "models.config")
    if not config_path.exists():
        raise UserError(f"serving config not found: {config_path} (run ksuite pipeline first)")
    labels = labels_of(load_config(config_path), args.model)
    if not labels:
        raise UserError(f"{config_path} has no labelled model {args.model!r}")
    return args, config_path, export_dir / args.model, labels


def promote(argv=None) -> dict:
    args, config_path, base, labels = _label_args(
        "ksuite promote", "Label the canary version stable.", argv)
    canary, stable = labels.get("canary"), labels.get("stable")
    if canary is None:
        raise UserError(f"{args.model} has no canary version to promote")
    if canary == stable:
        raise UserError(f"{args.model} version {canary} is already stable")
    history = read_history(base)
    if stable is not None:
        history["previous_stable"].append(stable)
    new = dict(labels, stable=canary)
    relabel(config_path, base, args.model, new, history, f"promote {canary}", args.server)
    print(f"{args.model}: stable -> version {canary}"
          + (f" (was {stable}; `ksuite rollback {args.model}` goes back)" if stable else ""))
    return new


def rollback(argv=None) -> dict:
    args, config_path, base, labels = _label_args(
        "ksuite rollback", "Point stable back at the version that was stable before.", argv)
    history = read_history(base)
    if not history["previous_stable"]:
        raise UserError(f"{args.model}: no earlier stable version to roll back to")
    bad = labels.get("stable")
    previous = history["previous_stable"].pop()
    if previous not in versions(base):
        raise UserError(f"{args.model}: version {previous} is no longer under {base}")
    new = dict(labels, stable=previous)
    if new.get("canary") == bad:  # the rolled-back version keeps no label
        del new["canary"]
    relabel(config_path, base, args.model, new, history, f"rollback {bad} -> {previous}",
            args.server)
    print(f"{args.model}: stable -> version {previous} (rolled back from {bad})")
    return new


@exit_on_user_error
def main(argv=None) -> int:
    run_pipeline(parse_args(sys.argv[1:] if argv is None else argv))
    return 0


@exit_on_user_error
def main_promote(argv=None) -> int:
    promote(argv)
    return 0


@exit_on_user_error
def main_rollback(argv=None) -> int:
    rollback(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
