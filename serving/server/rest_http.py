"""The REST front end on tornado: bodies streamed in (413 past the limit), small predicts handled
whole on a worker thread (the IO loop only reads and writes), large bodies parsed, and large
answers written, in a worker process
(json.loads or json.dumps of 50 MB holds the GIL for seconds, which would stall every other
request), models run on worker or batch threads, every answer JSON, metrics recorded per
request. A request's latency starts when its bytes reached the machine (the kernel's receive
timestamp), so the time it waits for the IO loop is measured too. After a large request the C
heap is trimmed, so its memory goes back to the system."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http import HTTPStatus

from serving.server.rest import api_of, decode_predict, encode_predict, error_body, model_of

log = logging.getLogger("serving.server")

# REST predict bodies up to this size are parsed on a worker thread; larger ones in the
# worker process.
INLINE_JSON_BYTES = 256 * 1024
# Outputs with more values than this are turned into JSON in the worker process.
INLINE_JSON_VALUES = 50_000
MAX_URL_BYTES = 16 * 1024
MAX_HEADER_BYTES = 64 * 1024

_ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT")


# The kernel's receive timestamp of the bytes a socket reads (Linux: SO_TIMESTAMPNS, a timespec
# of CLOCK_REALTIME in each recvmsg's ancillary data).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35) if sys.platform.startswith("linux") \
    else None
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if SO_TIMESTAMPNS else 0


def enable_arrival_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` receives (a listening socket passes it on to the
    connections it accepts)."""
    if SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def stamp_arrivals(stream) -> None:
    """Make a tornado IOStream note, in ``stream.arrival`` (``time.time()`` seconds), when the
    first bytes it reads after ``arrival`` was last cleared reached the machine: the kernel's
    receive timestamp, so the time a request waits in the socket buffer before the IO loop gets
    to it is measured too."""
    stream.arrival = None
    if not _ANCILLARY:
        return
    sock = stream.socket

    def read_from_fd(buf):
        try:
            n, ancillary, _, _ = sock.recvmsg_into([buf], _ANCILLARY)
        except BlockingIOError:
            return None
        finally:
            del buf
        if n and stream.arrival is None:
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and \
                        len(data) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    stream.arrival = sec + nsec * 1e-9
            if stream.arrival is None:
                stream.arrival = time.time()
        return n

    stream.read_from_fd = read_from_fd


def http_server(app, sockets, **kwargs):
    """tornado's HTTPServer over ``sockets``, whose connections note when each request's bytes
    reached the machine (``stamp_arrivals``)."""
    import tornado.httpserver

    class StampingHTTPServer(tornado.httpserver.HTTPServer):
        def handle_stream(self, stream, address):
            stamp_arrivals(stream)
            return super().handle_stream(stream, address)

    for sock in sockets:
        enable_arrival_stamps(sock)
    server = StampingHTTPServer(app, **kwargs)
    server.add_sockets(sockets)
    return server


def arrival_start(stream) -> float:
    """The ``time.perf_counter()`` value of the stream's noted arrival (now when none), which it
    then forgets."""
    now = time.perf_counter()
    arrival = getattr(stream, "arrival", None)
    if arrival is None:
        return now
    stream.arrival = None
    return now - min(max(0.0, time.time() - arrival), 60.0)


_LIBC = None


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``; a no-op
    elsewhere). Freed large buffers otherwise stay in the process's resident set."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)  # ctypes releases the GIL during the call


def _decode_in_worker(body: bytes, specs: dict):
    try:
        return decode_predict(body, specs)
    finally:
        del body
        trim_heap()


def _encode_in_worker(outputs: dict, columnar: bool) -> bytes:
    try:
        return encode_predict(outputs, columnar)
    finally:
        del outputs
        trim_heap()


def _noop() -> None:
    return None


