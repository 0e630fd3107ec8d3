"""Several server processes on the same ports (``--num_server_processes``).

One Python process serves REST and gRPC with threads that share one interpreter lock, so on a
machine with several cores it cannot use them all. With ``--num_server_processes=N`` (N > 1),
``ksuite serve`` becomes a supervisor that starts N copies of the server (workers). Each binds
the gRPC and REST ports with ``SO_REUSEPORT``, so the kernel spreads connections over them; each
loads the models and polls versions itself. The supervisor imports no TensorFlow: it checks the
flags and files, starts the workers, prints one banner once all are serving, forwards SIGTERM /
SIGINT, and stops them all when one of them exits. A worker stops when the supervisor's pipe
closes, so killing the supervisor leaves no orphan. Shared between the workers:

* the Prometheus page: ``prometheus_client``'s multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
  a folder of the supervisor's), so whichever worker answers the scrape reports every worker's
  counts, as TensorFlow Serving's single page does;
* ``HandleReloadConfigRequest``: the worker that receives it applies it and forwards it to the
  others over their private Unix sockets, and answers once all have applied it;
* ``--grpc_socket_path`` is served by worker 0 only (a Unix socket cannot be shared).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import UserError

log = logging.getLogger("serving.server")

WORKER_ENV = "KSUITE_SERVING_WORKER"  # "<index>,<count>,<folder>,<parent fd>,<ready fd>"
FORWARDED = "ksuite-forwarded"  # metadata key of a reload forwarded to a sibling worker


@dataclass
class Worker:
    """What a worker process knows of its place among the others."""

    index: int
    count: int
    folder: Path
    parent_fd: int = -1
    ready_fd: int = -1
    orphaned: bool = False  # the supervisor went away without stopping this process

    @staticmethod
    def from_env() -> Worker | None:
        value = os.environ.get(WORKER_ENV)
        if not value:
            return None
        index, count, folder, parent_fd, ready_fd = value.split(",", 4)
        return Worker(int(index), int(count), Path(folder), int(parent_fd), int(ready_fd))

    def control_socket(self, index: int | None = None) -> Path:
        return self.folder / f"worker-{self.index if index is None else index}.sock"

    @property
    def metrics_folder(self) -> Path:
        return self.folder / "metrics"

    def siblings(self) -> list[Path]:
        return [self.control_socket(i) for i in range(self.count) if i != self.index]

    def cleanup(self) -> None:
        """After a stop: remove the supervisor's folder when the supervisor could not."""
        if self.orphaned:
            shutil.rmtree(self.folder, ignore_errors=True)

    def report(self, kind: str, text: str) -> None:
        """Tell the supervisor "ready" (with the banner) or "error" (with the message)."""
        if self.ready_fd >= 0:
            try:
                os.write(self.ready_fd, f"{kind}\t{text}\n".encode())
            except OSError:
                pass

    def watch_parent(self, stop: threading.Event) -> None:
        """Set ``stop`` when the supervisor is gone (its end of the pipe closes)."""
        def watch():
            try:
                while os.read(self.parent_fd, 1):
                    pass
            except OSError:
                pass
            log.info("supervisor gone, shutting down")
            self.orphaned = True
            stop.set()

        threading.Thread(target=watch, name="serving-parent-watch", daemon=True).start()

    def forward_reload(self, request, timeout: float | None) -> None:
        """Apply a HandleReloadConfigRequest in every other worker; the first failure is raised
        as the ServingError it answered."""
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc

        from serving import ServingError

        def one(path: Path):
            with grpc.insecure_channel(f"unix:{path}") as channel:
                stub = model_service_pb2_grpc.ModelServiceStub(channel)
                try:
                    stub.HandleReloadConfigRequest(request, timeout=timeout,
                                                   metadata=((FORWARDED, "1"),))
                except grpc.RpcError as exc:
                    return ServingError(exc.code().name, f"server process {path.stem}: "
                                        f"{exc.details()}")
            return None

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.count - 1)) as pool:
            errors = [e for e in pool.map(one, self.siblings()) if e is not None]
        if errors:
            raise errors[0]


