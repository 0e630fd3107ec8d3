"""The serving half of the main job: start the local TensorFlow-Serving-compatible server on an
export folder, query one model over REST and over gRPC, print the answers, stop the server.

Used by ``ksuite demo`` (shared/demo.py); the same two queries work unchanged against the real
``tensorflow/serving`` container (serving/README.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(export_dir: str | os.PathLike, model: str, images: np.ndarray, labels: np.ndarray,
        timeout: float = 120.0) -> dict:
    from serving.client import GrpcClient, RestClient

    base = Path(export_dir).resolve() / model
    grpc_port, rest_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "serving.server", f"--port={grpc_port}",
           f"--rest_api_port={rest_port}", f"--model_name={model}", f"--model_base_path={base}"]
    print("$ " + " ".join(["ksuite serve", *cmd[3:]]), flush=True)
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    answers = {}
    try:
        rest = RestClient(f"http://127.0.0.1:{rest_port}", timeout=10)
        deadline = time.time() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError("the server exited:\n" + (server.stdout.read() or "")[-2000:])
            try:
                status = rest.model_status(model)
                states = [v["state"] for v in status["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the server did not make {model} available in {timeout:.0f} s")
            time.sleep(0.3)
        print(f"GET  /v1/models/{model} -> {status}")

        reply = rest.predict(model, instances=images.tolist())
        rest_classes = [int(p["classes"]) for p in reply["predictions"]]
        print(f"POST /v1/models/{model}:predict (REST, {len(images)} instances) -> classes "
              f"{rest_classes}")

        with GrpcClient(f"127.0.0.1:{grpc_port}", timeout=10) as grpc_client:
            pred = grpc_client.predict(model, {"images": images.astype(np.uint8)})
        grpc_classes = [int(c) for c in pred["classes"]]
        print(f"gRPC PredictionService/Predict (version {pred.version}) -> classes "
              f"{grpc_classes}")
        print(f"labels                                      -> {[int(v) for v in labels]}")
        answers = {"rest": rest_classes, "grpc": grpc_classes, "labels": [int(v) for v in labels]}
        if rest_classes != grpc_classes:
            raise RuntimeError("REST and gRPC answers differ")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(f"server stopped (exit code {server.returncode})")
    return answers
