"""Load test of the serving path on loopback (issue 26): 32 concurrent clients send N requests per
protocol (REST and gRPC) to the MNIST model, with server-side batching off and on; then the same
again while a new model version is published mid-run.

The server (``python -m serving.server``, the local TF-Serving stand-in, with
``serving/monitoring.config`` and ``--num_server_processes``) runs in its own processes over a
temporary copy of the model's newest version; the load generator runs in ``--client-processes``
processes (so the clients' own interpreter lock and scheduling delays do not stretch their
latencies) at a higher scheduling priority than the server (``--client-priority``: on shared
cores a client that waits for a core before it reads its answer would time the wait, which no
server can see), each one asyncio loop (keep-alive HTTP/1.1 connections for REST, ``grpc.aio``
channels for gRPC). Each request carries one 28x28 uint8 digit. Only 127.0.0.1 is used.

For every (batching, phase, protocol) it prints requests, errors, the clients' p50/p99 and the
p50/p99 the server's own Prometheus histogram (``:tensorflow:serving:request_latency``, scraped
before and after the run, interpolated within its buckets) reports, with their ratio, and appends
one JSON record to ``benchmarks/results/serving_load.jsonl``. In the ``publish`` phase a new
version folder is renamed into the base path once half of the requests are sent; failed requests
are counted and the versions gRPC answers from are recorded.

    python -m benchmarks.serving_load                            # 50,000 requests per protocol
    python -m benchmarks.serving_load --requests 2000 --batching on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.side import Side  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.errors import UserError, exit_on_user_error
from shared.runs import cpu_model, library_versions

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "serving_load.jsonl"
REQUEST_TIMEOUT = 10.0
LATENCY = ":tensorflow:serving:request_latency"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -------------------------------------------------------------------------------------------------
# server process
# -------------------------------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, model_name: str, base_path: Path, batching: bool, params_file: str | None,
                 extra: list[str], processes: int = 1):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open while the server runs
            "w+", prefix="serving_load_", suffix=".log",
                                               delete=False)
        cmd = [sys.executable, "-m", "serving.server", f"--port={self.grpc_port}",
               f"--rest_api_port={self.rest_port}", f"--model_name={model_name}",
               f"--model_base_path={base_path}", "--host=127.0.0.1",
               "--file_system_poll_wait_seconds=1",
               f"--monitoring_config_file={REPO / 'serving' / 'monitoring.config'}",
               f"--num_server_processes={processes}", *extra]
        if batching:
            cmd.append("--enable_batching")
            if params_file:
                cmd.append(f"--batching_parameters_file={params_file}")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=self.log)
        self.model_name = model_name

    def wait_ready(self, timeout: float = 180.0) -> dict:
        url = f"http://127.0.0.1:{self.rest_port}/v1/models/{self.model_name}"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise UserError(f"server exited ({self.proc.returncode}); log: {self.log.name}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                time.sleep(0.25)
        raise UserError(f"server did not come up within {timeout:.0f} s; log: {self.log.name}")

    def latency_buckets(self, entrypoint: str) -> list[tuple[float, float]]:
        """(upper bound in microseconds, cumulative count) of the server's request_latency
        histogram for one entrypoint (REST or GRPC), summed over its other labels."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        sums: dict[float, float] = {}
        for fam in text_string_to_metric_families(text):
            if fam.name != LATENCY:
                continue
            for smp in fam.samples:
                if smp.name.endswith("_bucket") and smp.labels.get("entrypoint") == entrypoint:
                    le = float(smp.labels["le"])
                    sums[le] = sums.get(le, 0.0) + smp.value
        return sorted(sums.items())

    def _tree(self) -> list:
        import psutil

        try:
            top = psutil.Process(self.proc.pid)
            return [top, *top.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server's processes have used."""
        import psutil

        total = None
        for p in self._tree():
            try:
                t = p.cpu_times()
                total = (total or 0.0) + t.user + t.system
            except psutil.Error:
                pass
        return total

    def peak_rss_mb(self) -> float | None:
        """The sum of the server processes' peak resident sizes."""
        total = None
        for p in self._tree():
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total = (total or 0.0) + int(line.split()[1]) / 1024
            except OSError:
                pass
        return None if total is None else round(total, 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.proc.returncode == 0:  # keep the log of a server that failed
            os.unlink(self.log.name)


# -------------------------------------------------------------------------------------------------
# load generators
# -------------------------------------------------------------------------------------------------


class Recorder:
    """Latencies and errors of one run of ``total`` requests (the first ``warmup`` unrecorded);
    ``on_half`` is called once when half of the recorded requests have been sent."""

    def __init__(self, total: int, warmup: int = 0, on_half=None, progress=None):
        self.total, self.warmup = total + warmup, warmup
        self.progress = progress  # a multiprocessing.Value counting sent requests
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.versions: set[int] = set()
        self.sent = 0
        self.on_half = on_half
        self.started = self.finished = 0.0

    def running(self) -> bool:
        if self.sent == self.warmup:
            self.started = time.perf_counter()
        if self.on_half is not None and self.sent >= self.warmup + (self.total -
                                                                     self.warmup) // 2:
            self.on_half, fn = None, self.on_half
            fn()
        if self.progress is not None and self.sent > self.warmup:
            with self.progress.get_lock():
                self.progress.value += 1
        return self.sent < self.total

    def record(self, index: int, started: float, ok: bool, detail: str = "") -> None:
        self.finished = time.perf_counter()
        if index < self.warmup:
            return
        if ok:
            self.latencies.append(self.finished - started)
        else:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(detail[:300])


def _bodies(model: str, n: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [json.dumps({"instances": rng.integers(0, 256, (1, 28, 28)).tolist()},
                       separators=(",", ":")).encode() for _ in range(n)]


async def _rest_client(port: int, model: str, bodies: list[bytes], rec: Recorder) -> None:
    path = f"/v1/models/{model}:predict"
    heads = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
              f"application/json\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b
             for b in bodies]
    reader = writer = None
    i = random.randrange(len(heads))
    checked = False
    while rec.running():
        i = (i + 1) % len(heads)
        index, rec.sent = rec.sent, rec.sent + 1
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(heads[i])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT)
            ok = status == 200
            if ok and not checked:  # check one answer per client in full
                ok = len(json.loads(body)["predictions"]) == 1
                checked = True
            rec.record(index, started, ok, f"HTTP {status}: {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            rec.record(index, started, False, f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _grpc_clients(port: int, model: str, clients: int, rec: Recorder) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    rng = np.random.default_rng(0)
    requests = []
    for _ in range(64):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        req.inputs["images"].CopyFrom(
            tf.make_tensor_proto(rng.integers(0, 256, (1, 28, 28), dtype=np.uint8)))
        requests.append(req)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}")
                for _ in range(max(1, clients // 8))]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]

    async def one(k: int) -> None:
        stub = stubs[k % len(stubs)]
        i = random.randrange(len(requests))
        while rec.running():
            i = (i + 1) % len(requests)
            index, rec.sent = rec.sent, rec.sent + 1
            started = time.perf_counter()
            try:
                resp = await stub.Predict(requests[i], timeout=REQUEST_TIMEOUT)
                rec.versions.add(resp.model_spec.version.value)
                rec.record(index, started,
                           resp.outputs["classes"].tensor_shape.dim[0].size == 1, "bad answer")
            except grpc.aio.AioRpcError as exc:
                rec.record(index, started, False, f"{exc.code().name}: {exc.details()}")

    try:
        await asyncio.gather(*(one(k) for k in range(clients)))
    finally:
        for c in channels:
            await c.close()


def run_load(protocol: str, port: int, model: str, clients: int, requests: int,
             warmup: int, on_half=None, progress=None) -> Recorder:
    if protocol == "grpc":  # import before the clock starts (TensorFlow takes seconds)
        import grpc  # noqa: F401
        import tensorflow  # noqa: F401
        from tensorflow_serving.apis import predict_pb2  # noqa: F401
    rec = Recorder(requests, warmup, on_half, progress)

    async def main():
        if protocol == "rest":
            bodies = _bodies(model)
            await asyncio.gather(*(_rest_client(port, model, bodies, rec)
                                   for _ in range(clients)))
        else:
            await _grpc_clients(port, model, clients, rec)

    asyncio.run(main())
    return rec


def raise_priority(steps: int) -> int:
    """Lower this process's nice value by ``steps`` (a higher scheduling priority); returns the
    steps it got (0 where the system refuses, e.g. without the privilege)."""
    if steps <= 0 or not hasattr(os, "nice"):
        return 0
    try:
        before = os.nice(0)
        return before - os.nice(-steps)
    except OSError:
        return 0


def _client_process(protocol, port, model, clients, requests, warmup, ready, go, progress,
                    results, priority=0) -> None:
    """One load-generating process: warm up, wait for ``go``, send ``requests``, report."""
    try:
        got = raise_priority(priority)
        run_load(protocol, port, model, clients, 0, warmup)
        ready.release()
        go.wait()
        cpu = time.process_time()
        rec = run_load(protocol, port, model, clients, requests, 0, progress=progress)
        results.put({"latencies": rec.latencies, "errors": rec.errors,
                     "error_samples": rec.error_samples, "versions": sorted(rec.versions),
                     "started": rec.started, "finished": rec.finished,
                     "cpu": time.process_time() - cpu, "priority": got})
    except BaseException as exc:  # noqa: BLE001 - the parent must hear about it
        ready.release()
        results.put({"failure": f"{type(exc).__name__}: {exc}"})


class Load:
    """The clients of one run in ``processes`` processes: ``clients`` and ``requests`` are split
    between them. ``start()`` returns once all are warmed up; ``run(on_half)`` lets them go."""

    def __init__(self, protocol, port, model, clients, requests, warmup, processes,
                 priority=0):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # grpc does not survive fork
        n = max(1, min(processes, clients))
        self.requests = requests
        self.ready, self.go = ctx.Semaphore(0), ctx.Event()
        self.progress, self.results = ctx.Value("l", 0), ctx.Queue()

        def split(total: int, i: int) -> int:
            return total // n + (1 if i < total % n else 0)

        self.procs = [ctx.Process(target=_client_process, daemon=True, args=(
            protocol, port, model, split(clients, i), split(requests, i), split(warmup, i),
            self.ready, self.go, self.progress, self.results, priority)) for i in range(n)]

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.ready.acquire()

    def run(self, on_half=None) -> dict:
        self.go.set()
        if on_half is not None:
            while self.progress.value < self.requests // 2 and \
                    any(p.is_alive() for p in self.procs):
                time.sleep(0.002)
            on_half()
        parts = [self.results.get() for _ in self.procs]
        for p in self.procs:
            p.join()
        failed = [r["failure"] for r in parts if "failure" in r]
        if failed:
            raise UserError(f"a load process failed: {failed[0]}")
        return {"latencies": [x for r in parts for x in r["latencies"]],
                "errors": sum(r["errors"] for r in parts),
                "error_samples": [x for r in parts for x in r["error_samples"]][:5],
                "versions": sorted({v for r in parts for v in r["versions"]}),
                "seconds": max(r["finished"] for r in parts) - min(r["started"] for r in parts),
                "cpu": sum(r["cpu"] for r in parts),
                "priority": min(r["priority"] for r in parts)}


def histogram_quantile(q: float, before: list, after: list) -> float | None:
    """The q-quantile (ms) of the observations between two scrapes of a cumulative histogram
    (microsecond buckets), interpolated linearly within its bucket as Prometheus does."""
    start = dict(before)
    buckets = [(le, count - start.get(le, 0.0)) for le, count in after]
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if le == float("inf"):
                return lower / 1000
            share = (rank - below) / (cum - below) if cum > below else 1.0
            return (lower + (le - lower) * share) / 1000
        lower, below = le, cum
    return lower / 1000


class Publisher:
    """A temporary base path holding a copy of the model's newest version; ``publish()`` renames
    a staged copy in as the next version (one atomic rename, as an exporter does)."""

    def __init__(self, source: Path):
        newest = max((c for c in source.iterdir() if c.name.isdigit()), key=lambda c: int(c.name))
        self.root = Path(tempfile.mkdtemp(prefix="serving_load_"))
        self.base = self.root / source.name
        self.version = int(newest.name)
        shutil.copytree(newest, self.base / str(self.version))
        self.published: list[tuple[int, float]] = []

    def stage(self) -> Path:
        staged = self.root / "staging" / str(self.version + 1)
        if not staged.exists():
            shutil.copytree(self.base / str(self.version), staged)
        return staged

    def publish(self) -> None:
        staged = self.stage()
        self.version += 1
        os.rename(staged, self.base / str(self.version))
        self.published.append((self.version, time.perf_counter()))

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_load",
        description="Loopback load test of the serving path (local TF-Serving-compatible "
                    "server in a separate process): client and server-histogram p50/p99, "
                    "requests/s and errors for REST and gRPC, batching off and on, then again "
                    "while a new version is published.")
    p.add_argument("--model-base-path", default="saved_models/mnist_mlp",
                   help="the MNIST model's base path, <path>/<version>/; its newest version is "
                        "copied to a temporary folder (default: %(default)s)")
    p.add_argument("--model-name", default="mnist_mlp")
    p.add_argument("--clients", type=int, default=32,
                   help="concurrent clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=50_000,
                   help="measured requests per protocol and phase (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=500,
                   help="unmeasured requests before each run (default: %(default)s)")
    p.add_argument("--protocols", nargs="+", choices=("rest", "grpc"), default=["rest", "grpc"])
    p.add_argument("--batching", nargs="+", choices=("off", "on"), default=["off", "on"])
    p.add_argument("--phases", nargs="+", choices=("steady", "publish"),
                   default=["steady", "publish"])
    p.add_argument("--batching-parameters-file", default=str(REPO / "serving" / "batching.config"),
                   help="for batching on (default: serving/batching.config)")
    p.add_argument("--server-processes", type=int, default=2,
                   help="the server's --num_server_processes (default: %(default)s)")
    p.add_argument("--client-processes", type=int, default=2,
                   help="processes the clients are spread over (default: %(default)s)")
    p.add_argument("--client-priority", type=int, default=5,
                   help="nice steps the client processes run above the server, so that on "
                        "shared cores they time requests promptly (0: same priority)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra flag for the server, e.g. --server-arg=--rest_api_num_threads=16")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT),
                   help="JSON-lines file to append to (default: benchmarks/results/"
                        "serving_load.jsonl; '' to skip)")
    return p


