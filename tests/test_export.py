"""Versioned, atomic SavedModel export and the validation gate."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared.errors import UserError
from shared.export import (
    METADATA_FILE,
    Gate,
    GateRefused,
    export_keras,
    latest_version,
    publish,
    read_metadata,
    versions,
)


def fake_writer(path: Path) -> None:
    """Stands in for a SavedModel writer: publish() only needs saved_model.pb."""
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb")
    (path / "variables").mkdir()


def leftovers(export_dir: Path) -> list[str]:
    return [p.name for p in export_dir.iterdir() if p.name.startswith(".")]


# -- version numbering -----------------------------------------------------------------------


def test_versions_auto_increment(tmp_path):
    made = [publish("m", fake_writer, tmp_path, metadata={"metrics": {"acc": i}})
            for i in range(3)]
    assert made == [tmp_path / "m" / "1", tmp_path / "m" / "2", tmp_path / "m" / "3"]
    assert versions(tmp_path / "m") == {1: made[0], 2: made[1], 3: made[2]}
    assert latest_version(tmp_path / "m") == 3
    for i, v in enumerate(made):
        assert (v / "saved_model.pb").read_bytes() == b"pb"
        meta = json.loads((v / METADATA_FILE).read_text())
        assert meta["name"] == "m" and meta["version"] == i + 1
        assert meta["metrics"] == {"acc": i}
        assert "tensorflow" in meta["libraries"] and "keras" in meta["libraries"]
        assert read_metadata(v) == meta
    assert leftovers(tmp_path) == []  # the staging folder is gone
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "3"]


def test_zero_padded_version_counts(tmp_path):
    (tmp_path / "m" / "00000007").mkdir(parents=True)
    (tmp_path / "m" / "notaversion").mkdir()
    (tmp_path / "m" / "12.tmp").mkdir()
    assert versions(tmp_path / "m") == {7: tmp_path / "m" / "00000007"}
    assert publish("m", fake_writer, tmp_path) == tmp_path / "m" / "8"
    assert latest_version(tmp_path / "m") == 8


def test_no_versions():
    assert versions("/nonexistent/base") == {}
    assert latest_version("/nonexistent/base") is None


def test_explicit_version(tmp_path):
    assert publish("m", fake_writer, tmp_path, version=5) == tmp_path / "m" / "5"
    with pytest.raises(UserError, match="never overwritten"):
        publish("m", fake_writer, tmp_path, version=5)
    assert publish("m", fake_writer, tmp_path) == tmp_path / "m" / "6"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_invalid_names(tmp_path, name):
    with pytest.raises(UserError):
        publish(name, fake_writer, tmp_path)


# -- atomicity ---------------------------------------------------------------------------------


def test_failing_writer_leaves_no_version(tmp_path):
    def writer(path):
        fake_writer(path)
        raise RuntimeError("disk full")

    publish("m", fake_writer, tmp_path)
    with pytest.raises(RuntimeError, match="disk full"):
        publish("m", writer, tmp_path)
    assert versions(tmp_path / "m") == {1: tmp_path / "m" / "1"}
    assert leftovers(tmp_path) == []
    assert publish("m", fake_writer, tmp_path) == tmp_path / "m" / "2"


def test_writer_without_saved_model_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="no saved_model.pb"):
        publish("m", lambda p: p.mkdir(parents=True), tmp_path)
    assert versions(tmp_path / "m") == {}
    assert leftovers(tmp_path) == []


# -- a real SavedModel -----------------------------------------------------------------------


def test_export_keras_reloads_with_same_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    signature = [tf.TensorSpec((None, 3), tf.float32, name="x")]
    path = export_keras(
        "tiny",
        {"serving_default": (lambda x: model(x, training=False), signature)},
        track=[model],
        export_dir=tmp_path,
        metadata={"metrics": {"accuracy": 0.5}},
    )
    assert path == tmp_path / "tiny" / "1"
    assert (path / "saved_model.pb").exists()
    assert read_metadata(path)["metrics"] == {"accuracy": 0.5}
    assert leftovers(tmp_path) == []

    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_allclose(loaded.serving_default(tf.constant(x)).numpy(), expected,
                               rtol=1e-6, atol=1e-6)
    out = loaded.signatures["serving_default"](x=tf.constant(x))
    assert len(out) == 1
    np.testing.assert_allclose(next(iter(out.values())).numpy(), expected, rtol=1e-6, atol=1e-6)

    assert export_keras(
        "tiny", {"serving_default": (lambda x: model(x, training=False), signature)},
        track=[model], export_dir=tmp_path) == tmp_path / "tiny" / "2"


# -- Gate ---------------------------------------------------------------------------------


def published(tmp_path, metrics):
    publish("m", fake_writer, tmp_path, metadata={"metrics": metrics})
    return tmp_path / "m"


def test_gate_passes_with_no_previous_version(tmp_path):
    gate = Gate("accuracy", margin=0.0)
    assert "no published version" in gate.check(tmp_path / "m", {"accuracy": 0.1})
    path = publish("m", fake_writer, tmp_path, metadata={"metrics": {"accuracy": 0.1}},
                   gate=gate)
    assert path == tmp_path / "m" / "1"


def test_gate_refuses_worse_beyond_margin(tmp_path):
    base = published(tmp_path, {"accuracy": 0.90})
    gate = Gate("accuracy", margin=0.01)
    with pytest.raises(GateRefused, match="accuracy") as info:
        gate.check(base, {"accuracy": 0.85})
    assert info.value.exit_code == 3 and isinstance(info.value, UserError)
    with pytest.raises(GateRefused):
        publish("m", fake_writer, tmp_path, metadata={"metrics": {"accuracy": 0.85}}, gate=gate)
    assert sorted(versions(base)) == [1]  # nothing published
    assert leftovers(tmp_path) == []


def test_gate_passes_within_margin_and_when_better(tmp_path):
    base = published(tmp_path, {"accuracy": 0.90})
    gate = Gate("accuracy", margin=0.01)
    assert gate.check(base, {"accuracy": 0.895}).startswith("gate passed")
    assert gate.check(base, {"accuracy": 0.95}).startswith("gate passed")
    assert Gate("accuracy").check(base, {"accuracy": 0.90}).startswith("gate passed")
    with pytest.raises(GateRefused):
        Gate("accuracy").check(base, {"accuracy": 0.8999})
    path = publish("m", fake_writer, tmp_path, metadata={"metrics": {"accuracy": 0.895}},
                   gate=gate)
    assert path == base / "2"


def test_gate_lower_is_better(tmp_path):
    base = published(tmp_path, {"loss": 0.30})
    gate = Gate("loss", margin=0.05, higher_is_better=False)
    assert gate.check(base, {"loss": 0.34}).startswith("gate passed")
    assert gate.check(base, {"loss": 0.10}).startswith("gate passed")
    with pytest.raises(GateRefused):
        gate.check(base, {"loss": 0.40})


def test_gate_reference_and_missing_metrics(tmp_path):
    base = published(tmp_path, {"accuracy": 0.90})
    published(tmp_path, {"accuracy": 0.50})  # version 2, much worse
    gate = Gate("accuracy", margin=0.01)
    assert gate.check(base, {"accuracy": 0.6}).startswith("gate passed")  # vs latest (2)
    with pytest.raises(GateRefused):
        gate.check(base, {"accuracy": 0.6}, reference=1)
    with pytest.raises(UserError, match="reference version 9"):
        gate.check(base, {"accuracy": 0.6}, reference=9)
    with pytest.raises(UserError, match="no metric 'accuracy'"):
        gate.check(base, {"loss": 0.1})
    assert "recorded no" in Gate("f1").check(base, {"f1": 0.2})