def _check_port(host: str, port: int, what: str) -> None:
    """Fail early, as a single server would, when something already listens on the port (the
    workers bind it with SO_REUSEPORT, which would otherwise share it with that listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen for {what} on {host}:{port}: {exc}") from None


def _check_files(opts) -> None:
    """The startup errors every worker would hit, reported once by the supervisor."""
    if opts.model_config_file:
        from serving.config import read_model_config

        try:
            read_model_config(Path(opts.model_config_file))
        except OSError as exc:
            raise UserError(f"cannot read --model_config_file {opts.model_config_file}: "
                            f"{exc}") from None
    if opts.monitoring_config_file:
        from serving.server.monitoring import read_monitoring_config

        try:
            read_monitoring_config(opts.monitoring_config_file)
        except OSError as exc:
            raise UserError(f"cannot read --monitoring_config_file: {exc}") from None
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if opts.enable_batching:
        opts.batching()


def supervise(opts, argv: list[str], count: int) -> int:
    """Run ``count`` worker processes of ``python -m serving.server argv`` until SIGTERM/SIGINT
    or until one of them exits; the exit status is 0 after a requested stop."""
    if opts.port is not None:
        _check_port(opts.host, opts.port, "gRPC")
    if opts.rest_api_port is not None:
        _check_port(opts.host, opts.rest_api_port, "REST")
    _check_files(opts)
    folder = Path(tempfile.mkdtemp(prefix="ksuite-serve-"))
    (folder / "metrics").mkdir()
    parent_r, parent_w = os.pipe()  # the workers' read ends see EOF when this process is gone
    stop = threading.Event()
    procs: list[subprocess.Popen] = []
    readers: list[int] = []

    def on_signal(signum, _frame):
        log.info("received signal %d, stopping %d server processes", signum, count)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    try:
        for i in range(count):
            ready_r, ready_w = os.pipe()
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
                   WORKER_ENV: f"{i},{count},{folder},{parent_r},{ready_w}",
                   "PYTHONPATH": os.pathsep.join(filter(None, [
                       str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
            procs.append(subprocess.Popen([sys.executable, "-m", "serving.server", *argv],
                                          env=env, pass_fds=(parent_r, ready_w)))
            os.close(ready_w)
            readers.append(ready_r)
        os.close(parent_r)
        parent_r = -1
        status = _wait_ready(procs, readers, stop)
        if status is not None:
            return status
        while not stop.wait(0.2):
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    print(f"error: server process {i} exited with status {p.returncode}; "
                          f"stopping the others", file=sys.stderr, flush=True)
                    return 1
        return 0
    finally:
        _stop_all(procs)
        for fd in readers + [parent_w] + ([parent_r] if parent_r >= 0 else []):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(procs, readers, stop) -> int | None:
    """Wait until every worker reports; print the banner, or the first error (once)."""
    import selectors

    sel = selectors.DefaultSelector()
    for i, fd in enumerate(readers):
        sel.register(fd, selectors.EVENT_READ, i)
    buffers = {i: b"" for i in range(len(readers))}
    banner = None
    waiting = set(range(len(readers)))
    while waiting and not stop.is_set():
        for key, _ in sel.select(0.2):
            i = key.data
            chunk = os.read(key.fd, 65536)
            buffers[i] += chunk
            if not chunk or b"\n" in buffers[i]:
                sel.unregister(key.fd)
                waiting.discard(i)
                kind, _, text = buffers[i].decode(errors="replace").partition("\t")
                if kind != "ready":
                    if kind == "error":
                        print(f"error: {text.strip()}", file=sys.stderr, flush=True)
                        return 2
                    procs[i].wait()
                    print(f"error: server process {i} exited with status "
                          f"{procs[i].returncode} before serving", file=sys.stderr, flush=True)
                    return 1
                if banner is None:
                    banner = text.strip()
    sel.close()
    if stop.is_set():
        return 0
    print(f"{banner} ({len(procs)} server processes)", file=sys.stderr, flush=True)
    return None


def _stop_all(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