def _ms(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def measure(server: ServerProcess, protocol: str, args, publisher: Publisher | None) -> dict:
    """One run: the clients' and the server's latency percentiles, errors, versions."""
    port = server.rest_port if protocol == "rest" else server.grpc_port
    entry = "REST" if protocol == "rest" else "GRPC"
    load = Load(protocol, port, args.model_name, args.clients, args.requests, args.warmup,
                args.client_processes, args.client_priority)
    load.start()
    before = server.latency_buckets(entry)
    if publisher is not None:
        publisher.stage()
    server_cpu = server.cpu_seconds()
    r = load.run(publisher.publish if publisher is not None else None)
    client_cpu = r["cpu"]
    server_cpu = server.cpu_seconds() - server_cpu if server_cpu is not None else None
    after = server.latency_buckets(entry)
    lat = np.array(r["latencies"]) * 1000
    seconds = r["seconds"]
    out = {"requests": len(lat) + r["errors"], "errors": r["errors"],
           "client_priority_raised_by": r["priority"],
           "seconds": round(seconds, 3),
           "rps": round(len(lat) / seconds, 1) if seconds > 0 else None}
    # The clients' latencies put in the server's buckets and read the same way: the histogram's
    # buckets grow by 1.8x, so its interpolated quantiles can be off by more than 10% by
    # themselves; this ratio compares the spans measured, not the resolution.
    bounds = [le for le, _ in after]
    binned = [(le, float(np.count_nonzero(lat * 1000 <= le))) for le in bounds]
    for q in (50, 99):
        client = float(np.percentile(lat, q)) if len(lat) else None
        srv = histogram_quantile(q / 100, before, after)
        out[f"p{q}_ms"], out[f"server_p{q}_ms"] = _ms(client), _ms(srv)
        out[f"server_to_client_p{q}"] = round(srv / client, 3) if client and srv else None
        same = histogram_quantile(q / 100, [], binned) if len(lat) else None
        out[f"client_binned_p{q}_ms"] = _ms(same)
        out[f"server_to_client_binned_p{q}"] = round(srv / same, 3) if same and srv else None
    # CPU per request and share of one core over the run, of the clients' processes and of the
    # server's: with both on the same few cores the clients' own time is part of their latency.
    n = max(1, out["requests"])
    out["client_cpu_ms_per_request"] = round(1000 * client_cpu / n, 3)
    out["client_cpu_cores"] = round(client_cpu / seconds, 3) if seconds > 0 else None
    if server_cpu is not None:
        out["server_cpu_ms_per_request"] = round(1000 * server_cpu / n, 3)
        out["server_cpu_cores"] = round(server_cpu / seconds, 3) if seconds > 0 else None
    out["server_histogram_count"] = (after[-1][1] - dict(before).get(after[-1][0], 0)
                                     if after else 0)
    if protocol == "grpc":
        out["versions_answered"] = r["versions"]
    if r["error_samples"]:
        out["error_samples"] = r["error_samples"]
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = Path(args.model_base_path)
    if not source.is_absolute():
        source = (Path.cwd() / source).resolve()
    if not source.is_dir() or not any(c.name.isdigit() and (c / "saved_model.pb").exists()
                                      for c in source.iterdir()):
        raise UserError(f"no SavedModel version under {args.model_base_path}: export the MNIST "
                        "model first (python -m apps.mnist_mlp.train) or pass --model-base-path")
    params = None
    if "on" in args.batching:
        from serving.batching import BatchingParameters

        params = BatchingParameters.from_file(args.batching_parameters_file).__dict__
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}
    libs = library_versions("grpcio", "tornado", "protobuf", "prometheus_client")
    print(f"{'batching':>8} {'phase':>7} {'protocol':>8} {'requests':>8} {'errors':>6} "
          f"{'p50 ms':>7} {'srv p50':>7} {'ratio':>5} {'binned':>6} {'p99 ms':>7} {'srv p99':>7} "
          f"{'ratio':>5} {'binned':>6} {'req/s':>7} {'load':>5}")
    records = []
    for batching in args.batching:
        publisher = Publisher(source)
        server = ServerProcess(args.model_name, publisher.base, batching == "on",
                               args.batching_parameters_file, args.server_arg,
                               args.server_processes)
        try:
            server.wait_ready()
            for phase in args.phases:
                for protocol in args.protocols:
                    load0 = os.getloadavg()[0]
                    first = publisher.version
                    r = measure(server, protocol, args,
                                publisher if phase == "publish" else None)
                    record = {
                        "app": "serving", "benchmark": "serving_load", "phase": phase,
                        "protocol": protocol, "clients": args.clients,
                        "client_processes": min(args.client_processes, args.clients),
                        "server_processes": args.server_processes,
                        "batching": batching == "on", **r,
                        "model": args.model_name, "model_version": first,
                        "published_version": publisher.version if phase == "publish" else None,
                        "model_base_path": str(source),
                        "server_peak_rss_mb": server.peak_rss_mb(),
                        "instances_per_request": 1, "warmup_requests": args.warmup,
                        "batching_parameters": params if batching == "on" else None,
                        "server": "serving.server (local TF-Serving-compatible)",
                        "server_latency_source": f"{LATENCY} histogram, bucket-interpolated",
                        "machine": {**machine, "loadavg_1min_before": round(load0, 2),
                                    "loadavg_1min_after": round(os.getloadavg()[0], 2)},
                        "libraries": libs,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                    records.append(record)
                    print(f"{batching:>8} {phase:>7} {protocol:>8} {r['requests']:>8} "
                          f"{r['errors']:>6} {r['p50_ms'] or 0:>7.2f} "
                          f"{r['server_p50_ms'] or 0:>7.2f} {r['server_to_client_p50'] or 0:>5.2f} "
                          f"{r['server_to_client_binned_p50'] or 0:>6.2f} "
                          f"{r['p99_ms'] or 0:>7.2f} {r['server_p99_ms'] or 0:>7.2f} "
                          f"{r['server_to_client_p99'] or 0:>5.2f} "
                          f"{r['server_to_client_binned_p99'] or 0:>6.2f} {r['rps'] or 0:>7.1f} "
                          f"{load0:>5.2f}",
                          flush=True)
                    if args.output:
                        out = Path(args.output)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with out.open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(record) + "\n")
        finally:
            server.stop()
            publisher.close()
    total = sum(r["requests"] for r in records)
    errors = sum(r["errors"] for r in records)
    print(f"total: {total} requests, {errors} errors"
          + (f"; appended {len(records)} records to {args.output}" if args.output else ""))
    return 0 if errors == 0 else 1


