"""Training-serving skew: compare the inputs a model was asked in production with its training data.

The inputs come from the request log (``serving/request_log.py``: ``PredictionLog`` records in
TFRecord files). Each input is summarised by statistics that fit its kind, and each statistic
becomes a histogram on bins fit to the training data (the reference):

* ``image`` (a batch of ``[H, W]`` or ``[H, W, C]`` arrays, uint8 or float): the histogram of
  pixel intensities (32 equal bins over the reference's value range; uint8 uses 0..255, eight
  values a bin), and per image the mean intensity and the fraction of "ink" (pixels above the
  middle of the range).
* ``text`` (strings): per row the length in tokens and the out-of-vocabulary rate against the
  reference vocabulary, and over all tokens the frequency of the top-K reference tokens plus an
  ``<other>`` bucket. A reference row's OOV rate counts the tokens found in no other reference
  row (leave-one-row-out), so in-domain text scores like the reference and not higher. The
  token histogram's sample size (for the noise floor below) is its number of tokens.
* ``vector`` (numbers, one value or a 1-D vector per row): one histogram per dimension.

Per-row statistics use up to 10 bins at the reference's quantiles (open at both ends, so values
outside the training range land in the end bins). Values beyond a fixed range are clipped into
its end bins.

Two distances per histogram: the Jensen-Shannon distance (square root of the base-2 JS
divergence, in [0, 1]) and the population stability index, PSI = sum (a - e) ln(a / e), computed
on counts plus ``PSEUDO_COUNT`` per bin and proportions floored at ``EPSILON`` so empty bins stay
finite. A feature is flagged when a distance is over its threshold (``DEFAULT_THRESHOLD_JS``,
``DEFAULT_THRESHOLD_PSI``) *and* over its noise floor: the value that sampling alone exceeds with
about 1% probability for these sample sizes (``noise_floor``). Without that guard a log of a few
hundred requests crosses the JS threshold from sampling noise alone (measured: MNIST training
images against 100 other training images give JS distances up to 0.17). The sample size is the
number of rows (images, texts), also for the pixel histogram, whose pixels are not independent.

Command line (the ``ksuite skew`` glue passes a loader of each app's training inputs)::

    ksuite skew mnist_mlp --log /logs/mnist_mlp --out reports/ [--limit 5000]

prints a table, writes ``skew.json`` and ``skew.png`` in ``--out`` and exits 1 when a
threshold is crossed, 0 otherwise, 2 on an error (no log, no records of the model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("image", "text", "vector")

# PSI rule of thumb from credit scoring: < 0.1 no significant shift, 0.1-0.25 moderate shift
# (investigate), > 0.25 significant shift (Siddiqi, "Credit Risk Scorecards", Wiley 2006;
# the same bands in Yurdakul, "Statistical properties of population stability index", 2018).
DEFAULT_THRESHOLD_PSI = 0.25
# JS distance (base 2, in [0, 1]) over 0.2, i.e. a JS divergence over 0.04 bits. For small
# shifts both distances are the same chi-square-like sum to second order: JS divergence (nats)
# ~ PSI / 8, so JS distance ~ sqrt(PSI / (8 ln 2)), and PSI 0.25 corresponds to JS distance 0.21:
# the two defaults agree on "a significant shift". TFDV's JensenShannonDivergence skew/drift
# comparator and Vertex AI's numeric feature monitoring use the divergence with a user-set
# threshold (Vertex's default alert threshold, 0.3, is looser). Measured in tests/test_skew.py:
# MNIST test images against MNIST training images stay under 0.11, Fashion-MNIST gives 0.35-0.6.
DEFAULT_THRESHOLD_JS = 0.2
EPSILON = 1e-4  # floor for empty-bin proportions in PSI
PSEUDO_COUNT = 0.5  # added to every bin's count before PSI in compare() (Jeffreys prior)
NOISE_Z = 2.326  # normal quantile of the noise floor: 1% false alarms per feature

PIXEL_BINS = 32
QUANTILE_BINS = 10
OOV_EDGES = (0.0, 0.02, 0.05, 0.1, 0.25, 0.5)  # per-row OOV rate bins (last one open)
TOP_K_TOKENS = 100
VOCAB_SIZE = None  # the reference vocabulary: every token it contains (or the N most frequent)
MIN_LOGGED_ROWS = 30  # fewer logged rows than this: a warning in the report
MAX_PLOTS = 16

_TOKEN = re.compile(r"\w+(?:'\w+)?")


# -- distances --------------------------------------------------------------------------------


def _proportions(counts) -> np.ndarray:
    p = np.asarray(counts, dtype=np.float64)
    if p.ndim != 1 or (p < 0).any():
        raise ValueError("a histogram is a 1-D array of non-negative counts")
    total = p.sum()
    if total <= 0:
        raise ValueError("empty histogram")
    return p / total


def js_distance(p, q) -> float:
    """Jensen-Shannon distance, base 2 (0 for identical, 1 for disjoint histograms)."""
    p, q = _proportions(p), _proportions(q)
    if p.shape != q.shape:
        raise ValueError(f"histograms of {p.size} and {q.size} bins")
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def psi(expected, actual, epsilon: float = EPSILON, pseudo_count: float = 0.0) -> float:
    """Population stability index of ``actual`` against ``expected`` (reference) counts.

    ``pseudo_count`` is added to every bin's count first; proportions are then floored at
    ``epsilon`` (and renormalised) so an empty bin gives a large but finite term.
    """
    e = np.asarray(expected, dtype=np.float64) + pseudo_count
    a = np.asarray(actual, dtype=np.float64) + pseudo_count
    e, a = _proportions(e), _proportions(a)
    if e.shape != a.shape:
        raise ValueError(f"histograms of {e.size} and {a.size} bins")
    e = np.maximum(e, epsilon)
    a = np.maximum(a, epsilon)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _chi2_quantile(dof: int, z: float) -> float:
    """Wilson-Hilferty approximation of a chi-square quantile (z: the normal quantile)."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * math.sqrt(h)) ** 3


