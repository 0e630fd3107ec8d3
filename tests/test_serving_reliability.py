"""Reliability of the local server (issue 26): config reloads that move a base path or name a
version that appears later, large REST bodies, REST error shapes, gRPC deadlines, memory.

Loopback only. The large-body, memory and deadline tests run the server in its own process
(``python -m serving.server``) so its resident memory and CPU time are measured alone."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving")
psutil = pytest.importorskip("psutil")

from helpers import child_env, free_ports
from test_serving_tfserving import half_plus_two

from serving import ServingError
from serving.client import GrpcClient
from serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
BIG = 12_500_000  # float values in the large body: about 50 MB of JSON


def work_model(path):
    """Signatures ``total`` (x [-1] float -> y = sum(x), one value), ``spin`` (n [1] int64:
    loops n times, counting every iteration in a variable) and ``count`` (the variable)."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y = tf.reduce_sum(x, keepdims=True, name="y")
        n = tf.compat.v1.placeholder(tf.int64, [1], name="n")
        counter = tf.compat.v1.get_variable("counter", [], tf.int64, use_resource=True,
                                            initializer=tf.compat.v1.zeros_initializer())

        def body(i):
            with tf.control_dependencies([counter.assign_add(1)]):
                return i + 1

        done = tf.compat.v1.while_loop(lambda i: i < n[0], body, [tf.constant(0, tf.int64)])
        done = tf.reshape(done, [1], name="done")
        dummy = tf.compat.v1.placeholder(tf.float32, [None], name="dummy")
        count = tf.reshape(counter.read_value(), [1], name="count")
        info = tf.compat.v1.saved_model.build_tensor_info
        sd = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        predict = "tensorflow/serving/predict"
        sigs = {"total": sd({"x": info(x)}, {"y": info(y)}, predict),
                "spin": sd({"n": info(n)}, {"done": info(done)}, predict),
                "count": sd({"dummy": info(dummy)}, {"count": info(count)}, predict)}
        with tf.compat.v1.Session(graph=g) as s:
            s.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(s, ["serve"], signature_def_map=sigs)
            builder.save()
    return path


def config_text(*models) -> str:
    """A model_config_list of (name, base_path[, extra text]) entries."""
    entries = "".join(
        f'config {{ name: "{m[0]}" base_path: "{m[1]}" model_platform: "tensorflow" '
        f'{m[2] if len(m) > 2 else ""} }} ' for m in models)
    return f"model_config_list {{ {entries}}}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(base: Path, version: int, a: float, stage: Path) -> None:
    """half_plus_two (y = a*x + 2) as ``base/<version>``, renamed into place in one step."""
    half_plus_two(stage / str(version), a=a)
    base.mkdir(parents=True, exist_ok=True)
    os.rename(stage / str(version), base / str(version))


class Prober:
    """Posts ``{"instances": [2.0]}`` to a REST predict URL in a loop; keeps every answer."""

    def __init__(self, url: str):
        self.url, self.answers = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        with requests.Session() as s:
            while not self._stop.is_set():
                r = s.post(self.url, json={"instances": [2.0]}, timeout=20)
                self.answers.append((r.status_code, r.text))
                time.sleep(0.01)

    def last(self):
        n = len(self.answers)
        while len(self.answers) == n and self._thread.is_alive():
            time.sleep(0.01)
        return self.answers[-1]

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        return self.answers


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -- config reloads -------------------------------------------------------------------------------


def test_base_path_change_keeps_answering_until_the_new_version_is_available(tmp_path):
    half_plus_two(tmp_path / "a" / "1")  # y = 0.5 x + 2
    cfg = tmp_path / "models.config"
    write_atomic(cfg, config_text(("m", tmp_path / "a")))
    server = ModelServer(ServerOptions(
        port=None, rest_api_port=0, model_config_file=str(cfg),
        model_config_file_poll_wait_seconds=0.1, file_system_poll_wait_seconds=0.1,
        max_num_load_retries=0)).start()
    probe = Prober(f"http://127.0.0.1:{server.rest_port}/v1/models/m:predict")
    try:
        assert probe.last() == (200, '{"predictions":[3.0]}')
        write_atomic(cfg, config_text(("m", tmp_path / "b")))  # not there yet
        time.sleep(1.0)  # several config and file-system polls
        assert probe.last() == (200, '{"predictions":[3.0]}')
        publish(tmp_path / "b", 2, 1.0, tmp_path / "stage")  # y = x + 2
        assert wait_for(lambda: probe.last() == (200, '{"predictions":[4.0]}'), 60)
        assert server.core.loaded() == {"m": [2]}
    finally:
        answers = probe.stop()
        server.stop()
    bad = [a for a in answers if a[0] != 200]
    assert not bad, bad[:3]
    assert len(answers) > 20


