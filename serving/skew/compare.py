"""compare(): every input both logged and in the training data, statistic by statistic."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serving.skew.report import FeatureSkew, SkewReport
from serving.skew.stats import (
    _FEATURES,
    _SUMMARY_NAMES,
    DEFAULT_THRESHOLD_JS,
    DEFAULT_THRESHOLD_PSI,
    KINDS,
    MIN_LOGGED_ROWS,
    PSEUDO_COUNT,
    infer_kind,
    js_distance,
    noise_floor,
    psi,
)


def compare(reference: Mapping[str, np.ndarray | list], logged: Mapping[str, np.ndarray | list],
            kinds: Mapping[str, str] | None = None,
            threshold_js: float = DEFAULT_THRESHOLD_JS,
            threshold_psi: float = DEFAULT_THRESHOLD_PSI, model: str | None = None) -> SkewReport:
    """Compare every input present in both ``reference`` (training inputs, one row per example)
    and ``logged`` (rows as returned by ``logged_inputs``). ``kinds`` overrides the inferred
    kind of an input (``image``, ``text`` or ``vector``)."""
    kinds = dict(kinds or {})
    report = SkewReport([], threshold_js, threshold_psi, model)
    for name in sorted(set(reference) | set(logged)):
        if name not in logged:
            report.skipped[name] = "not in the request log"
            continue
        if name not in reference:
            report.skipped[name] = "no training data for this input"
            continue
        ref, got = reference[name], logged[name]
        if len(ref) == 0 or len(got) == 0:
            report.skipped[name] = "no rows"
            continue
        kind = kinds.get(name) or infer_kind(ref)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} for input {name!r} (one of {KINDS})")
        report.kinds[name] = kind
        try:
            stats, n_ref, n_log = _FEATURES[kind](name, ref, got)
        except ValueError as e:
            report.skipped[name] = str(e)
            continue
        if n_log < MIN_LOGGED_ROWS:
            report.warnings.append(f"{name}: only {n_log} logged rows; distances are noisy")
        for feature, bins, r, g, (r_sum, g_sum), *sizes in stats:
            if r.sum() == 0 or g.sum() == 0:
                report.warnings.append(f"{feature}: nothing to count")
                continue
            js, p = js_distance(r, g), psi(r, g, pseudo_count=PSEUDO_COUNT)
            n_r, n_g = sizes[0] if sizes else (n_ref, n_log)
            js_noise, psi_noise = noise_floor(n_r, n_g, int(np.count_nonzero(r + g)))
            exceeded = (js > threshold_js and js > js_noise) or (p > threshold_psi
                                                                  and p > psi_noise)
            stat = feature.rsplit(".", 1)[-1] if kind != "vector" else "mean"
            summary = {"statistic": _SUMMARY_NAMES.get(stat, stat),
                       "reference": round(r_sum, 6), "logged": round(g_sum, 6)}
            report.features.append(FeatureSkew(
                feature, name, kind, list(bins.labels), np.asarray(r), np.asarray(g), n_ref,
                n_log, js, p, bool(exceeded), summary, js_noise, psi_noise))
    return report
