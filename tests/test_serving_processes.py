"""``ksuite serve --num_server_processes=2``: two server processes share the REST and gRPC ports,
the Prometheus page adds up both, a reload reaches both, a version published while serving
fails no request, and stopping (or killing) the supervisor leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("tensorflow_serving")
psutil = pytest.importorskip("psutil")

from serving.client import GrpcClient
from tests.test_serving_tfserving import half_plus_two

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
LATENCY = ":tensorflow:serving:request_latency"

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="SO_REUSEPORT load balancing (Linux)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``python -m serving.server`` with two server processes over ``base``."""

    def __init__(self, base: Path, tmp: Path, *extra: str):
        self.grpc_port, self.rest_port = free_port(), free_port()
        mon = tmp / "monitoring.config"
        mon.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
        self.err = open(tmp / "server.log", "w+")  # noqa: SIM115 - open while it runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.server", f"--port={self.grpc_port}",
             f"--rest_api_port={self.rest_port}", "--model_name=half_plus_two",
             f"--model_base_path={base}", "--file_system_poll_wait_seconds=0.2",
             f"--monitoring_config_file={mon}", "--num_server_processes=2", *extra],
            cwd=REPO, env=ENV, stdout=self.err, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.rest_port}"
        deadline = time.monotonic() + 150
        while "(2 server processes)" not in self.log():
            assert self.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, "server did not come up:\n" + self.log()[-3000:]
            time.sleep(0.2)
        self.workers = psutil.Process(self.proc.pid).children()

    def log(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def page(self) -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        r = requests.get(self.url + "/monitoring/prometheus/metrics", timeout=20)
        assert r.status_code == 200
        return {f.name: f for f in text_string_to_metric_families(r.text)}

    def predict(self, x: float) -> float:
        with requests.Session() as s:  # a new connection: any process may take it
            r = s.post(self.url + "/v1/models/half_plus_two:predict",
                       json={"instances": [x]}, timeout=20)
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for w in self.workers:
            try:
                w.wait(10)
            except psutil.TimeoutExpired:
                w.kill()
        self.err.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("procs")
    half_plus_two(tmp / "models" / "half_plus_two" / "1")
    half_plus_two(tmp / "staging" / "2", b=3.0)  # published by a test
    server = Served(tmp / "models" / "half_plus_two", tmp, f"--grpc_socket_path={tmp / 'g.sock'}")
    server.tmp = tmp
    yield server
    server.stop()


def pids_by_process(served) -> dict[int, set]:
    """Each worker's pid -> the model versions it has counted (its own metric files)."""
    env = served.workers[0].environ()["KSUITE_SERVING_WORKER"]
    folder = Path(env.split(",")[2]) / "metrics"
    return {w.pid: {p.name for p in folder.glob(f"*_{w.pid}.db")} for w in served.workers}


def test_two_processes_answer_on_one_port_and_the_page_adds_them_up(served):
    assert len(served.workers) == 2
    for w in served.workers:  # both listen on both ports
        ports = {c.laddr.port for c in w.net_connections("tcp") if c.status == "LISTEN"}
        assert {served.rest_port, served.grpc_port} <= ports
    before = served.page()

    def count(families, status="OK"):
        fam = families.get(":tensorflow:serving:request_count")
        return sum(s.value for s in fam.samples if s.labels == {
            "model_name": "half_plus_two", "status": status}) if fam else 0

    n = 40
    for i in range(n):
        assert served.predict(float(i)) in (0.5 * i + 2.0, 0.5 * i + 3.0)
    for target in [f"127.0.0.1:{served.grpc_port}"] * 3 + [f"unix:{served.tmp / 'g.sock'}"]:
        with GrpcClient(target, timeout=20, retries=0) as g:  # the socket: process 0's
            g.predict("half_plus_two", {"x": np.ones((1, 1), np.float32)})
    after = served.page()
    assert count(after) - count(before) == n + 4  # one page for both processes
    fam = after[":tensorflow:serving:request_count"]
    assert fam.type == "unknown" and fam.documentation == "The total number of requests."
    rest = [s.value for s in after[LATENCY].samples if s.name == LATENCY + "_count"
            and s.labels["entrypoint"] == "REST" and s.labels["API"] == "predict"]
    assert sum(rest) >= n
    files = pids_by_process(served)
    assert all(any(name.startswith("counter_") for name in names) for names in files.values()), \
        files  # each process counted some of the requests


def test_a_reload_reaches_every_process(served):
    from tensorflow_serving.config import model_server_config_pb2 as pb

    config = pb.ModelServerConfig()
    mc = config.model_config_list.config.add()
    mc.name, mc.base_path, mc.model_platform = ("half_plus_two",
                                                str(served.tmp / "models" / "half_plus_two"),
                                                "tensorflow")
    mc.version_labels["stable"] = 1
    with GrpcClient(f"127.0.0.1:{served.grpc_port}", timeout=60, retries=0) as g:
        g.reload_config(config)
    for _ in range(12):  # new connections: both processes know the label
        with requests.Session() as s:
            r = s.post(served.url + "/v1/models/half_plus_two/labels/stable:predict",
                       json={"instances": [2.0]}, timeout=20)
        assert r.status_code == 200, r.text


def test_a_version_published_while_serving_fails_no_request(served):
    failures, answers, stop = [], [], threading.Event()

    def rest_loop():
        while not stop.is_set():
            try:
                answers.append(served.predict(2.0))
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                failures.append(repr(exc))

    def grpc_loop():
        with GrpcClient(f"127.0.0.1:{served.grpc_port}", timeout=20, retries=0) as g:
            while not stop.is_set():
                try:
                    answers.append(float(g.predict(
                        "half_plus_two", {"x": np.full((1, 1), 2.0, np.float32)})["y"][0, 0]))
                except Exception as exc:  # noqa: BLE001
                    failures.append(repr(exc))

    threads = [threading.Thread(target=f) for f in (rest_loop, rest_loop, grpc_loop)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        os.rename(served.tmp / "staging" / "2", served.tmp / "models" / "half_plus_two" / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            recent = answers[-20:]
            if len(recent) == 20 and set(recent) == {4.0}:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert set(answers) <= {3.0, 4.0} and answers[-20:] == [4.0] * 20  # version 2 everywhere


def test_sigterm_stops_every_process(served):
    workers = list(served.workers)
    assert served.stop() == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_killing_the_supervisor_leaves_no_orphan(tmp_path):
    half_plus_two(tmp_path / "models" / "half_plus_two" / "1")
    server = Served(tmp_path / "models" / "half_plus_two", tmp_path)
    folder = Path(server.workers[0].environ()["KSUITE_SERVING_WORKER"].split(",")[2])
    try:
        assert server.predict(2.0) == 3.0
        server.proc.kill()  # SIGKILL: the supervisor cannot stop them itself
        server.proc.wait()
        _, alive = psutil.wait_procs(server.workers, timeout=30)
        assert not alive, [p.pid for p in alive]
        assert not folder.exists()
    finally:
        server.stop()


def test_startup_errors_are_reported_once(tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text("model_config_list { config { nam: 'x' } }")
    r = subprocess.run([sys.executable, "-m", "serving.server", "--port=0",
                        f"--rest_api_port={free_port()}", f"--model_config_file={cfg}",
                        "--num_server_processes=2"], check=False, cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("error:") == 1 and "invalid ModelServerConfig" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "serving.server", "--port=0",
                            f"--rest_api_port={port}", "--model_base_path=/nonexistent/m",
                            "--num_server_processes=2"], check=False, cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: cannot listen for REST on 127.0.0.1:{port}: [Errno 98] Address already in use"]