def noise_floor(n_reference: int, n_logged: int, bins: int, z: float = NOISE_Z) -> tuple:
    """(JS distance, PSI) that sampling alone exceeds with probability ~1% (z = 2.326), with
    no shift at all, for two samples of these sizes on ``bins`` occupied bins.

    Both are chi-square statistics to second order: with n = n_ref n_log / (n_ref + n_log),
    n * PSI and 8 n * JS divergence (nats) are about chi-square with bins - 1 degrees of freedom.
    """
    if bins < 2 or n_reference < 1 or n_logged < 1:
        return 0.0, 0.0
    n = n_reference * n_logged / (n_reference + n_logged)
    chi2 = _chi2_quantile(bins - 1, z)
    return math.sqrt(chi2 / (8 * n) / math.log(2)), chi2 / n


# -- binning ----------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass
class _Bins:
    """Counts values: quantile edges (open ends) or a fixed range (clipped)."""

    edges: np.ndarray
    labels: list[str]
    clip: tuple[float, float] | None = None  # fixed equal-width bins over [lo, hi]

    @classmethod
    def quantiles(cls, reference: np.ndarray, n: int = QUANTILE_BINS) -> _Bins:
        ref = np.asarray(reference, dtype=np.float64)
        inner = np.unique(np.quantile(ref, np.linspace(0, 1, n + 1)[1:-1]))
        if inner.size == 0:
            inner = np.array([float(np.median(ref))])
        labels = [f"<{_fmt(inner[0])}"]
        labels += [f"[{_fmt(a)},{_fmt(b)})" for a, b in itertools.pairwise(inner)]
        labels.append(f">={_fmt(inner[-1])}")
        return cls(inner, labels)

    @classmethod
    def fixed(cls, lo: float, hi: float, n: int) -> _Bins:
        edges = np.linspace(lo, hi, n + 1)
        labels = [f"[{_fmt(a)},{_fmt(b)})" for a, b in itertools.pairwise(edges)]
        return cls(edges, labels, clip=(lo, hi))

    @classmethod
    def open_right(cls, edges: Iterable[float]) -> _Bins:
        edges = np.asarray(list(edges), dtype=np.float64)
        labels = [f"[{_fmt(a)},{_fmt(b)})" for a, b in itertools.pairwise(edges)]
        labels.append(f">={_fmt(edges[-1])}")
        return cls(edges[1:], [f"<{_fmt(edges[1])}", *labels[1:]])

    def count(self, values) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if self.clip is not None:
            lo, hi = self.clip
            counts, _ = np.histogram(np.clip(x, lo, hi), bins=self.edges)
            return counts.astype(np.int64)
        idx = np.searchsorted(self.edges, x, side="right")
        return np.bincount(idx, minlength=self.edges.size + 1).astype(np.int64)


