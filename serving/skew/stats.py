"""Skew statistics: the constants, the two distances and their noise floor, the bins, and the
statistics of each input kind (image, text, vector)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

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
