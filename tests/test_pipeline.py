"""The promotion pipeline (ksuite/pipeline.py) and data validation (shared/validate.py).

Most tests replace the training child process by a tiny exported model with chosen metrics, so
they exercise validate -> gate -> publish -> label -> promote -> rollback in seconds; one test
runs the real MNIST app end to end through ``ksuite pipeline``; one follows the labels on a
running local server, which re-reads the config without restarting.
"""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("tensorflow_serving")

from ksuite import pipeline  # noqa: E402
from shared import validate  # noqa: E402
from shared.errors import UserError  # noqa: E402
from shared.export import GateRefused, versions  # noqa: E402
from tests.helpers import run_module  # noqa: E402

FAST = ["--limit", "2000", "--epochs", "1"]  # app flags; validation of MNIST itself is real


def _fake_train(monkeypatch, accuracy: float, calls: list | None = None):
    """Replace the training child process: export a tiny model that records ``accuracy``."""
    import keras
    import tensorflow as tf

    from shared.export import export_keras

    def train(app, flags, candidates, run_dir):
        if calls is not None:
            calls.append(flags)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        spec = [tf.TensorSpec([None, 4], tf.float32, name="x")]
        fn = tf.function(lambda x: {"y": model(x)})
        export_keras("mnist_mlp", {"serving_default": (fn, spec)}, [model], candidates,
                     metadata={"app": app, "metrics": {"accuracy": accuracy}})
        return 0

    monkeypatch.setattr(pipeline, "_train", train)


def _run(tmp_path, *flags):
    argv = ["mnist_mlp", "--export-dir", str(tmp_path / "models"),
            "--run-dir", str(tmp_path / "runs" / f"r{time.monotonic_ns()}"), *FAST, *flags]
    return pipeline.run_pipeline(pipeline.parse_args(argv))


def _labels(tmp_path, name="mnist_mlp"):
    return pipeline.labels_of(pipeline.load_config(tmp_path / "models" / "models.config"), name)


def _served(tmp_path, name="mnist_mlp"):
    mc = pipeline.find_entry(pipeline.load_config(tmp_path / "models" / "models.config"), name)
    return sorted(mc.model_version_policy.specific.versions)


def _label_cmd(fn, tmp_path, *extra):
    return fn(["mnist_mlp", "--export-dir", str(tmp_path / "models"), *extra])


def test_pass_refuse_promote_rollback(tmp_path, mirror, monkeypatch):
    # 1. First candidate: no stable yet -> published as version 1, labelled canary only.
    _fake_train(monkeypatch, 0.90)
    rec = _run(tmp_path)
    assert rec["stage"] == "published" and rec["version"] == 1
    assert _labels(tmp_path) == {"canary": 1}
    assert rec["validation"]["ok"] and len(rec["validation"]["checks"]) >= 10
    assert json.loads((tmp_path / "runs").glob("*/pipeline.json").__next__().read_text())[
        "stage"] == "published"
    with pytest.raises(UserError, match="no earlier stable"):
        _label_cmd(pipeline.rollback, tmp_path)

    # 2. promote: stable := canary.
    assert _label_cmd(pipeline.promote, tmp_path) == {"canary": 1, "stable": 1}
    with pytest.raises(UserError, match="already stable"):
        _label_cmd(pipeline.promote, tmp_path)

    # 3. A worse candidate (0.85 < 0.90 - 0.01) is refused: exit code 3, nothing published.
    _fake_train(monkeypatch, 0.85)
    with pytest.raises(GateRefused, match="0.85000 vs version 1 0.90000") as e:
        _run(tmp_path, "--margin", "0.01")
    assert e.value.exit_code == 3
    assert sorted(versions(tmp_path / "models" / "mnist_mlp")) == [1]
    assert not any((tmp_path / "models" / ".candidates").glob("*/*"))
    assert _labels(tmp_path) == {"canary": 1, "stable": 1}

    # 4. Within the margin (0.895 >= 0.90 - 0.01): published as version 2, canary; stable stays.
    _fake_train(monkeypatch, 0.895)
    rec = _run(tmp_path, "--margin", "0.01")
    assert rec["version"] == 2 and rec["verdict"].startswith("gate passed")
    assert _labels(tmp_path) == {"canary": 2, "stable": 1}
    assert _served(tmp_path) == [1, 2]

    # 5. promote 2, then rollback to 1; version 1 stays loaded after promotion (instant rollback).
    assert _label_cmd(pipeline.promote, tmp_path) == {"canary": 2, "stable": 2}
    assert _served(tmp_path) == [1, 2]
    assert _label_cmd(pipeline.rollback, tmp_path) == {"stable": 1}
    assert _labels(tmp_path) == {"stable": 1}
    history = json.loads((tmp_path / "models" / "mnist_mlp" / "promotions.json").read_text())
    assert [h["action"] for h in history["log"]] == [
        "publish 1", "promote 1", "publish 2", "promote 2", "rollback 2 -> 1"]

    # 6. The gate compares with *stable* (1: 0.90), not the newest version (2: 0.895).
    _fake_train(monkeypatch, 0.897)
    with pytest.raises(GateRefused, match="version 1"):
        _run(tmp_path)