def render(rows):
    """The report's serving section for these records: client percentiles beside the server's
    own request_latency histogram."""
    from benchmarks.report import table, when

    models = ", ".join(sorted({str(r["model"]) for r in rows if r.get("model")})) or "model ?"
    headers = ["date", "phase", "protocol", "clients", "server / client processes",
               "server batching", "requests", "errors",
               "requests/s", "client p50 / p99 ms", "server p50 / p99 ms", "server / client",
               "server / client, binned",
               "1-min load", "server peak RSS MB"]

    def pair(a, b, digits=1):
        return "–" if a is None or b is None else f"{a:.{digits}f} / {b:.{digits}f}"

    def load_of(r):
        value = (r.get("machine") or {}).get("loadavg_1min_before")
        return "–" if value is None else f"{value:.1f}"

    return ["## serving", "",
            f"Load test of the local TF-Serving-compatible server ({models}): closed-loop clients; "
            "`publish` renames a new version into the base path half-way through. 'binned': the "
            "clients' latencies put in the server histogram's buckets and read the same way (the "
            "buckets grow by 1.8x, so an interpolated p99 can be off by more than 10% by itself).",
            "",
            *table(headers, [[when(r), r.get("phase", "steady"), r.get("protocol", "–"),
                              r.get("clients"),
                              f"{r.get('server_processes', 1)} / {r.get('client_processes', 1)}",
                              {True: "on", False: "off"}.get(r.get("batching"), "–"),
                              r.get("requests"), r.get("errors"), r.get("rps"),
                              pair(r.get("p50_ms"), r.get("p99_ms")),
                              pair(r.get("server_p50_ms"), r.get("server_p99_ms")),
                              pair(r.get("server_to_client_p50"), r.get("server_to_client_p99"),
                                   2),
                              pair(r.get("server_to_client_binned_p50"),
                                   r.get("server_to_client_binned_p99"), 2),
                              load_of(r), r.get("server_peak_rss_mb")] for r in rows])]


SIDE = Side("serving_load", app="serving", render=render)


if __name__ == "__main__":
    sys.exit(main())
