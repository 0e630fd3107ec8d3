"""Per-class evaluation (shared/evaluation.py), the gate's per-class recall check
(shared/export.Gate(class_margin=...), ``ksuite pipeline --class-margin``) and a tiny real MNIST
run that writes the confusion matrix."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from shared.evaluation import (
    PerClass,
    confusion_matrix,
    per_class_report,
    predicted_classes,
    recall_drops,
)
from shared.export import METADATA_FILE, Gate, GateRefused

NAMES = ["a", "b", "c", "d"]  # "d" has no test example and is never predicted
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 2, 2]


def test_confusion_matrix_and_per_class_figures_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 4, 0], [0, 0, 0, 0]]
    table = per_class_report(Y_TRUE, Y_PRED, NAMES).table()
    # a: TP 2, predicted 2, support 3 -> P 1, R 2/3, F1 2*(2/3)/(5/3) = 0.8
    # b: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
    # c: TP 4, predicted 5, support 4 -> P 4/5, R 1, F1 2*0.8/1.8 = 8/9
    expected = {"a": (1.0, 2 / 3, 0.8, 3), "b": (0.5, 0.5, 0.5, 2), "c": (0.8, 1.0, 8 / 9, 4)}
    for name, (p, r, f1, n) in expected.items():
        row = table[name]
        assert row["precision"] == pytest.approx(p) and row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(f1) and row["support"] == n
    assert table["d"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}

    m = per_class_report(Y_TRUE, Y_PRED, NAMES).metrics()
    assert m["per_class"] == table
    # Macro averages over the classes with test examples (a, b, c), not d.
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.8) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 8 / 9) / 3)
    assert m["worst_class"] == "b" and m["worst_class_recall"] == pytest.approx(0.5)
    assert m["worst_f1_class"] == "b" and m["worst_class_f1"] == pytest.approx(0.5)
    json.dumps(m)  # plain JSON: it goes into metrics.json and ksuite.json as is


def test_inputs_checked_and_predicted_classes():
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="2 labels but 1"):
        confusion_matrix([0, 1], [0], 3)
    # argmax of scores; p >= 0.5 for one sigmoid unit, either shape.
    assert predicted_classes([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]]).tolist() == [1, 0]
    assert predicted_classes([[0.2], [0.5], [0.9]]).tolist() == [0, 1, 1]
    assert predicted_classes([0.49, 0.51]).tolist() == [0, 1]


def test_csv_and_png_written_atomically(tmp_path):
    report = per_class_report(Y_TRUE, Y_PRED, NAMES)
    csv_path, png_path = report.write(tmp_path, title="test")
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["true \\ predicted", *NAMES]
    assert rows[1] == ["a", "2", "1", "0", "0"] and rows[3] == ["c", "0", "0", "4", "0"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.csv",
                                                         "confusion_matrix.png"]  # no temp files


def _version(base, v: int, metrics: dict):
    meta = base / str(v) / METADATA_FILE
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"metrics": metrics}))


def _metrics(accuracy: float, recalls: dict) -> dict:
    return {"accuracy": accuracy, "per_class": {
        n: {"precision": r, "recall": r, "f1": r, "support": 10} for n, r in recalls.items()}}


def test_gate_refuses_a_class_drop_and_passes_within_the_margin(tmp_path):
    base = tmp_path / "m"
    _version(base, 1, _metrics(0.90, {"cat": 0.80, "dog": 0.95, "car": 0.90}))
    # The headline improves and the worst class (cat) improves, but dog falls 0.95 -> 0.85:
    # the per-class check names dog; the worst-class minimum alone would not have caught it.
    worse_dog = _metrics(0.91, {"cat": 0.86, "dog": 0.85, "car": 0.98})
    with pytest.raises(GateRefused, match="class 'dog' recall: candidate 0.85000 vs version 1 "
                                          "0.95000") as e:
        Gate("accuracy", 0.0, class_margin=0.05).check(base, worse_dog)
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    # Within the class margin (0.10 >= drop 0.10): passes, and says which class moved most.
    verdict = Gate("accuracy", 0.0, class_margin=0.10).check(base, worse_dog)
    assert verdict.startswith("gate passed") and "'dog'" in verdict
    # Off by default: only the headline metric is compared.
    assert "class" not in Gate("accuracy", 0.0).check(base, worse_dog)
    # A reference without per-class figures, or no class in common: nothing to compare.
    _version(base, 2, {"accuracy": 0.90})
    assert "no per-class" in Gate("accuracy", class_margin=0.0).check(base, worse_dog)
    other = _metrics(0.95, {"ship": 0.5})
    assert "no class measured" in Gate("accuracy", class_margin=0.0).check(base, other, 1)
    assert [t[0] for t in recall_drops(worse_dog["per_class"],
                                       _metrics(0, {"cat": .8, "dog": .95, "car": .9})[
                                           "per_class"])] == ["dog", "cat", "car"]


def test_pipeline_class_margin_refuses_with_exit_3(tmp_path, mirror, monkeypatch, capsys):
    pytest.importorskip("tensorflow_serving")
    import keras
    import tensorflow as tf

    from ksuite import pipeline
    from shared.export import export_keras, versions

    def fake(metrics):
        def train(app, flags, candidates, run_dir):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            fn = tf.function(lambda x: {"y": model(x)})
            export_keras("mnist_mlp", {"serving_default": (
                fn, [tf.TensorSpec([None, 4], tf.float32, name="x")])}, [model], candidates,
                metadata={"app": app, "metrics": metrics})
            return 0
        monkeypatch.setattr(pipeline, "_train", train)

    def argv(*flags):
        return ["mnist_mlp", "--export-dir", str(tmp_path / "models"), "--run-dir",
                str(tmp_path / "runs" / f"r{time.monotonic_ns()}"), "--limit", "2000", *flags]

    fake(_metrics(0.90, {"0": 0.95, "1": 0.97}))
    assert pipeline.main(argv()) == 0
    pipeline.promote(["mnist_mlp", "--export-dir", str(tmp_path / "models")])
    fake(_metrics(0.92, {"0": 0.99, "1": 0.90}))  # better headline, class 1 drops by 0.07
    with pytest.raises(SystemExit) as e:
        pipeline.main(argv("--class-margin", "0.02"))
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class '1' recall" in err[0], err
    assert sorted(versions(tmp_path / "models" / "mnist_mlp")) == [1]
    assert pipeline.main(argv("--class-margin", "0.1")) == 0  # within the margin
    assert sorted(versions(tmp_path / "models" / "mnist_mlp")) == [1, 2]


def test_tiny_mnist_run_writes_the_confusion_matrix(tmp_path, mirror):
    from apps.mnist_mlp import train

    run = tmp_path / "run"
    record = train.main(["--epochs", "1", "--limit", "500", "--run-dir", str(run),
                         "--export-dir", str(tmp_path / "models"), "--verbose", "0"])
    rows = list(csv.reader((run / "confusion_matrix.csv").open()))
    assert rows[0][1:] == [str(d) for d in range(10)] and len(rows) == 11
    counts = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert counts.sum() == 10000  # the whole MNIST test set
    assert (run / "confusion_matrix.png").stat().st_size > 1000
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    assert set(m["per_class"]) == {str(d) for d in range(10)}
    assert sum(r["support"] for r in m["per_class"].values()) == 10000
    # The per-class figures agree with the headline accuracy of the same test set.
    assert np.trace(counts) / counts.sum() == pytest.approx(m["accuracy"], abs=1e-6)
    assert m["worst_class_recall"] == min(r["recall"] for r in m["per_class"].values())
    assert 0 <= m["worst_class_f1"] <= m["macro_f1"] <= 1
    assert record["metrics"] == m
    meta = json.loads(next((tmp_path / "models" / "mnist_mlp").glob(f"*/{METADATA_FILE}"))
                      .read_text())
    assert meta["metrics"]["per_class"] == m["per_class"]  # what the promotion gate reads


def test_perclass_dataclass_roundtrip():
    report = PerClass(["x", "y"], np.array([[3, 1], [0, 4]]))
    assert report.support.tolist() == [4, 4]
    assert report.metrics()["worst_class"] == "x"