def test_failed_validation_stops_before_training(tmp_path, mirror, monkeypatch):
    import shared.data

    real = shared.data.load_image_dataset

    def corrupted(name, source="auto"):  # a truncated file: classes 5..9 are gone
        (x, y), test = real(name, source)
        keep = y < 5
        return (x[keep], y[keep]), test

    monkeypatch.setattr(shared.data, "load_image_dataset", corrupted)
    calls = []
    _fake_train(monkeypatch, 0.9, calls)
    with pytest.raises(validate.DataValidationError, match="train labels: balance") as e:
        _run(tmp_path)
    assert e.value.exit_code == 4
    assert calls == []  # nothing was trained
    record = json.loads(next((tmp_path / "runs").glob("*/pipeline.json")).read_text())
    assert record["stage"] == "validation failed"
    failed = [c["name"] for c in record["validation"]["checks"] if not c["ok"]]
    assert failed == ["train labels: balance"]


def test_generic_checks_catch_schema_range_and_balance_problems():
    r = validate.Report("t", "synthetic")
    x = np.zeros((10, 28, 28), np.float32)
    validate.check_images(r, "train", x, (28, 28))
    validate.check_labels(r, "train", np.array([0, 1, 2, 12]), 10, n=5)
    validate.check_texts(r, "train", np.array([b"fine", b"", b"\xff\xfe"], dtype=object))
    failed = {c.name for c in r.failed}
    assert failed == {"train images: schema", "train images: value range", "train labels: schema",
                      "train labels: value range", "train labels: balance",
                      "train texts: value range"}
    ok = validate.Report("t", "synthetic")
    validate.check_labels(ok, "train", np.repeat(np.arange(3), [5, 4, 3]), 3)
    assert ok.ok  # 3/5 = 0.6 >= 0.5
    assert "FAIL" in r.text() and "0/" not in ok.text()


def test_pipeline_flag_errors(tmp_path):
    with pytest.raises(UserError, match="--export-dir is set by the pipeline"):
        pipeline.parse_args(["mnist_mlp", "--", "--export-dir=x"])
    with pytest.raises(UserError, match="--no-export"):
        pipeline.parse_args(["mnist_mlp", "--no-export"])
    with pytest.raises(UserError, match="--margin"):
        pipeline.parse_args(["mnist_mlp", "--margin", "-1"])
    with pytest.raises(UserError, match="serving config not found"):
        pipeline.promote(["mnist_mlp", "--export-dir", str(tmp_path)])


def test_running_server_follows_labels_without_restart(tmp_path, mirror, monkeypatch):
    from serving.server import ModelServer, ServerOptions

    _fake_train(monkeypatch, 0.90)
    _run(tmp_path)
    _label_cmd(pipeline.promote, tmp_path)
    config = tmp_path / "models" / "models.config"
    server = ModelServer(ServerOptions(
        port=None, rest_api_port=0, model_config_file=str(config),
        model_config_file_poll_wait_seconds=0.2, file_system_poll_wait_seconds=0)).start()
    url = f"http://127.0.0.1:{server.rest_port}"

    def label_version(label):
        with urllib.request.urlopen(f"{url}/v1/models/mnist_mlp/labels/{label}", timeout=10) as r:
            return int(json.loads(r.read())["model_version_status"][0]["version"])

    def eventually(label, version):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if label_version(label) == version:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    try:
        assert eventually("stable", 1)
        _fake_train(monkeypatch, 0.95)
        # --server: the label moves only once the server reports the new version AVAILABLE.
        _run(tmp_path, "--server", url)
        assert eventually("canary", 2) and label_version("stable") == 1
        _label_cmd(pipeline.promote, tmp_path, "--server", url)
        assert eventually("stable", 2)
        _label_cmd(pipeline.rollback, tmp_path, "--server", url)
        assert eventually("stable", 1)
    finally:
        server.stop()


def test_ksuite_pipeline_trains_the_real_app(tmp_path, mirror):
    """End to end through the console entry point: real validation, real MNIST training."""
    out = run_module("ksuite.cli", "pipeline", "mnist_mlp", "--export-dir", tmp_path / "models",
                     "--run-dir", tmp_path / "run", "--epochs", "1", "--limit", "2000",
                     "--verbose", "0", timeout=300).stdout
    assert "12/12 checks passed" in out and "published mnist_mlp version 1 as canary" in out
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert record["stage"] == "published" and 0.5 < record["candidate_metrics"]["accuracy"] <= 1
    assert (tmp_path / "models" / "mnist_mlp" / "1" / "saved_model.pb").is_file()
    config = pipeline.load_config(tmp_path / "models" / "models.config")
    assert pipeline.labels_of(config, "mnist_mlp") == {"canary": 1}