class ParsePool:
    """One worker process (spawned on first use) that parses large JSON bodies and writes large
    JSON answers."""

    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _submit(self, fn, *args):
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            future = self._pool.submit(fn, *args)
            # The queue's feeder thread (and the worker's loop) keep a reference to the last
            # message they handled; a small message after a large one lets the large one go.
            future.add_done_callback(self._flush)
            return future

    def _flush(self, _future) -> None:
        with self._lock:
            if self._pool is not None:
                try:
                    self._pool.submit(_noop)
                except RuntimeError:  # shutting down
                    pass

    def submit(self, body: bytes, specs: dict):
        """A Future of ``decode_predict(body, specs)``."""
        return self._submit(_decode_in_worker, body, specs)

    def encode(self, outputs: dict, columnar: bool):
        """A Future of the JSON answer (bytes) of these predict outputs."""
        return self._submit(_encode_in_worker, outputs, columnar)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


async def outputs_reply(api, plan, loop, pool, parse_pool, deadline) -> tuple[int, bytes]:
    """Run a planned predict off the IO loop and answer its JSON (written in the worker
    process when the outputs are large)."""
    servable, sig, inputs, columnar = plan
    service = api.service
    if service.core.batcher is not None:
        outputs = await asyncio.wrap_future(service.submit(servable, sig, inputs))
    else:
        outputs = await loop.run_in_executor(pool, service.call, servable, sig, inputs,
                                             "Predict", deadline)
    if service.logs.wants(servable.name):
        await loop.run_in_executor(pool, api.log_predict, servable, sig, inputs, outputs)
    del plan, inputs
    if sum(v.size for v in outputs.values()) > INLINE_JSON_VALUES:
        return 200, await asyncio.wrap_future(parse_pool.encode(outputs, columnar))
    return 200, encode_predict(outputs, columnar)


def small_predict(api, servable, body: bytes, deadline) -> tuple:
    """A predict with a small body, whole on one worker thread (parse, run, log, answer), so the
    IO loop only reads requests and writes answers: ``(200, json bytes)``, or ``(None, outputs,
    columnar)`` when the outputs are large enough to be written in the worker process."""
    servable, sig, inputs, columnar = api.finish_plan(
        servable, decode_predict(body, api.specs_of(servable)))
    del body
    outputs = api.service.run(servable, sig, inputs, deadline)
    api.log_predict(servable, sig, inputs, outputs)
    del inputs
    if sum(v.size for v in outputs.values()) > INLINE_JSON_VALUES:
        return None, outputs, columnar
    return 200, encode_predict(outputs, columnar)