# -- report -----------------------------------------------------------------------------------


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


# -- statistics per kind ----------------------------------------------------------------------


def infer_kind(values) -> str:
    """``text`` for strings, ``image`` for rows of 2 or more dimensions, else ``vector``."""
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], (str, bytes)):
        return "text"
    arr = np.asarray(values) if not isinstance(values, list) else _stack(values)
    if arr.dtype.kind in "SUO":
        return "text"
    return "image" if arr.ndim >= 3 else "vector"


def _stack(rows) -> np.ndarray:
    if isinstance(rows, np.ndarray):
        return rows
    rows = [np.asarray(r) for r in rows]
    if not rows:
        return np.zeros((0,))
    return np.stack(rows)


def _texts(values) -> list[str]:
    if isinstance(values, (str, bytes)):
        values = [values]
    out = []
    for row in values:
        items = np.asarray(row, dtype=object).ravel() if not isinstance(row, (str, bytes)) \
            else [row]
        parts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items]
        out.append(" ".join(parts))
    return out


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, inner apostrophes)."""
    return _TOKEN.findall(text.lower())


def _image_features(name, ref, logged):
    ref, logged = _stack(ref), _stack(logged)
    if ref.shape[1:] != logged.shape[1:]:
        if ref[0].size != logged[0].size:
            raise ValueError(f"logged images of shape {logged.shape[1:]}, "
                             f"training images of shape {ref.shape[1:]}")
        logged = logged.reshape((-1, *ref.shape[1:]))
    if ref.dtype == np.uint8:
        lo, hi = 0.0, 256.0  # 32 bins of 8 values each
    elif ref.dtype.kind in "iu":
        lo, hi = float(ref.min()), float(ref.max()) + 1.0
    else:
        lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:
        hi = lo + 1.0
    pixel_bins = _Bins.fixed(lo, hi, PIXEL_BINS)
    mid = lo + (hi - lo) / 2  # "ink": brighter than the middle of the range
    out = [(f"{name}.pixels", pixel_bins, _pixel_counts(ref, pixel_bins),
            _pixel_counts(logged, pixel_bins), (float(ref.mean()), float(logged.mean())))]
    for stat, fn in (("mean_intensity", lambda a: a.reshape(len(a), -1).mean(axis=1)),
                     ("ink_fraction", lambda a: (a.reshape(len(a), -1) > mid).mean(axis=1))):
        r, g = fn(ref), fn(logged)
        bins = _Bins.quantiles(r)
        out.append((f"{name}.{stat}", bins, bins.count(r), bins.count(g),
                    (float(r.mean()), float(g.mean()))))
    return out, len(ref), len(logged)


def _pixel_counts(images: np.ndarray, bins: _Bins) -> np.ndarray:
    if images.dtype == np.uint8 and bins.clip == (0.0, 256.0) and 256 % len(bins.labels) == 0:
        per_value = np.bincount(images.ravel(), minlength=256)
        return per_value.reshape(len(bins.labels), -1).sum(axis=1)
    return bins.count(images)


def _text_features(name, ref, logged, top_k=TOP_K_TOKENS, vocab_size=VOCAB_SIZE):
    ref_tokens = [tokenize(t) for t in _texts(ref)]
    log_tokens = [tokenize(t) for t in _texts(logged)]
    counts = Counter(tok for row in ref_tokens for tok in row)
    rows_with = Counter(tok for row in ref_tokens for tok in set(row))
    vocab = {tok for tok, _ in counts.most_common(vocab_size)}

    def oov_rates(rows, held_out):
        rates = []
        for row in rows:
            if not row:
                rates.append(0.0)
                continue
            miss = sum(1 for t in row if t not in vocab or (held_out and rows_with[t] == 1))
            rates.append(miss / len(row))
        return np.asarray(rates)

    ref_len = np.asarray([len(r) for r in ref_tokens], dtype=np.float64)
    log_len = np.asarray([len(r) for r in log_tokens], dtype=np.float64)
    len_bins = _Bins.quantiles(ref_len)
    ref_oov, log_oov = oov_rates(ref_tokens, True), oov_rates(log_tokens, False)
    oov_bins = _Bins.open_right(OOV_EDGES)
    top = [tok for tok, _ in counts.most_common(top_k)]
    index = {tok: i for i, tok in enumerate(top)}

    def token_counts(rows):
        c = np.zeros(len(top) + 1, dtype=np.int64)
        for row in rows:
            for t in row:
                c[index.get(t, len(top))] += 1
        return c

    ref_tok, log_tok = token_counts(ref_tokens), token_counts(log_tokens)
    coverage = (float(ref_tok[:-1].sum() / max(1, ref_tok.sum())),
                float(log_tok[:-1].sum() / max(1, log_tok.sum())))
    out = [(f"{name}.length", len_bins, len_bins.count(ref_len), len_bins.count(log_len),
            (float(ref_len.mean()), float(log_len.mean()))),
           (f"{name}.oov_rate", oov_bins, oov_bins.count(ref_oov), oov_bins.count(log_oov),
            (_rate(ref_tokens, ref_oov), _rate(log_tokens, log_oov))),
           (f"{name}.tokens", _Bins(np.zeros(0), [*top, "<other>"]), ref_tok, log_tok,
            coverage, (int(ref_tok.sum()), int(log_tok.sum())))]
    return out, len(ref_tokens), len(log_tokens)


def _rate(rows, rates) -> float:
    """Token-level OOV rate from per-row rates (weighted by row length)."""
    lengths = np.asarray([len(r) for r in rows], dtype=np.float64)
    return float((rates * lengths).sum() / max(1.0, lengths.sum()))


def _vector_features(name, ref, logged):
    ref = _stack(ref).astype(np.float64)
    logged = _stack(logged).astype(np.float64)
    ref, logged = ref.reshape(len(ref), -1), logged.reshape(len(logged), -1)
    if ref.shape[1] != logged.shape[1]:
        raise ValueError(f"logged rows of {logged.shape[1]} values, training rows of "
                         f"{ref.shape[1]}")
    out = []
    for d in range(ref.shape[1]):
        bins = _Bins.quantiles(ref[:, d])
        feature = name if ref.shape[1] == 1 else f"{name}[{d}]"
        out.append((feature, bins, bins.count(ref[:, d]), bins.count(logged[:, d]),
                    (float(ref[:, d].mean()), float(logged[:, d].mean()))))
    return out, len(ref), len(logged)


_FEATURES = {"image": _image_features, "text": _text_features, "vector": _vector_features}
_SUMMARY_NAMES = {"pixels": "mean pixel", "mean_intensity": "mean", "ink_fraction": "mean",
                  "length": "mean tokens", "oov_rate": "OOV rate",
                  "tokens": "top-K coverage"}


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


# -- the request log --------------------------------------------------------------------------


def _rows(array: np.ndarray) -> list[np.ndarray]:
    return [array] if array.ndim == 0 else list(array)


def _example_rows(examples, context=None) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for example in examples:
        features = dict(context.features.feature) if context is not None else {}
        features.update(example.features.feature)
        for name, feat in features.items():
            kind = feat.WhichOneof("kind")
            if kind == "bytes_list":
                value = np.asarray(list(feat.bytes_list.value), dtype=object)
            elif kind == "float_list":
                value = np.asarray(feat.float_list.value, dtype=np.float32)
            elif kind == "int64_list":
                value = np.asarray(feat.int64_list.value, dtype=np.int64)
            else:
                continue
            out.setdefault(name, []).append(value)
    return out


def _record_inputs(record) -> dict[str, list[np.ndarray]]:
    kind = record.WhichOneof("log_type")
    if kind in ("predict_log", "predict_streamed_log"):
        from tensorflow import make_ndarray

        return {name: _rows(make_ndarray(t))
                for name, t in getattr(record, kind).request.inputs.items()}
    if kind in ("classify_log", "regress_log", "multi_inference_log"):
        source = getattr(record, kind).request.input
        which = source.WhichOneof("kind")
        if which == "example_list":
            return _example_rows(source.example_list.examples)
        if which == "example_list_with_context":
            ctx = source.example_list_with_context
            return _example_rows(ctx.examples, ctx.context)
    return {}


def logged_inputs(log_dir: str | os.PathLike, model_name: str,
                  limit: int | None = None) -> dict[str, list[np.ndarray]]:
    """The rows each input of ``model_name`` received, from the request log under ``log_dir``
    (oldest first; with ``limit``, only the newest ``limit`` rows of each input)."""
    from serving.request_log import read_prediction_logs

    rows: dict[str, deque] = {}
    for record in read_prediction_logs(log_dir):
        if record.log_metadata.model_spec.name != model_name:
            continue
        for name, values in _record_inputs(record).items():
            rows.setdefault(name, deque(maxlen=limit)).extend(values)
    return {name: list(values) for name, values in rows.items()}


# -- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ksuite skew",
        description="Compare the inputs a served model received (its request log) with its "
                    "training inputs. Exit status: 0 no skew, 1 a threshold crossed, 2 error.")
    p.add_argument("model", help="model name, as in the request log's model_spec")
    p.add_argument("--log", required=True, metavar="DIR",
                   help="request-log folder (or filename_prefix) of PredictionLog TFRecords")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="where to write skew.json and skew.png (default: .)")
    p.add_argument("--threshold-js", type=float, default=DEFAULT_THRESHOLD_JS, metavar="X",
                   help=f"Jensen-Shannon distance, base 2 (default {DEFAULT_THRESHOLD_JS})")
    p.add_argument("--threshold-psi", type=float, default=DEFAULT_THRESHOLD_PSI, metavar="Y",
                   help=f"population stability index (default {DEFAULT_THRESHOLD_PSI})")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the newest N logged rows of each input")
    p.add_argument("--kind", action="append", default=[], metavar="INPUT=KIND",
                   help=f"override an input's inferred kind ({', '.join(KINDS)}); repeatable")
    p.add_argument("--reference", metavar="NPZ",
                   help="training inputs from an .npz (one array per input name) instead of "
                        "the model's own loader")
    return p


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None,
         reference_loader: Callable[[str], Mapping[str, np.ndarray | list]] | None = None) -> int:
    """``ksuite skew``: returns the exit status (0 no skew, 1 skew, 2 error)."""
    args = build_parser().parse_args(argv)
    kinds = {}
    for item in args.kind:
        name, sep, kind = item.partition("=")
        if not sep or kind not in KINDS:
            return _error(f"--kind wants INPUT=KIND with KIND one of {', '.join(KINDS)}: {item}")
        kinds[name] = kind
    if args.limit is not None and args.limit <= 0:
        return _error("--limit must be positive")
    from serving.request_log import log_files

    try:
        files = log_files(args.log)
    except FileNotFoundError:
        return _error(f"request log not found: {args.log}")
    if not files:
        return _error(f"no request-log files (*.tfrecord) under {args.log}")
    try:
        logged = logged_inputs(args.log, args.model, args.limit)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line, not a trace
        return _error(f"cannot read the request log {args.log}: {type(e).__name__}: {e}")
    if not logged:
        return _error(f"no request-log records of model '{args.model}' in {args.log} "
                      f"({len(files)} file(s))")
    try:
        if args.reference:
            with np.load(args.reference, allow_pickle=False) as npz:
                reference = {k: npz[k] for k in npz.files}
        elif reference_loader is not None:
            reference = reference_loader(args.model)
        else:
            return _error("no training data: pass --reference NPZ")
    except Exception as e:
        # A loader's own user-facing error (anything with an ``exit_code``, like
        # shared.errors.UserError) or a missing file or key: one line. Anything else is a bug.
        if not isinstance(e, (LookupError, OSError, ValueError)) and not hasattr(e, "exit_code"):
            raise
        return _error(f"cannot load the training inputs of '{args.model}': {e}")
    report = compare(reference, logged, kinds, args.threshold_js, args.threshold_psi,
                     model=args.model)
    if not report.features:
        return _error(f"no input of '{args.model}' both logged ({', '.join(sorted(logged))}) "
                      f"and in the training data ({', '.join(sorted(reference))}); "
                      + "; ".join(f"{k}: {v}" for k, v in report.skipped.items()))
    print(report.table())
    for name, why in report.skipped.items():
        print(f"skipped {name}: {why}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    out = Path(args.out)
    print(f"wrote {report.to_json(out / 'skew.json')} and {report.plot(out / 'skew.png')}")
    flagged = [f.feature for f in report.features if f.exceeded]
    if flagged:
        print(f"SKEW: {len(flagged)} feature(s) over the thresholds (JS {args.threshold_js}, "
              f"PSI {args.threshold_psi}): {', '.join(flagged)}")
        return 1
    print(f"no skew: every feature under JS {args.threshold_js} and PSI {args.threshold_psi}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
