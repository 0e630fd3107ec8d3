"""Data validation, the first stage of ``ksuite pipeline``: look at the data an app is about to
train on and stop, with a clear report, when it is not what the app expects.

Each app's check loads its data exactly as its train script would (same flags) and runs three
kinds of checks, the ones TFX's ExampleValidator makes against a schema:

- **schema**: shapes, dtypes, split sizes, that train and test agree;
- **value ranges**: pixels in 0..255 and not blank, labels in 0..K-1, finite rewards, text that is
  non-empty UTF-8, characters and words of the held-out text mostly in the training vocabulary;
- **label balance**: every class present, and the rarest class at least ``min_balance`` times as
  frequent as the commonest (default 0.5: a 2:1 skew. MNIST's is 0.80, CIFAR-10's and IMDB's 1.0;
  a corrupted or truncated file usually drops whole classes, far below that).

    ksuite pipeline mnist_mlp --validate-only
    ksuite pipeline dqn --validate-only -- --env ALE/Pong-v5
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from shared.errors import UserError

MIN_BALANCE = 0.5  # rarest/commonest class count; see the module docstring


class DataValidationError(UserError):
    """The data failed validation: the pipeline stops before training."""

    exit_code = 4


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    app: str
    data: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def text(self) -> str:
        lines = [f"data validation: {self.app} on {self.data}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        lines.append(f"  {len(self.checks) - len(self.failed)}/{len(self.checks)} checks passed")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"app": self.app, "data": self.data, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


# -- generic checks ----------------------------------------------------------------------------


def check_images(report: Report, split: str, x: np.ndarray, shape: tuple[int, ...],
                 min_count: int = 1) -> None:
    """uint8 images of the given per-image ``shape``, in 0..255 and not blank."""
    report.add(f"{split} images: schema", x.dtype == np.uint8 and tuple(x.shape[1:]) == shape,
               f"dtype {x.dtype}, shape {tuple(x.shape)} (expected uint8 [N, "
               f"{', '.join(map(str, shape))}])")
    report.add(f"{split} images: count", len(x) >= min_count, f"{len(x)} (need >= {min_count})")
    if len(x) == 0:
        return
    lo, hi = int(x.min()), int(x.max())
    per_image_max = x.reshape(len(x), -1).max(axis=1)
    blank = float(np.mean(per_image_max == 0))
    report.add(f"{split} images: value range", 0 <= lo and hi <= 255 and hi > lo and blank < 0.01,
               f"pixels {lo}..{hi}, {blank:.2%} blank images (need a non-constant 0..255 range, "
               "< 1% blank)")


def check_labels(report: Report, split: str, y: np.ndarray, num_classes: int,
                 min_balance: float = MIN_BALANCE, n: int | None = None) -> None:
    """Integer labels in 0..K-1, one per example, every class present, balance >= min_balance."""
    y = np.asarray(y).reshape(-1)
    if n is not None:
        report.add(f"{split} labels: schema", len(y) == n, f"{len(y)} labels for {n} examples")
    if not np.issubdtype(y.dtype, np.integer):
        report.add(f"{split} labels: value range", False, f"dtype {y.dtype} is not an integer type")
        return
    if len(y) == 0:
        report.add(f"{split} labels: value range", False, "no labels")
        return
    lo, hi = int(y.min()), int(y.max())
    report.add(f"{split} labels: value range", 0 <= lo and hi < num_classes,
               f"labels {lo}..{hi} (expected 0..{num_classes - 1})")
    counts = np.bincount(np.clip(y, 0, num_classes - 1), minlength=num_classes)[:num_classes]
    missing = [int(c) for c in np.flatnonzero(counts == 0)]
    balance = float(counts.min() / counts.max()) if counts.max() else 0.0
    report.add(f"{split} labels: balance", not missing and balance >= min_balance,
               f"per-class counts {counts.min()}..{counts.max()}, rarest/commonest {balance:.2f} "
               f"(need >= {min_balance})" + (f"; classes missing: {missing}" if missing else ""))


def check_texts(report: Report, split: str, texts: np.ndarray, min_count: int = 1) -> None:
    """Raw reviews: UTF-8, mostly non-empty."""
    report.add(f"{split} texts: count", len(texts) >= min_count,
               f"{len(texts)} (need >= {min_count})")
    if len(texts) == 0:
        return
    bad_utf8 = 0
    lengths = np.empty(len(texts), np.int64)
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError:
                bad_utf8 += 1
                t = t.decode("utf-8", "replace")
        lengths[i] = len(str(t).split())
    empty = float(np.mean(lengths == 0))
    report.add(f"{split} texts: value range", bad_utf8 == 0 and empty < 0.01,
               f"{bad_utf8} not UTF-8, {empty:.2%} empty, median {int(np.median(lengths))} words "
               "(need valid UTF-8 and < 1% empty)")


# -- the checks an image app makes ------------------------------------------------------------


def check_image_app(report: Report, train, test, shape, num_classes, min_train=20) -> Report:
    """Images and labels of both splits: schema, value ranges, label balance."""
    (x_train, y_train), (x_test, y_test) = train, test
    check_images(report, "train", x_train, shape, min_train)
    check_labels(report, "train", y_train, num_classes, n=len(x_train))
    check_images(report, "test", x_test, shape)
    check_labels(report, "test", y_test, num_classes, n=len(x_test))
    return report
