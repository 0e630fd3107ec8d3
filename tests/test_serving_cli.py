"""The entry points as processes: `python -m serving.server` with tensorflow_model_server's
flags (batching on), queried over REST and gRPC, stopped with SIGTERM; and the --help texts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

pytestmark = pytest.mark.timeout(180)


def run(*args, timeout=60):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("module, words", [
    ("serving.server", ["--model_config_file", "--rest_api_port", "--enable_batching",
                        "--file_system_poll_wait_seconds", "--batching_parameters_file",
                        "--rest_api_timeout_in_ms", "127.0.0.1"]),
    ("serving.client", ["--instances", "--inputs", "--label", "--protocol", "--classify"]),
    ("serving.config", ["--policy", "--label", "--base-path-prefix", "--check"]),
])
def test_help(module, words):
    r = run("-m", module, "--help")
    assert r.returncode == 0, r.stderr
    for w in words:
        assert w in r.stdout, w


def test_user_errors_are_one_line():
    r = run("-m", "serving.server", "--port=8500")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: Both --model_base_path and "
                                                        "--model_config_file are empty")
    r = run("-m", "serving.server", "--model_base_path=/x", "--no_such_flag=1")
    assert r.returncode == 2 and "unrecognized arguments: --no_such_flag=1" in r.stderr


def test_server_process_with_tf_serving_flags(tmp_path):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from serving.client import GrpcClient, RestClient
    from shared.export import export_keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(inp)))

    def serve(images):
        p = model(tf.cast(images, tf.float32) / 255.0)
        return {"probabilities": p, "classes": tf.argmax(p, axis=-1)}

    path = export_keras("mnist_mlp", {"serving_default": (
        serve, [tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])}, track=[model],
        export_dir=tmp_path)
    direct = tf.saved_model.load(str(path)).signatures["serving_default"]

    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.server", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", "--model_name=mnist_mlp",
         f"--model_base_path={tmp_path / 'mnist_mlp'}", "--enable_batching",
         f"--batching_parameters_file={REPO / 'serving' / 'batching.config'}",
         "--file_system_poll_wait_seconds=1", "--num_tflite_pools=2"],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{rest_port}/v1/models/mnist_mlp"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)

        rest = RestClient(f"http://127.0.0.1:{rest_port}", timeout=20)
        x = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
        want = direct(images=tf.constant(x))["probabilities"].numpy()
        with ThreadPoolExecutor(24) as pool:  # concurrent requests: batched server-side
            rows = list(pool.map(
                lambda i: rest.predict("mnist_mlp", instances=x[i:i + 1])["predictions"][0],
                range(24)))
        got = np.array([r["probabilities"] for r in rows], np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        with GrpcClient(f"127.0.0.1:{grpc_port}", timeout=20) as g:
            p = g.predict("mnist_mlp", {"images": x[:3]})
            assert p.version == 1
            np.testing.assert_allclose(p["probabilities"], want[:3], rtol=1e-5, atol=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "warning: --num_tflite_pools is accepted for compatibility" in err
    assert "batching on: max_batch_size=64" in err
