"""Versioned, atomic SavedModel export: ``<export_dir>/<name>/<integer version>/``.

TensorFlow Serving (and ``serving/``'s local server) poll ``<export_dir>/<name>/`` for integer
folders. A version folder must never be seen half-written, so the SavedModel is written into a
staging folder ``<export_dir>/.staging/`` on the same file system and then renamed into place in
one ``os.rename``. The next version number is the largest existing one plus one (zero-padded
folder names such as ``00000007`` count as 7).

Each version carries ``assets.extra/ksuite.json`` (TensorFlow Serving ignores everything in
``assets.extra`` except its warm-up file): the metrics it was published with, so that a
validation gate can refuse a new version whose metric is worse than the previous one's by more
than a margin.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shared.errors import UserError

METADATA_FILE = "assets.extra/ksuite.json"


class GateRefused(UserError):
    """The candidate's metric is worse than the published one by more than the margin."""

    exit_code = 3


def versions(model_base: str | Path) -> dict[int, Path]:
    """Integer version -> folder, for the version folders under a model's base path."""
    base = Path(model_base)
    out: dict[int, Path] = {}
    if base.is_dir():
        for child in base.iterdir():
            if child.is_dir() and child.name.isdigit():
                out[int(child.name)] = child
    return out


def latest_version(model_base: str | Path) -> int | None:
    v = versions(model_base)
    return max(v) if v else None


def read_metadata(version_dir: str | Path) -> dict:
    path = Path(version_dir) / METADATA_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Gate:
    """Refuse to publish when ``metric`` is worse than the reference version's by > ``margin``;
    with ``class_margin`` (a classifier's option; ``None``: off), also when any class's test
    recall (``per_class`` in the metrics, shared/evaluation.py) dropped by more than it.

    Per-class recall rather than the worst-class minimum: the minimum can hide a regression
    (the old worst class improves while another class falls to just above it), and a class's
    recall is measured on that class's own examples only -- the subpopulation the check is
    about -- whereas its precision moves with the other classes' errors. The refusal names the
    class with the largest drop; classes either version did not measure are not compared."""

    metric: str
    margin: float = 0.0
    higher_is_better: bool = True
    class_margin: float | None = None

    def check(self, model_base: str | Path, metrics: dict, reference: int | None = None) -> str:
        """Return a one-line verdict, or raise GateRefused. ``reference`` defaults to the latest
        published version; a model with no previous version always passes."""
        v = versions(model_base)
        if reference is None:
            reference = max(v) if v else None
        if reference is None:
            return "gate: no published version to compare with; publishing"
        if reference not in v:
            raise UserError(f"gate: reference version {reference} not found under {model_base}")
        previous = read_metadata(v[reference]).get("metrics", {})
        if self.metric not in metrics:
            raise UserError(f"gate: candidate has no metric {self.metric!r}")
        if self.metric not in previous:
            return f"gate: version {reference} recorded no {self.metric}; publishing"
        new, old = float(metrics[self.metric]), float(previous[self.metric])
        worse_by = (old - new) if self.higher_is_better else (new - old)
        verdict = (f"{self.metric}: candidate {new:.5f} vs version {reference} {old:.5f} "
                   f"(margin {self.margin})")
        if worse_by > self.margin + 1e-9:  # tolerance for float round-off at the boundary
            raise GateRefused(f"gate refused the new version: {verdict}")
        if self.class_margin is not None:
            verdict += "; " + self.check_classes(metrics, previous, reference)
        return f"gate passed: {verdict}"

    def check_classes(self, metrics: dict, previous: dict, reference) -> str:
        """The per-class recall check: a verdict fragment, or raise GateRefused naming the class
        whose recall dropped most."""
        from shared.evaluation import recall_drops

        if "per_class" not in metrics:
            raise UserError("gate: --class-margin needs per-class metrics, and the candidate "
                            "has none (not a classifier?)")
        if "per_class" not in previous:
            return f"version {reference} recorded no per-class metrics"
        drops = recall_drops(metrics["per_class"], previous["per_class"])
        if not drops:
            return f"no class measured by both the candidate and version {reference}"
        name, new, old = drops[0]
        line = (f"class {name!r} recall: candidate {new:.5f} vs version {reference} {old:.5f} "
                f"(class margin {self.class_margin})")
        if old - new > self.class_margin + 1e-9:
            raise GateRefused(f"gate refused the new version: {line}")
        return f"largest per-class recall drop: {line}"


def publish(
    name: str,
    write: Callable[[Path], None],
    export_dir: str | Path = "saved_models",
    *,
    version: int | None = None,
    metadata: dict | None = None,
    gate: Gate | None = None,
) -> Path:
    """Write a SavedModel with ``write(staging_path)`` and rename it into
    ``<export_dir>/<name>/<version>``. Returns the final folder."""
    from shared.runs import library_versions

    if not name or "/" in name or name.startswith("."):
        raise UserError(f"invalid model name {name!r}")
    export_dir = Path(export_dir)
    base = export_dir / name
    metadata = dict(metadata or {})
    if gate is not None:
        print(gate.check(base, metadata.get("metrics", {})))
    staging_root = export_dir / ".staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    staging = staging_root / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        if not (staging / "saved_model.pb").exists():
            raise RuntimeError(f"writer produced no saved_model.pb in {staging}")
        for _ in range(100):  # another exporter may take the same number: try the next one
            v = version if version is not None else (latest_version(base) or 0) + 1
            metadata.update(
                name=name,
                version=v,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                libraries=library_versions(),
            )
            meta_path = staging / METADATA_FILE
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
            target = base / str(v)
            if target.exists():
                if version is not None:
                    raise UserError(f"{target} already exists; versions are never overwritten")
                continue
            try:
                os.rename(staging, target)
                return target
            except OSError:
                if version is not None or not target.exists():
                    raise
        raise RuntimeError(f"could not find a free version number under {base}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging_root.rmdir()  # only when empty
        except OSError:
            pass


def export_keras(
    name: str,
    endpoints: dict[str, tuple[Callable, list]],
    track: list,
    export_dir: str | Path = "saved_models",
    **kwargs,
) -> Path:
    """Export with Keras' own ``ExportArchive``: ``track`` the models/layers whose variables and
    resources the endpoints use, add each endpoint ``name -> (tf.function-able fn,
    input_signature)``. An endpoint called ``serving_default`` is what TensorFlow Serving calls
    when a request names no signature."""
    import keras

    from shared.precision import float32_outputs

    def write(path: Path) -> None:
        archive = keras.export.ExportArchive()
        for resource in track:
            archive.track(resource)
        for ep_name, (fn, signature) in endpoints.items():
            # A model trained under a mixed --precision policy serves the same float32
            # signature as under float32 (shared/precision.py).
            archive.add_endpoint(ep_name, float32_outputs(fn), input_signature=signature)
        archive.write_out(str(path), verbose=False)

    return publish(name, write, export_dir, **kwargs)
