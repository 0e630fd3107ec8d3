"""ModelServer: both front ends over one ServerCore, and ``main`` (``ksuite serve``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from serving.server.core import ServerCore
from serving.server.grpc_api import channel_args, latency_interceptor, servicers
from serving.server.options import ServerOptions, parse_args
from serving.server.rest import RestApi
from serving.server.rest_http import ParsePool, http_server, make_rest_handler
from serving.server.service import Service
from shared.errors import UserError, exit_on_user_error

log = logging.getLogger("serving.server")


class ModelServer:
    """REST on an asyncio IO loop in a background thread (tornado), gRPC on grpcio's threaded
    server (on the port and, with ``grpc_socket_path``, a Unix socket); models run on worker or
    batch threads. ``start()`` loads the initial models (as tensorflow_model_server does, before
    it opens its ports) and returns; ``stop()`` shuts down.

    >>> server = ModelServer(ServerOptions(port=0, rest_api_port=0,
    ...                      model_name="mnist_mlp", model_base_path="/abs/saved_models/mnist_mlp"))
    >>> server.start().grpc_port, server.rest_port   # the ports actually bound
    """

    def __init__(self, opts: ServerOptions, worker=None):
        self.opts = opts
        self.worker = worker  # a processes.Worker when one of several server processes
        self.prometheus_path = None
        self.metrics = None
        if opts.monitoring_config_file:
            from serving.server.monitoring import Metrics, read_monitoring_config

            try:
                self.prometheus_path = read_monitoring_config(opts.monitoring_config_file)
            except OSError as exc:
                raise UserError(f"cannot read --monitoring_config_file: {exc}") from None
            except ValueError as exc:
                raise UserError(str(exc)) from None
            if self.prometheus_path:
                pool = opts.batching().thread_pool_name if opts.enable_batching else ""
                self.metrics = Metrics(pool or "batch_threads", multiprocess=(
                    worker.metrics_folder if worker is not None else None))
        self.core = ServerCore(opts)
        self.service = Service(self.core, opts, self.metrics)
        self.rest = RestApi(self.service, opts)
        self.parse_pool = ParsePool()
        rest_threads, grpc_threads = opts.threads()
        self.rest_pool = ThreadPoolExecutor(max_workers=rest_threads, thread_name_prefix="rest")
        self.grpc_pool = ThreadPoolExecutor(max_workers=grpc_threads, thread_name_prefix="grpc")
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc = None
        self._http = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ModelServer:
        self.core.start()
        try:
            if self.opts.port is not None or self.opts.grpc_socket_path or self.worker:
                self._start_grpc()
            if self.opts.rest_api_port is not None:
                self._start_io()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_grpc(self) -> None:
        import grpc

        # One process owns its port (a second server on it fails, as TF Serving's does); server
        # processes of one ``ksuite serve`` share it, after the supervisor checked it was free.
        options = [("grpc.max_receive_message_length", self.opts.max_request_bytes),
                   ("grpc.max_send_message_length", 2**31 - 1),
                   ("grpc.so_reuseport", int(self.worker is not None))]
        options += channel_args(self.opts.grpc_channel_arguments)
        interceptors = [latency_interceptor(self.metrics)] if self.metrics is not None else []
        self._grpc = grpc.server(self.grpc_pool, options=options, interceptors=interceptors,
                                 maximum_concurrent_rpcs=None)
        pred, add_pred, models, add_models = servicers(self)
        add_pred(pred, self._grpc)
        add_models(models, self._grpc)
        if self.opts.port is not None:
            host = f"[{self.opts.host}]" if ":" in self.opts.host else self.opts.host
            try:
                port = self._grpc.add_insecure_port(f"{host}:{self.opts.port}")
            except RuntimeError as exc:
                raise UserError(f"cannot listen for gRPC on {host}:{self.opts.port}: "
                                f"{exc}") from None
            if not port:
                raise UserError(f"cannot listen for gRPC on {host}:{self.opts.port} "
                                "(port in use?)")
            self.grpc_port = port
        if self.worker is not None:  # reloads forwarded by the other server processes
            where = f"unix:{self.worker.control_socket()}"
            if not self._grpc.add_insecure_port(where):
                raise UserError(f"cannot listen for gRPC on {where}")
        socket_path = self.opts.grpc_socket_path
        if self.worker is not None and self.worker.index > 0:
            socket_path = ""  # a Unix socket cannot be shared: served by process 0
        if socket_path:
            where = f"unix:{socket_path}"
            try:
                ok = self._grpc.add_insecure_port(where)
            except RuntimeError as exc:
                raise UserError(f"cannot listen for gRPC on {where}: {exc}") from None
            if not ok:
                raise UserError(f"cannot listen for gRPC on {where}")
        self._grpc.start()
        if self.grpc_port:
            log.info("Running gRPC ModelServer at %s:%d ...", self.opts.host, self.grpc_port)
        if socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", socket_path)

    async def _setup_rest(self) -> None:
        import tornado.netutil
        import tornado.web

        try:
            sockets = tornado.netutil.bind_sockets(self.opts.rest_api_port, address=self.opts.host,
                                                   reuse_port=self.worker is not None)
        except OSError as exc:
            raise UserError(f"cannot listen for REST on {self.opts.host}:"
                            f"{self.opts.rest_api_port}: {exc}") from None
        app = tornado.web.Application([(r"/.*", make_rest_handler(self))],
                                      log_function=_log_request)
        limit = self.opts.max_request_bytes
        # Bodies over the limit are drained by the handler and answered 413 in JSON, so tornado's
        # own limit (a bare 400 and a closed connection) is set far beyond it.
        self._http = http_server(
            app, sockets, max_body_size=1 << 50, max_buffer_size=limit + (1 << 20),
            max_header_size=1 << 20, idle_connection_timeout=300)
        self.rest_port = sockets[0].getsockname()[1]

    def _start_io(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def setup():
            await self._setup_rest()
            log.info("Exporting HTTP/REST API at:%s:%d ...", self.opts.host, self.rest_port)

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(setup())
            except BaseException as exc:  # noqa: BLE001
                failure.append(exc)
                loop.run_until_complete(self._shutdown(0))
                loop.close()
                self._loop = None
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="serving-io", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    async def _shutdown(self, grace: float) -> None:
        if self._http is not None:
            self._http.stop()
            try:
                await asyncio.wait_for(self._http.close_all_connections(), grace or 0.1)
            except TimeoutError:
                pass
            self._http = None

    def stop(self, grace: float = 1.0) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace).wait(grace + 1)
            self._grpc = None
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            async def shutdown():
                await self._shutdown(grace)
                loop.stop()

            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(shutdown()))
            self._thread.join(grace + 5)
            self._loop = None
        self.core.stop()
        self.service.logs.close()
        self.parse_pool.close()
        self.rest_pool.shutdown(wait=False, cancel_futures=True)
        self.grpc_pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _log_request(handler) -> None:
    status = handler.get_status()
    if status >= 500:
        log.warning("%d %s %.1fms", status, handler._request_summary(),
                    1000 * handler.request.request_time())
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("%d %s %.1fms", status, handler._request_summary(),
                  1000 * handler.request.request_time())


def _print_versions() -> None:
    import grpc
    import tensorflow as tf
    import tornado

    print(f"ksuite local model server (TensorFlow Serving APIs)\n"
          f"TensorFlow Library: {tf.__version__}\ngrpcio: {grpc.__version__}\n"
          f"tornado: {tornado.version}")


def main(argv: list[str] | None = None) -> int:
    from serving.server.processes import Worker

    worker = Worker.from_env()
    if worker is None:
        return exit_on_user_error(_main)(argv)
    try:
        return _main(argv, worker)
    except UserError as exc:  # the supervisor prints it, once for all processes
        worker.report("error", str(exc).replace("\n", " "))
        return exc.exit_code


def _main(argv: list[str] | None = None, worker=None) -> int:
    opts, args = parse_args(argv)
    tag = f"[{worker.index}]" if worker is not None else ""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")
    if args.version:
        _print_versions()
        return 0
    if worker is None and opts.processes() > 1:
        from serving.server.processes import supervise

        return supervise(opts, sys.argv[1:] if argv is None else list(argv), opts.processes())
    if opts.enable_batching and (worker is None or worker.index == 0):
        p = opts.batching()
        log.info("batching on: max_batch_size=%d batch_timeout_micros=%d num_batch_threads=%d "
                 "max_enqueued_batches=%d", p.max_batch_size, p.batch_timeout_micros,
                 p.num_batch_threads, p.max_enqueued_batches)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received signal %d, shutting down", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    if worker is not None:
        worker.watch_parent(stop)
    server = ModelServer(opts, worker)
    server.start()
    loaded = server.core.loaded()
    banner = (f"serving {', '.join(f'{n} {v}' for n, v in loaded.items()) or 'no model yet'}; "
              f"gRPC {opts.host}:{server.grpc_port or '-'}  REST {opts.host}:"
              f"{server.rest_port or '-'}")
    if worker is None:
        print(banner, file=sys.stderr, flush=True)
    else:
        worker.report("ready", banner)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        if worker is not None:
            worker.cleanup()
    return 0