def test_a_label_on_a_version_that_appears_later_is_applied_when_it_loads(tmp_path):
    base = tmp_path / "m"
    half_plus_two(base / "1")
    policy = "model_version_policy { all {} }"
    cfg = tmp_path / "models.config"
    write_atomic(cfg, config_text(("m", base, policy + ' version_labels { key: "stable" '
                                   'value: 1 }')))
    server = ModelServer(ServerOptions(
        port=None, rest_api_port=0, model_config_file=str(cfg),
        model_config_file_poll_wait_seconds=0.1, file_system_poll_wait_seconds=0.1,
        max_num_load_retries=0)).start()
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/m/labels/%s:predict"
    try:
        write_atomic(cfg, config_text(("m", base, policy + ' version_labels { key: "stable" '
                                       'value: 1 } version_labels { key: "canary" value: 2 }')))
        time.sleep(0.6)
        r = requests.post(url % "canary", json={"instances": [2.0]}, timeout=20)
        assert r.status_code == 400 and "Unrecognized servable version label: canary" in r.text
        publish(base, 2, 1.0, tmp_path / "stage")

        def canary():
            r = requests.post(url % "canary", json={"instances": [2.0]}, timeout=20)
            return r.status_code == 200 and r.json() == {"predictions": [4.0]}

        assert wait_for(canary, 60)
        r = requests.post(url % "stable", json={"instances": [2.0]}, timeout=20)
        assert r.json() == {"predictions": [3.0]}
    finally:
        server.stop()


