"""The README's main job (`ksuite demo`), end to end at a one-epoch budget."""

from __future__ import annotations

from tests.helpers import run_module


def test_main_job_trains_exports_reloads_serves_and_queries(tmp_path, mirror):
    proc = run_module("ksuite.demo", "--epochs", "1", "--export-dir", tmp_path / "models",
                      "--run-dir", tmp_path / "run", "--digits", "6", timeout=400)
    out = proc.stdout
    assert "exported" in out and (tmp_path / "models" / "mnist_mlp" / "1"
                                  / "saved_model.pb").exists()
    assert "correct; test accuracy of this model" in out
    rest = [line for line in out.splitlines()
            if line.startswith("POST /v1/models/mnist_mlp:predict")]
    grpc = [line for line in out.splitlines() if line.startswith("gRPC PredictionService/Predict")]
    assert rest and grpc
    assert rest[0].split("classes")[-1].strip() == grpc[0].split("classes")[-1].strip()
    assert "server stopped (exit code 0)" in out
