"""Per-class evaluation of a classifier: confusion matrix, per-class precision / recall / F1.

Every classifier of the suite reaches this module through the app contract (``App.class_names``
and ``App.test_predictions``, shared/app.py); the runner calls :func:`per_class_report` once on the
test set, adds :meth:`PerClass.metrics` to the run's metrics (so they reach ``metrics.json`` and
the export's ``assets.extra/ksuite.json``, where the promotion gate reads them) and, on the chief,
writes ``confusion_matrix.csv`` and ``confusion_matrix.png`` into the run directory.

Conventions (scikit-learn's): rows of the confusion matrix are the true classes, columns the
predicted ones. Precision of a class that is never predicted is 0. A class with no test examples
(possible with ``--limit``/``--test-limit``) has no recall or F1 (``None``) and is left out of
the macro averages and of the worst class, whose figure would otherwise be meaningless.

The worst class is the one with the lowest recall: recall is a property of the class's own
examples (the subpopulation the course asks about: "how does the model do on cats?"), whereas a
class's precision also depends on how the other classes' examples are misclassified.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.io import atomic_write_text

CSV_FILE = "confusion_matrix.csv"
PNG_FILE = "confusion_matrix.png"


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` int64 counts: ``cm[i, j]`` = examples of class i predicted
    as j."""
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} labels but {y_pred.size} predictions")
    for what, y in (("label", y_true), ("prediction", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{what} out of range 0..{num_classes - 1}: "
                             f"{y[(y < 0) | (y >= num_classes)][0]}")
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(a: float, b: float):
    return float(a) / float(b) if b else None


@dataclass
class PerClass:
    """Per-class figures of one confusion matrix (``cm``, rows true, columns predicted)."""

    names: list[str]
    cm: np.ndarray

    @classmethod
    def from_predictions(cls, y_true, y_pred, names) -> PerClass:
        names = [str(n) for n in names]
        return cls(names, confusion_matrix(y_true, y_pred, len(names)))

    @property
    def support(self) -> np.ndarray:
        return self.cm.sum(axis=1)

    def table(self) -> dict[str, dict]:
        """``{class name: {precision, recall, f1, support}}``."""
        tp = np.diag(self.cm)
        predicted = self.cm.sum(axis=0)
        out = {}
        for k, name in enumerate(self.names):
            support = int(self.support[k])
            precision = _div(tp[k], predicted[k]) or 0.0
            recall = _div(tp[k], support)
            f1 = (None if recall is None else
                  (2 * precision * recall / (precision + recall) if precision + recall else 0.0))
            out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        return out

    def metrics(self) -> dict:
        """What the runner adds to the run's metrics: ``per_class`` (the table), the macro
        averages over the classes with test examples, the worst class by recall
        (``worst_class``, ``worst_class_recall``) and the lowest per-class F1
        (``worst_class_f1``, of class ``worst_f1_class``)."""
        table = self.table()
        seen = {n: row for n, row in table.items() if row["support"] > 0}
        out: dict = {"per_class": table}
        if not seen:
            return out
        for key in ("precision", "recall", "f1"):
            out[f"macro_{key}"] = float(np.mean([row[key] for row in seen.values()]))
        worst = min(seen, key=lambda n: (seen[n]["recall"], seen[n]["f1"]))
        worst_f1 = min(seen, key=lambda n: seen[n]["f1"])
        out.update(worst_class=worst, worst_class_recall=seen[worst]["recall"],
                   worst_f1_class=worst_f1, worst_class_f1=seen[worst_f1]["f1"])
        return out

    # -- files ----------------------------------------------------------------------------------
    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["true \\ predicted", *self.names])
        for name, row in zip(self.names, self.cm):
            w.writerow([name, *(int(v) for v in row)])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.csv_text())

    def write_png(self, path: str | Path, title: str = "") -> Path:
        """Counts in the cells, colours normalised per row (each true class's recall profile, so
        a small class's errors are as visible as a large one's)."""
        from shared.plots import plt, save_figure

        k = len(self.names)
        rows = self.cm.sum(axis=1, keepdims=True)
        normed = np.divide(self.cm, rows, out=np.zeros(self.cm.shape, dtype=float),
                           where=rows > 0)
        size = max(3.5, 0.55 * k + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(normed, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        ax.set_xticks(range(k), self.names, rotation=45 if k > 2 else 0, ha="right"
                      if k > 2 else "center", fontsize=8)
        ax.set_yticks(range(k), self.names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 30:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(int(self.cm[i, j])), ha="center", va="center",
                            fontsize=7 if k > 10 else 9,
                            color="white" if normed[i, j] > 0.5 else "black")
        return save_figure(fig, path, title or "confusion matrix (test set)")

    def write(self, run_dir: str | Path, title: str = "") -> tuple[Path, Path]:
        run_dir = Path(run_dir)
        return self.write_csv(run_dir / CSV_FILE), self.write_png(run_dir / PNG_FILE, title)


def per_class_report(y_true, y_pred, names) -> PerClass:
    """The per-class evaluation of predictions ``y_pred`` (class ids) against ``y_true``."""
    return PerClass.from_predictions(y_true, y_pred, names)


def predicted_classes(outputs) -> np.ndarray:
    """Class ids from a classifier's outputs: argmax of ``[n, k]`` scores, or ``p >= 0.5`` for a
    single sigmoid unit (``[n]`` or ``[n, 1]``)."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(len(outputs)) >= 0.5).astype(np.int64)
    return outputs.argmax(axis=-1).astype(np.int64)


def dataset_outputs(forward, dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, outputs)`` of a finite dataset of ``(x, y)`` batches, in one pass: each batch
    goes through ``forward`` (a function of a batch) beside its labels."""
    labels, outputs = [], []
    for x, y in dataset:
        labels.append(np.asarray(y).reshape(-1))
        outputs.append(np.asarray(forward(x)))
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(labels), np.concatenate(outputs)


def predict_dataset(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` over a finite dataset of ``(x, y)`` batches, in one pass: each batch
    goes through one compiled forward pass beside its labels. The model is called directly, not
    through ``predict_on_batch``: under a ``tf.distribute`` strategy that one feeds the whole
    batch to every replica and returns every replica's copy of the answer."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    labels, outputs = dataset_outputs(forward, dataset)
    if not len(labels):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return labels, predicted_classes(outputs)


def recall_drops(candidate: dict, reference: dict) -> list[tuple[str, float, float]]:
    """``[(class, candidate recall, reference recall)]`` for the classes both ``per_class``
    tables measured (support > 0 in both), largest drop first."""
    out = []
    for name, row in (candidate or {}).items():
        ref = (reference or {}).get(name)
        if not ref or row.get("recall") is None or ref.get("recall") is None:
            continue
        out.append((name, float(row["recall"]), float(ref["recall"])))
    return sorted(out, key=lambda t: t[1] - t[2])