def make_rest_handler(server):
    """The tornado RequestHandler class for ``server`` (a ModelServer)."""
    import tornado.web

    from serving.server.service import map_error

    @tornado.web.stream_request_body
    class RestHandler(tornado.web.RequestHandler):
        SUPPORTED_METHODS = _ALL_METHODS
        limit = server.opts.max_request_bytes

        def compute_etag(self):
            return None

        def set_default_headers(self):
            self.set_header("Content-Type", "application/json")
            if self.server.opts.rest_api_enable_cors_support:
                self.set_header("Access-Control-Allow-Origin", "*")
                self.set_header("Access-Control-Allow-Methods", "POST, GET")
                self.set_header("Access-Control-Allow-Headers", "Content-Type")

        def prepare(self):
            self._start = arrival_start(self.request.connection.stream)
            self._chunks: list[bytes] = []
            self._size = 0
            self._code = "OK"
            self._big_answer = False
            length = self.request.headers.get("Content-Length")
            self._too_big = bool(length and length.isdigit() and int(length) > self.limit)

        def data_received(self, chunk: bytes):
            if self._too_big:
                return  # drain without keeping it, then answer 413
            self._size += len(chunk)
            if self._size > self.limit:
                self._too_big, self._chunks = True, []
            else:
                self._chunks.append(chunk)

        def _reply(self, status: int, payload: bytes, code: str | None = None):
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = "Client Closed Request" if status == 499 else "Error"
            if status != 200 and code is None:
                from serving import HTTP_TO_CODE

                code = HTTP_TO_CODE.get(status, "UNKNOWN")
            self._code = code or "OK"
            self._big_answer = len(payload) > INLINE_JSON_BYTES
            self.set_status(status, reason=reason)
            self.finish(payload)

        def on_finish(self):
            metrics = self.server.metrics
            model = getattr(self, "_model", "")
            if metrics is not None and model:
                metrics.request(model, self._api, "REST", self._code,
                                time.perf_counter() - self._start)
            self.request.connection.stream.arrival = None
            if self._size > INLINE_JSON_BYTES or self._big_answer:
                self.server.rest_pool.submit(trim_heap)

        def _refusal(self, method: str) -> tuple[int, bytes] | None:
            uri = self.request.uri or ""
            if len(uri) > MAX_URL_BYTES:
                return 414, error_body(f"URI is longer than {MAX_URL_BYTES} bytes")
            size = sum(len(k) + len(v) + 4 for k, v in self.request.headers.get_all())
            if size > MAX_HEADER_BYTES:
                return 431, error_body(f"Request headers are larger than {MAX_HEADER_BYTES} "
                                       "bytes")
            if self._too_big:
                return 413, error_body(f"Request body is larger than the limit of {self.limit} "
                                       "bytes (--max_request_bytes)")
            if method not in ("GET", "POST"):
                return 400, error_body(f"Malformed request: {method} {self.request.path}")
            return None

        async def _handle(self, method: str):
            path = self.request.path
            self._model, self._api = model_of(path), api_of(method, path)
            monitoring = self.server.prometheus_path
            if method == "GET" and monitoring and path == monitoring:
                self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.finish(self.server.metrics.page())
                return
            refusal = self._refusal(method)
            if refusal is not None:
                self._reply(*refusal)
                return
            body = b"".join(self._chunks)
            self._chunks = []
            timeout = self.server.opts.rest_api_timeout_in_ms / 1000
            deadline = time.monotonic() + timeout if timeout > 0 else None
            api = self.server.rest
            try:
                servable = api.resolve(path) if method == "POST" else None
                if servable is not None and len(body) <= INLINE_JSON_BYTES:
                    # one hand-off to a worker thread and back, no task of its own
                    work = asyncio.get_running_loop().run_in_executor(
                        self.server.rest_pool, small_predict, api, servable, body, deadline)
                    del body
                    answer = await asyncio.wait_for(work, timeout or None)
                    if answer[0] is None:
                        answer = 200, await asyncio.wrap_future(
                            self.server.parse_pool.encode(*answer[1:]))
                    self._reply(*answer)
                    return
                work = self._work(api, method, path, body, deadline)
                self._reply(*await asyncio.wait_for(work, timeout or None))
            except TimeoutError:
                self._reply(504, error_body(
                    f"Deadline exceeded: the request took longer than "
                    f"{self.server.opts.rest_api_timeout_in_ms} ms (--rest_api_timeout_in_ms)"))
            except Exception as exc:  # noqa: BLE001
                self._reply(*api.error_reply(exc), code=getattr(map_error(exc), "code", None))

        async def _work(self, api, method, path, body, deadline):
            loop = asyncio.get_running_loop()
            pool = self.server.rest_pool
            if method == "POST":
                servable = api.resolve(path)
                if servable is not None:  # a large body (small ones go to small_predict)
                    decoded = await asyncio.wrap_future(
                        self.server.parse_pool.submit(body, api.specs_of(servable)))
                    del body
                    plan = api.finish_plan(servable, decoded)
                    del decoded
                    return await outputs_reply(api, plan, loop, pool, self.server.parse_pool,
                                               deadline)
            return await loop.run_in_executor(pool, api.handle, method, path, body, deadline)

        async def get(self, *_):
            await self._handle("GET")

        async def post(self, *_):
            await self._handle("POST")

        async def put(self, *_):
            await self._handle("PUT")

        async def delete(self, *_):
            await self._handle("DELETE")

        async def patch(self, *_):
            await self._handle("PATCH")

        async def head(self, *_):
            await self._handle("HEAD")

        async def trace(self, *_):
            await self._handle("TRACE")

        async def connect(self, *_):
            await self._handle("CONNECT")

        async def options(self, *_):
            if self.server.opts.rest_api_enable_cors_support:
                self.set_status(204)
                self.finish()
            else:
                await self._handle("OPTIONS")

    RestHandler.server = server  # class attribute: set_default_headers runs before initialize
    return RestHandler
