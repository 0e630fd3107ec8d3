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

from serving.skew.cli import build_parser, main
from serving.skew.compare import compare
from serving.skew.logs import logged_inputs
from serving.skew.report import FeatureSkew, SkewReport
from serving.skew.stats import (
    DEFAULT_THRESHOLD_JS,
    DEFAULT_THRESHOLD_PSI,
    EPSILON,
    KINDS,
    MAX_PLOTS,
    MIN_LOGGED_ROWS,
    NOISE_Z,
    OOV_EDGES,
    PIXEL_BINS,
    PSEUDO_COUNT,
    QUANTILE_BINS,
    TOP_K_TOKENS,
    VOCAB_SIZE,
    _chi2_quantile,
    infer_kind,
    js_distance,
    noise_floor,
    psi,
    tokenize,
)

__all__ = [
    "DEFAULT_THRESHOLD_JS",
    "DEFAULT_THRESHOLD_PSI",
    "EPSILON",
    "KINDS",
    "MAX_PLOTS",
    "MIN_LOGGED_ROWS",
    "NOISE_Z",
    "OOV_EDGES",
    "PIXEL_BINS",
    "PSEUDO_COUNT",
    "QUANTILE_BINS",
    "TOP_K_TOKENS",
    "VOCAB_SIZE",
    "FeatureSkew",
    "SkewReport",
    "_chi2_quantile",
    "build_parser",
    "compare",
    "infer_kind",
    "js_distance",
    "logged_inputs",
    "main",
    "noise_floor",
    "psi",
    "tokenize",
]
