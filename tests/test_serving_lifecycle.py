"""The local server while it runs: labels moved by a config reload, the command-line client, a
new version picked up under load, the config file re-read, request timeouts.

Same three models as tests/test_serving_server.py (its ``env`` fixture, one server per module).
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
import requests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("tensorflow_serving")

import tests.test_serving_server as base
from serving import ServingError
from serving.client import GrpcClient, RestClient
from serving.server import ModelServer, ServerOptions

env = base.env  # the module-scoped fixture: a server of this module's own
digits, expected, export_mnist, _grpc_error = (base.digits, base.expected, base.export_mnist,
                                               base._grpc_error)

pytestmark = pytest.mark.timeout(180)


# -------------------------------------------------------------------------------------------------
# config reload, command-line client
# -------------------------------------------------------------------------------------------------


def test_reload_config_over_grpc_moves_labels(env):
    from tensorflow_serving.config import model_server_config_pb2

    g, rest = env["grpc"], env["rest"]
    config = model_server_config_pb2.ModelServerConfig()
    config.CopyFrom(env["config"])
    mnist = next(mc for mc in config.model_config_list.config if mc.name == "mnist_mlp")
    mnist.version_labels["stable"] = 2
    mnist.version_labels["prod"] = 1
    g.reload_config(config)
    assert rest.model_status("mnist_mlp", label="stable")["model_version_status"][0]["version"] \
        == "2"
    assert g.predict("mnist_mlp", digits(1), label="prod").version == 1
    bad = model_server_config_pb2.ModelServerConfig()
    bad.CopyFrom(config)
    next(mc for mc in bad.model_config_list.config
         if mc.name == "mnist_mlp").version_labels["next"] = 99
    err = _grpc_error(g.reload_config, bad)
    assert err.code == "FAILED_PRECONDITION" and "not currently available" in err.message
    g.reload_config(env["config"])  # back to stable=1, canary=2
    assert g.predict("mnist_mlp", digits(1), label="stable").version == 1


def test_command_line_client(env, capsys, tmp_path):
    from serving.client import main

    port = str(env["server"].rest_port)
    assert main(["mnist_mlp", "--port", port, "--status", "--label", "canary"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_version_status"][0]["version"] == "2"
    np.save(tmp_path / "x.npy", digits(2))
    assert main(["mnist_mlp", "--port", port, "--instances", f"@{tmp_path / 'x.npy'}"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 2
    gport = str(env["server"].grpc_port)
    assert main(["mnist_mlp", "--protocol", "grpc", "--port", gport, "--version", "1",
                 "--inputs", f"@{tmp_path / 'x.npy'}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_spec"]["version"] == "1" and len(out["outputs"]["classes"]) == 2
    assert main(["examples", "--port", port, "--regress", "--signature", "regress",
                 "--examples", '[{"x": 1.0}]']) == 0
    assert json.loads(capsys.readouterr().out) == {"results": [3.0]}
    with pytest.raises(SystemExit) as e:
        main(["nope", "--port", port, "--instances", "[1]"])
    assert e.value.code == 2
    assert "error: NOT_FOUND: Servable not found" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------
# a new version appears while clients query: no request fails
# -------------------------------------------------------------------------------------------------


def test_new_version_is_picked_up_without_a_failed_request(env):
    server, root = env["server"], env["root"]
    url = env["url"] + "/v1/models/swap:predict"
    body = json.dumps({"instances": digits(2, seed=5).tolist()})
    stop = threading.Event()
    stats = {"rest_ok": 0, "grpc_ok": 0, "failures": [], "versions": set()}
    lock = threading.Lock()

    def rest_loop():
        with requests.Session() as s:
            for _ in range(20000):  # bounded in count and (below) in time
                if stop.is_set():
                    return
                try:
                    r = s.post(url, data=body, timeout=20)
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == 2
                except Exception as exc:  # noqa: BLE001
                    ok, r = False, exc
                with lock:
                    if ok:
                        stats["rest_ok"] += 1
                    else:
                        stats["failures"].append(("rest", getattr(r, "text", r)))

    def grpc_loop():
        g = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=20, retries=0)
        x = digits(2, seed=5)
        try:
            for _ in range(20000):
                if stop.is_set():
                    return
                try:
                    v = g.predict("swap", {"images": x}).version
                    with lock:
                        stats["grpc_ok"] += 1
                        stats["versions"].add(v)
                except ServingError as exc:
                    with lock:
                        stats["failures"].append(("grpc", str(exc)))
        finally:
            g.close()

    threads = [threading.Thread(target=f) for f in (rest_loop, rest_loop, grpc_loop)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        export_mnist(root, seed=4, name="swap")  # -> swap/2, renamed into place atomically
        assert server.core.wait_until(lambda m: m.get("swap") == [2], timeout=60)
        deadline = time.monotonic() + 30
        while 2 not in stats["versions"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # keep querying after the switch
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not stats["failures"], stats["failures"][:5]
    assert stats["versions"] == {1, 2}, stats["versions"]
    assert stats["rest_ok"] > 10 and stats["grpc_ok"] > 10
    status = env["rest"].model_status("swap")["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]


def test_model_config_file_is_polled(env, tmp_path):
    """A second server watching its config file: models are added and removed as it changes."""
    from serving.config import build_model_config, config_to_text

    root = env["root"]
    cfg = tmp_path / "models.config"

    def write(models):
        text = config_to_text(build_model_config(models, base_path_prefix=str(root),
                                                 auto_label=False))
        tmp = tmp_path / "next.config"
        tmp.write_text(text)
        os.replace(tmp, cfg)

    write({"examples": [1]})
    server = ModelServer(ServerOptions(
        port=None, rest_api_port=0, model_config_file=str(cfg),
        model_config_file_poll_wait_seconds=0.2, file_system_poll_wait_seconds=0)).start()
    try:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=20, retries=0)
        assert server.grpc_port is None
        assert rest.predict("examples", instances=["a"])["predictions"][0]["length"] == 1
        write({"examples": [1], "mnist_mlp": [1, 2]})
        assert server.core.wait_until(lambda m: m.get("mnist_mlp") == [1, 2], timeout=30)
        assert len(rest.predict("mnist_mlp", instances=digits(1))["predictions"]) == 1
        write({"mnist_mlp": [1, 2]})
        assert server.core.wait_until(lambda m: "examples" not in m, timeout=30)
        with pytest.raises(ServingError) as e:
            rest.predict("examples", instances=["a"])
        assert e.value.code == "NOT_FOUND"
    finally:
        server.stop()


def test_timeouts_answer_deadline_exceeded(env):
    """A request stuck in a batch queue past --rest_api_timeout_in_ms gets 504; a gRPC call past
    its deadline gets DEADLINE_EXCEEDED; a full batch runs at once."""
    from serving.batching import BatchingParameters

    base = env["root"] / "mnist_mlp"
    server = ModelServer(ServerOptions(
        port=0, rest_api_port=0, model_name="mnist_mlp", model_base_path=str(base),
        file_system_poll_wait_seconds=0, rest_api_timeout_in_ms=300, enable_batching=True,
        batching_parameters=BatchingParameters(max_batch_size=8, batch_timeout_micros=5_000_000,
                                               num_batch_threads=1))).start()
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/mnist_mlp:predict"
        t = time.monotonic()
        r = requests.post(url, json={"instances": digits(1).tolist()}, timeout=20)
        assert r.status_code == 504 and "Deadline exceeded" in r.json()["error"]
        assert time.monotonic() - t < 3
        with GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=0.3, retries=0) as g:
            err = _grpc_error(g.predict, "mnist_mlp", {"images": digits(1)})
            assert err.code == "DEADLINE_EXCEEDED"
        full = requests.post(url, json={"instances": digits(8).tolist()}, timeout=20)
        assert full.status_code == 200 and len(full.json()["predictions"]) == 8
        np.testing.assert_array_equal(
            np.array([p["probabilities"] for p in full.json()["predictions"]], np.float32),
            expected(env, 2, digits(8))["probabilities"])
    finally:
        server.stop()


def test_a_version_switch_collects_the_old_version_without_unfreezing(tmp_path):
    """TensorFlow's objects are frozen once at start; an unloaded version is reclaimed by one
    collection of what is not frozen. Unfreezing the whole heap to collect it held the
    interpreter lock for ~250 ms, a stall of every request in flight."""
    import gc
    import shutil
    import weakref

    from tests.test_serving_tfserving import half_plus_two

    half_plus_two(tmp_path / "staging" / "1")
    half_plus_two(tmp_path / "staging" / "2", b=3.0)
    base_path = tmp_path / "m"
    base_path.mkdir()
    os.rename(tmp_path / "staging" / "1", base_path / "1")
    server = ModelServer(ServerOptions(port=None, rest_api_port=0, model_name="m",
                                       model_base_path=str(base_path),
                                       file_system_poll_wait_seconds=0.1)).start()
    unfrozen = []
    real_unfreeze = gc.unfreeze
    try:
        assert gc.get_freeze_count() > 10_000  # TensorFlow's objects
        old = weakref.ref(server.core.get_servable("m"))
        gc.unfreeze = lambda: unfrozen.append(1)
        os.rename(tmp_path / "staging" / "2", base_path / "2")
        assert server.core.wait_until(lambda loaded: loaded.get("m") == [2], 60)
        deadline = time.monotonic() + 10
        while old() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert old() is None and not unfrozen
    finally:
        gc.unfreeze = real_unfreeze
        server.stop()
        shutil.rmtree(tmp_path / "staging", ignore_errors=True)
