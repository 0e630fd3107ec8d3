"""The skew report: FeatureSkew (one statistic), SkewReport (table, JSON, plot), atomic writes."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.skew.stats import (
    DEFAULT_THRESHOLD_JS,
    DEFAULT_THRESHOLD_PSI,
    MAX_PLOTS,
    _proportions,
)


@dataclass
class FeatureSkew:
    """One statistic of one input: both histograms and their distances."""

    feature: str
    input: str
    kind: str
    labels: list[str]
    reference: np.ndarray  # counts per bin
    logged: np.ndarray
    n_reference: int  # rows (images, texts, vectors) behind each histogram
    n_logged: int
    js: float
    psi: float
    exceeded: bool
    summary: dict = field(default_factory=dict)  # e.g. reference/logged means of the statistic
    js_noise: float = 0.0  # what sampling alone exceeds with ~1% probability (noise_floor)
    psi_noise: float = 0.0

    def to_dict(self) -> dict:
        return {"feature": self.feature, "input": self.input, "kind": self.kind,
                "js": self.js, "psi": self.psi, "exceeded": self.exceeded,
                "js_noise": self.js_noise, "psi_noise": self.psi_noise,
                "n_reference": self.n_reference, "n_logged": self.n_logged,
                "summary": self.summary, "bins": self.labels,
                "reference": _proportions(self.reference).round(6).tolist(),
                "logged": _proportions(self.logged).round(6).tolist(),
                "reference_counts": self.reference.tolist(),
                "logged_counts": self.logged.tolist()}


@dataclass
class SkewReport:
    """The comparison of every input both logged and in the reference."""

    features: list[FeatureSkew]
    threshold_js: float = DEFAULT_THRESHOLD_JS
    threshold_psi: float = DEFAULT_THRESHOLD_PSI
    model: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # input -> why it was not compared
    warnings: list[str] = field(default_factory=list)

    @property
    def exceeded(self) -> bool:
        return any(f.exceeded for f in self.features)

    def to_frame(self):
        import pandas as pd

        rows = [{"feature": f.feature, "kind": f.kind, "n_ref": f.n_reference,
                 "n_logged": f.n_logged, "js": f.js, "js_noise": f.js_noise, "psi": f.psi,
                 "psi_noise": f.psi_noise,
                 "reference": f.summary.get("reference"), "logged": f.summary.get("logged"),
                 "skew": "SKEW" if f.exceeded else ""} for f in self.features]
        return pd.DataFrame(rows, columns=["feature", "kind", "n_ref", "n_logged", "js",
                                           "js_noise", "psi", "psi_noise", "reference",
                                           "logged", "skew"])

    def table(self) -> str:
        frame = self.to_frame()
        if frame.empty:
            return "(no features compared)"
        return frame.to_string(index=False, float_format=lambda x: f"{x:.4f}")

    def to_dict(self) -> dict:
        return {"model": self.model, "exceeded": self.exceeded,
                "thresholds": {"js": self.threshold_js, "psi": self.threshold_psi},
                "kinds": self.kinds, "skipped": self.skipped, "warnings": self.warnings,
                "features": [f.to_dict() for f in self.features]}

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically: a temporary file, then os.replace)."""
        text = json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n"
        return _atomic_write(Path(path), lambda f: f.write(text.encode()))

    def plot(self, path: str | os.PathLike, max_features: int = MAX_PLOTS) -> Path:
        """Reference against logged histograms, one panel per feature, worst first."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        shown = sorted(self.features, key=lambda f: (not f.exceeded, -f.js))[:max_features]
        ncols = 2 if len(shown) > 1 else 1
        nrows = max(1, math.ceil(len(shown) / ncols))
        fig = Figure(figsize=(6.5 * ncols, 2.8 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, f in zip(axes, shown):
            x = np.arange(len(f.labels))
            ax.bar(x - 0.2, _proportions(f.reference), width=0.4, label="training")
            ax.bar(x + 0.2, _proportions(f.logged), width=0.4, label="logged")
            flag = "  SKEW" if f.exceeded else ""
            ax.set_title(f"{f.feature}: JS {f.js:.3f}, PSI {f.psi:.3f}{flag}", fontsize=9,
                         color="crimson" if f.exceeded else "black")
            step = max(1, math.ceil(len(f.labels) / 12))
            ax.set_xticks(x[::step], f.labels[::step], rotation=45, ha="right", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.legend(fontsize=7)
        for ax in axes[len(shown):]:
            ax.set_axis_off()
        title = f"training-serving skew{' of ' + self.model if self.model else ''}"
        fig.suptitle(f"{title} (thresholds JS {self.threshold_js}, PSI {self.threshold_psi})")
        path = Path(path)
        return _atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:] or "png",
                                                         dpi=90))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _atomic_write(path: Path, write: Callable) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
