"""Load test of the serving path on loopback: N concurrent clients for T seconds against the MNIST
model, over REST and gRPC, with server-side batching off and on.

The server (``python -m serving.server``, the local TF-Serving stand-in) runs in its own process;
the load generator is one asyncio loop in this process (keep-alive HTTP/1.1 connections for REST,
``grpc.aio`` channels for gRPC), so the two share the machine's cores but not a GIL. Each client
sends one 28x28 uint8 digit per request, back to back. Every loop is bounded in time
(``--seconds``) and in count (``--max-requests``), and only 127.0.0.1 is used.

For every (batching, protocol, clients) it prints p50/p99 latency, requests/s and errors, and
appends one JSON record to ``benchmarks/results/serving_load.jsonl``.

    python -m benchmarks.serving_load                          # 32 and 64 clients, 10 s each
    python -m benchmarks.serving_load --clients 32 --seconds 30 --protocols grpc --batching on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.runs import cpu_model, library_versions  # noqa: E402

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "serving_load.jsonl"
REQUEST_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -------------------------------------------------------------------------------------------------
# server process
# -------------------------------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, model_name: str, base_path: Path, batching: bool, params_file: str | None,
                 extra: list[str]):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serving_load_", suffix=".log",
                                               delete=False)
        cmd = [sys.executable, "-m", "serving.server", f"--port={self.grpc_port}",
               f"--rest_api_port={self.rest_port}", f"--model_name={model_name}",
               f"--model_base_path={base_path}", "--host=127.0.0.1", *extra]
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

    def peak_rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return None

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
    def __init__(self, warmup: float, seconds: float, max_requests: int):
        now = time.perf_counter()
        self.measure_start = now + warmup
        self.end = self.measure_start + seconds
        self.max_requests = max_requests
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.sent = 0  # every request, warm-up included (the count bound)

    def running(self) -> bool:
        return time.perf_counter() < self.end and self.sent < self.max_requests

    def record(self, started: float, ok: bool, detail: str = "") -> None:
        if started < self.measure_start:
            return
        if ok:
            self.latencies.append(time.perf_counter() - started)
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
        rec.sent += 1
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
            rec.record(started, ok, f"HTTP {status}: {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            rec.record(started, False, f"{type(exc).__name__}: {exc}")
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
            rec.sent += 1
            started = time.perf_counter()
            try:
                resp = await stub.Predict(requests[i], timeout=REQUEST_TIMEOUT)
                rec.record(started, resp.outputs["classes"].tensor_shape.dim[0].size == 1,
                           "bad answer")
            except grpc.aio.AioRpcError as exc:
                rec.record(started, False, f"{exc.code().name}: {exc.details()}")

    try:
        await asyncio.gather(*(one(k) for k in range(clients)))
    finally:
        for c in channels:
            await c.close()


def run_load(protocol: str, port: int, model: str, clients: int, seconds: float, warmup: float,
             max_requests: int) -> Recorder:
    if protocol == "grpc":  # import before the clock starts (TensorFlow takes seconds)
        import grpc  # noqa: F401
        import tensorflow  # noqa: F401
        from tensorflow_serving.apis import predict_pb2  # noqa: F401
    rec = Recorder(warmup, seconds, max_requests)

    async def main():
        if protocol == "rest":
            bodies = _bodies(model)
            await asyncio.gather(*(_rest_client(port, model, bodies, rec)
                                   for _ in range(clients)))
        else:
            await _grpc_clients(port, model, clients, rec)

    asyncio.run(main())
    return rec


# -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_load",
        description="Loopback load test of the serving path (local TF-Serving-compatible "
                    "server in a separate process): p50/p99 latency, requests/s and errors for "
                    "REST and gRPC, batching off and on.")
    p.add_argument("--model-base-path", default="saved_models/mnist_mlp",
                   help="the MNIST model's base path, <path>/<version>/ (default: %(default)s)")
    p.add_argument("--model-name", default="mnist_mlp")
    p.add_argument("--clients", type=int, nargs="+", default=[32, 64],
                   help="concurrent clients per run (default: 32 64)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="measured seconds per run (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="unmeasured seconds before each run (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=500_000,
                   help="bound on requests per run, warm-up included (default: %(default)s)")
    p.add_argument("--protocols", nargs="+", choices=("rest", "grpc"), default=["rest", "grpc"])
    p.add_argument("--batching", nargs="+", choices=("off", "on"), default=["off", "on"])
    p.add_argument("--batching-parameters-file", default=str(REPO / "serving" / "batching.config"),
                   help="for batching on (default: serving/batching.config)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra flag for the server, e.g. --server-arg=--rest_api_num_threads=16")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT),
                   help="JSON-lines file to append to (default: benchmarks/results/"
                        "serving_load.jsonl; '' to skip)")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = Path(args.model_base_path)
    if not base.is_absolute():
        base = (Path.cwd() / base).resolve()
    if not base.is_dir() or not any(c.name.isdigit() and (c / "saved_model.pb").exists()
                                    for c in base.iterdir()):
        raise UserError(f"no SavedModel version under {args.model_base_path}: export the MNIST "
                        "model first (python -m apps.mnist_mlp.train) or pass --model-base-path")
    params = None
    if "on" in args.batching:
        from serving.batching import BatchingParameters

        params = BatchingParameters.from_file(args.batching_parameters_file).__dict__
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}
    libs = library_versions("grpcio", "tornado", "protobuf")
    print(f"{'batching':>8} {'protocol':>8} {'clients':>7} {'requests':>9} {'errors':>6} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    records = []
    for batching in args.batching:
        server = ServerProcess(args.model_name, base, batching == "on",
                               args.batching_parameters_file, args.server_arg)
        try:
            status = server.wait_ready()
            version = max(int(s["version"]) for s in status["model_version_status"]
                          if s["state"] == "AVAILABLE")
            for protocol in args.protocols:
                port = server.rest_port if protocol == "rest" else server.grpc_port
                for clients in args.clients:
                    load0 = os.getloadavg()[0]
                    rec = run_load(protocol, port, args.model_name, clients, args.seconds,
                                   args.warmup, args.max_requests)
                    lat = np.array(rec.latencies) * 1000
                    n = len(lat)
                    measured = min(time.perf_counter(), rec.end) - rec.measure_start
                    record = {
                        "app": "serving", "protocol": protocol, "clients": clients,
                        "seconds": round(measured, 3), "batching": batching == "on",
                        "requests": n + rec.errors, "errors": rec.errors,
                        "p50_ms": round(float(np.percentile(lat, 50)), 3) if n else None,
                        "p99_ms": round(float(np.percentile(lat, 99)), 3) if n else None,
                        "rps": round(n / measured, 1) if measured > 0 else None,
                        "model": args.model_name, "model_version": version,
                        "model_base_path": str(base),
                        "server_peak_rss_mb": server.peak_rss_mb(),
                        "instances_per_request": 1,
                        "batching_parameters": params if batching == "on" else None,
                        "server": "serving.server (local TF-Serving-compatible)",
                        "machine": {**machine, "loadavg_1min_before": round(load0, 2)},
                        "libraries": libs,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                    if rec.error_samples:
                        record["error_samples"] = rec.error_samples
                    records.append(record)
                    print(f"{batching:>8} {protocol:>8} {clients:>7} {record['requests']:>9} "
                          f"{rec.errors:>6} {record['p50_ms'] or 0:>8.2f} "
                          f"{record['p99_ms'] or 0:>8.2f} {record['rps'] or 0:>8.1f}",
                          flush=True)
                    if args.output:
                        out = Path(args.output)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with out.open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(record) + "\n")
        finally:
            server.stop()
    total = sum(r["requests"] for r in records)
    errors = sum(r["errors"] for r in records)
    print(f"total: {total} requests, {errors} errors"
          + (f"; appended {len(records)} records to {args.output}" if args.output else ""))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