# -- a server in its own process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    half_plus_two(root / "hp2" / "1")
    work_model(root / "work" / "1")
    cfg = root / "models.config"
    cfg.write_text(config_text(("hp2", root / "hp2"), ("work", root / "work")))
    grpc_port, rest_port = free_ports(2)
    log = open(root / "server.log", "w+")  # noqa: SIM115 - open while the server runs
    # oneDNN's CPU allocator keeps a pool as large as the largest tensor it has allocated
    # (reused, not grown); without it, what the memory test measures is the server's own.
    p = subprocess.Popen(
        [sys.executable, "-m", "serving.server", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--model_config_file={cfg}",
         "--file_system_poll_wait_seconds=0"],
        cwd=REPO, env=child_env(TF_ENABLE_ONEDNN_OPTS=0), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{rest_port}"
    try:
        ok = wait_for(lambda: p.poll() is not None or _up(url), 120)
        assert ok and p.poll() is None, (root / "server.log").read_text()[-3000:]
        yield {"url": url, "grpc": f"127.0.0.1:{grpc_port}",
               "process": psutil.Process(p.pid), "log": root / "server.log"}
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def _up(url: str) -> bool:
    try:
        return requests.get(url + "/v1/models/hp2", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def big_body(n: int = BIG) -> bytes:
    return (b'{"signature_name":"total","inputs":{"x":[' + b",".join([b"0.5"] * n) + b"]}}")


def total(url: str, body: bytes) -> float:
    r = requests.post(url + "/v1/models/work:predict", data=body, timeout=120)
    assert r.status_code == 200, r.text[:300]
    return r.json()["outputs"][0]


def test_a_large_body_does_not_stall_small_requests(proc):
    body = big_body()
    assert len(body) > 45e6
    small = proc["url"] + "/v1/models/hp2:predict"
    result = {}

    def send():
        t = time.monotonic()
        result["value"] = total(proc["url"], body)
        result["seconds"] = time.monotonic() - t

    big = threading.Thread(target=send)
    latencies = []
    with requests.Session() as s:
        s.post(small, json={"instances": [1.0]}, timeout=20)
        big.start()
        while big.is_alive():
            t = time.monotonic()
            r = s.post(small, json={"instances": [1.0]}, timeout=20)
            latencies.append(time.monotonic() - t)
            assert r.status_code == 200
            time.sleep(0.01)
    big.join()
    assert result["value"] == BIG * 0.5
    # parsing 50 MB of JSON takes seconds; small requests kept being answered meanwhile
    assert result["seconds"] > 1.0 and len(latencies) > 10
    assert max(latencies) < 0.75, (max(latencies), result)


def test_memory_comes_back_after_a_large_request(proc):
    process = proc["process"]
    body = big_body()
    total(proc["url"], big_body(200_000))  # the parsing worker exists and the path is warm
    time.sleep(0.5)
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert total(proc["url"], body) == BIG * 0.5
    finally:
        done.set()
        watcher.join()
    mb = 2**20

    def settled():
        return process.memory_info().rss < baseline + 32 * mb

    back = wait_for(settled, 10)
    after = process.memory_info().rss
    assert peak > baseline + 40 * mb  # the request did hold its body and tensor in memory
    assert back, f"RSS {baseline / mb:.0f} MB before, peak {peak / mb:.0f}, after {after / mb:.0f}"


def test_a_body_far_over_the_limit_gets_413_json(proc):
    url = proc["url"] + "/v1/models/hp2:predict"
    limit = 64 * 2**20
    with requests.Session() as s:
        r = s.post(url, data=b" " * (limit + 16 * 2**20), timeout=60)  # with Content-Length
        assert r.status_code == 413, r.text[:200]
        assert r.headers["Content-Type"].startswith("application/json")
        assert "larger than the limit" in r.json()["error"]

        def chunks():  # chunked: no Content-Length, 3x the limit
            block = b" " * 2**20
            for _ in range(3 * 64):
                yield block

        r = s.post(url, data=chunks(), timeout=60)
        assert r.status_code == 413 and set(r.json()) == {"error"}
        r = s.post(url, json={"instances": [2.0]}, timeout=20)
        assert r.status_code == 200 and r.json() == {"predictions": [3.0]}


@pytest.mark.parametrize("case", ["HEAD", "TRACE", "PUT", "long_url", "big_headers"])
def test_errors_are_json(proc, case):
    url = proc["url"] + "/v1/models/hp2"
    headers = {}
    method = case if case.isupper() else "GET"
    if case == "long_url":
        url += "/versions/1?" + "q" * 20_000
    if case == "big_headers":
        headers = {f"x-h{i}": "v" * 1000 for i in range(100)}
    r = requests.request(method, url, headers=headers, timeout=20)
    want = {"HEAD": 400, "TRACE": 400, "PUT": 400, "long_url": 414, "big_headers": 431}[case]
    assert r.status_code == want, (r.status_code, r.text[:200])
    assert r.headers["Content-Type"].startswith("application/json")
    if method != "HEAD":  # a HEAD answer carries no body
        assert set(r.json()) == {"error"} and r.json()["error"]


def test_a_grpc_deadline_stops_the_computation(proc):
    def count(g):
        return int(g.predict("work", {"dummy": np.zeros(1, np.float32)},
                             signature_name="count")["count"][0])

    with GrpcClient(proc["grpc"], timeout=20, retries=0) as g, \
            GrpcClient(proc["grpc"], timeout=0.1, retries=0) as short:
        assert int(g.predict("work", {"n": np.array([1000], np.int64)},
                             signature_name="spin")["done"][0]) == 1000
        start = time.monotonic()
        with pytest.raises(ServingError) as e:
            short.predict("work", {"n": np.array([2**62], np.int64)}, signature_name="spin")
        assert e.value.code == "DEADLINE_EXCEEDED"
        assert time.monotonic() - start < 2
        time.sleep(0.5)  # the server's run ends at its RunOptions timeout
        first = count(g)
        time.sleep(1.0)
        assert count(g) == first, "the loop kept running after the deadline"
        cpu = proc["process"].cpu_times()
        time.sleep(1.0)
        spent = sum(proc["process"].cpu_times()[:2]) - sum(cpu[:2])
        assert spent < 0.3, f"the server used {spent:.2f} s of CPU in 1 s while idle"
