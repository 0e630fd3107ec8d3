"""Server options: ``tensorflow_model_server``'s flags, spelled the same, and the dataclass the
rest of the server reads."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from serving import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from serving.batching import BatchingParameters
from shared.errors import UserError


@dataclass
class ServerOptions:
    """Server settings; field names are ``tensorflow_model_server``'s flag names.

    Python API only: ``port`` / ``rest_api_port`` = ``None`` disables that API and ``0`` picks a
    free port (on the command line, as in TF Serving, ``0`` disables)."""

    port: int | None = DEFAULT_GRPC_PORT
    rest_api_port: int | None = DEFAULT_REST_PORT
    host: str = "127.0.0.1"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    batching_parameters: BatchingParameters | None = None
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 0  # 0: automatic
    rest_api_enable_cors_support: bool = False
    grpc_max_threads: int = 0  # 0: automatic
    grpc_channel_arguments: str = ""
    allow_version_labels_for_unavailable_models: bool = False
    enable_signature_method_name_check: bool = False
    enable_model_warmup: bool = True
    saved_model_tags: str = "serve"
    num_load_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    max_request_bytes: int = 64 * 1024 * 1024
    max_tensor_bytes: int = 0  # 0: 4 x max_request_bytes
    monitoring_config_file: str = ""
    grpc_socket_path: str = ""
    num_server_processes: int = 1  # the command line's; 0: one per core

    def processes(self) -> int:
        """How many server processes ``ksuite serve`` runs (``serving.server.processes``)."""
        return self.num_server_processes or os.cpu_count() or 1

    def tensor_limit(self) -> int:
        """Largest decoded request tensor, in bytes."""
        return self.max_tensor_bytes or 4 * self.max_request_bytes

    def batching(self) -> BatchingParameters:
        if self.batching_parameters is not None:
            return self.batching_parameters.validate()
        if self.batching_parameters_file:
            try:
                return BatchingParameters.from_file(self.batching_parameters_file)
            except OSError as exc:
                raise UserError(f"cannot read --batching_parameters_file: {exc}") from None
            except ValueError as exc:
                raise UserError(str(exc)) from None
        return BatchingParameters()

    def threads(self) -> tuple[int, int]:
        """(REST worker threads, gRPC worker threads). The model runs outside the GIL but parsing
        and answering hold it, so more threads than 2 per core only contend for it: grpcio's
        polling thread then waits for the lock before it can take a call in, which the request
        latency histogram cannot see (with batching and 128 threads, 15 of 32 ms passed before a
        call was stamped; with 4, under 2 ms). Calls past the pool wait in its queue, inside the
        measured span. With batching, a handler thread waits for its batch, so a batch holds at
        most this many requests: more threads make larger batches but hidden waits."""
        auto = max(4, 2 * (os.cpu_count() or 1))
        return self.rest_api_num_threads or auto, self.grpc_max_threads or auto


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "t", "yes", "y"):
        return True
    if t in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# tensorflow_model_server flags this server accepts but does not act on.
_IGNORED_FLAGS = (
    "enable_per_model_batching_parameters", "num_unload_threads",
    "flush_filesystem_caches", "tensorflow_session_parallelism", "tensorflow_session_config_file",
    "use_alts_credentials", "ssl_config_file", "platform_config_file",
    "per_process_gpu_memory_fraction", "num_request_iterations_for_warmup",
    "remove_unused_fields_from_bundle_metagraph",
    "prefer_tflite_model", "num_tflite_pools", "num_tflite_interpreters_per_pool",
    "xla_cpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file",
    "mixed_precision", "skip_initialize_tpu", "enable_grpc_healthcheck_service",
    "use_tflite_model", "model_warmup_options", "enable_model_warmup_by_default",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ksuite serve",
        description=(
            "Local stand-in for tensorflow_model_server: serves SavedModel versions from "
            "<base_path>/<integer version>/ over TensorFlow Serving's REST API (default port "
            "8501) and gRPC PredictionService/ModelService (default port 8500). Flags are "
            "tensorflow_model_server's, spelled the same (--flag=value or --flag value; booleans "
            "as --flag or --flag=true/false); its flags not implemented here are accepted with a "
            "warning. Binds to 127.0.0.1 unless --host is given."),
        epilog=(
            "examples:\n"
            "  ksuite serve --model_name=mnist_mlp --model_base_path=saved_models/mnist_mlp\n"
            "  ksuite serve --model_config_file=/tmp/models.local.config \\\n"
            "      --model_config_file_poll_wait_seconds=60 --enable_batching \\\n"
            "      --batching_parameters_file=serving/batching.config\n"
            "  curl -d '{\"instances\": [[[0,0,...]]]}' "
            "http://localhost:8501/v1/models/mnist_mlp:predict\n"
            "  ksuite predict mnist_mlp --status"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("tensorflow_model_server flags")
    g.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT,
                   help="gRPC port (default %(default)s; 0 disables gRPC)")
    g.add_argument("--rest_api_port", type=int, default=DEFAULT_REST_PORT,
                   help="REST port (default %(default)s, as in the tensorflow/serving image; "
                        "0 disables REST)")
    g.add_argument("--model_name", default="default",
                   help="name of the model (ignored if --model_config_file is set)")
    g.add_argument("--model_base_path", default="",
                   help="folder holding the model's integer version folders (ignored if "
                        "--model_config_file is set, required otherwise)")
    g.add_argument("--model_config_file", default="",
                   help="ASCII ModelServerConfig with a model_config_list (several models, "
                        "version policies, version labels)")
    g.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                   help="re-read --model_config_file every N seconds (0: read once)")
    g.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                   help="look for new version folders every N seconds (0: once; default 1)")
    g.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False,
                   help="batch concurrent requests server-side")
    g.add_argument("--batching_parameters_file", default="",
                   help="ASCII BatchingParameters (max_batch_size, batch_timeout_micros, "
                        "max_enqueued_batches, num_batch_threads, allowed_batch_sizes)")
    g.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="REST request timeout (default 30000; answered with 504)")
    g.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="REST worker threads (0: automatic)")
    g.add_argument("--rest_api_enable_cors_support", type=_bool, nargs="?", const=True,
                   default=False, help="add CORS headers to REST responses")
    g.add_argument("--grpc_max_threads", type=int, default=0,
                   help="gRPC worker threads (0: automatic)")
    g.add_argument("--grpc_channel_arguments", default="",
                   help="comma-separated gRPC server arguments, e.g. "
                        "grpc.max_connection_age_ms=2000")
    g.add_argument("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?",
                   const=True, default=False,
                   help="allow new labels on versions that are not loaded (yet)")
    g.add_argument("--enable_signature_method_name_check", type=_bool, nargs="?", const=True,
                   default=False,
                   help="Classify/Regress only on signatures whose method_name is "
                        "tensorflow/serving/classify|regress (off: TF2 signatures work)")
    g.add_argument("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True,
                   help="call each numeric signature once on zeros after loading (default true)")
    g.add_argument("--saved_model_tags", default="serve",
                   help="comma-separated MetaGraph tags to load (default serve)")
    g.add_argument("--num_load_threads", type=int, default=0,
                   help="threads loading versions (0: one)")
    g.add_argument("--max_num_load_retries", type=int, default=5,
                   help="retries after a failed version load (default 5)")
    g.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                   help="wait between load retries (default one minute)")
    g.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="TensorFlow intra-op threads (0: automatic)")
    g.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="TensorFlow inter-op threads (0: automatic)")
    g.add_argument("--grpc_socket_path", default="",
                   help="also serve gRPC on this Unix domain socket")
    g.add_argument("--monitoring_config_file", default="",
                   help="ASCII MonitoringConfig; prometheus_config { enable: true path: "
                        "\"/monitoring/prometheus/metrics\" } serves Prometheus metrics on the "
                        "REST port")
    g.add_argument("--version", action="store_true", help="print versions and exit")
    ig = p.add_argument_group(
        "tensorflow_model_server flags accepted for compatibility, without effect here "
        "(a warning is printed)", ", ".join(f"--{n}" for n in _IGNORED_FLAGS))
    for name in _IGNORED_FLAGS:
        ig.add_argument(f"--{name}", nargs="?", const="true", default=None, metavar="VALUE",
                        help=argparse.SUPPRESS)
    x = p.add_argument_group("local server extensions")
    x.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default %(default)s, loopback only; 0.0.0.0 for all)")
    x.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024,
                   help="largest REST body / gRPC message accepted (default 64 MiB; larger "
                        "REST bodies get 413, larger gRPC messages RESOURCE_EXHAUSTED)")
    x.add_argument("--max_tensor_bytes", type=int, default=0,
                   help="largest decoded request tensor (default 0: 4 x --max_request_bytes); "
                        "a gRPC tensor declaring more is refused before it is allocated")
    x.add_argument("--num_server_processes", type=int, default=1,
                   help="server processes sharing the ports, each loading the models "
                        "(default 1; 0: one per core)")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[ServerOptions, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    for name in _IGNORED_FLAGS:
        if getattr(args, name) is not None:
            print(f"warning: --{name} is accepted for compatibility with tensorflow_model_server "
                  "but has no effect in the local server", file=sys.stderr)
    if not args.model_config_file and not args.model_base_path and not args.version:
        raise UserError("Both --model_base_path and --model_config_file are empty: give the "
                        "model's folder (--model_name=NAME --model_base_path=saved_models/NAME) "
                        "or a model config file")
    if args.model_base_path and not args.model_config_file and \
            not is_absolute_uri(args.model_base_path):
        raise UserError(f"Expected model {args.model_name} to have an absolute path or URI; got "
                        f"base_path()={args.model_base_path} (as tensorflow_model_server, the "
                        f"local server needs an absolute --model_base_path: "
                        f"{os.path.abspath(args.model_base_path)})")
    if args.num_server_processes < 0:
        raise UserError(f"--num_server_processes must be >= 0, got {args.num_server_processes}")
    if args.port and args.rest_api_port and args.port == args.rest_api_port:
        raise UserError("--rest_api_port must differ from --port")
    opts = ServerOptions(
        port=args.port or None,
        rest_api_port=args.rest_api_port or None,
        **{k: getattr(args, k) for k in (
            "host", "model_name", "model_base_path", "model_config_file",
            "model_config_file_poll_wait_seconds", "file_system_poll_wait_seconds",
            "enable_batching", "batching_parameters_file", "rest_api_timeout_in_ms",
            "rest_api_num_threads", "rest_api_enable_cors_support", "grpc_max_threads",
            "grpc_channel_arguments", "allow_version_labels_for_unavailable_models",
            "enable_signature_method_name_check", "enable_model_warmup", "saved_model_tags",
            "num_load_threads", "max_num_load_retries", "load_retry_interval_micros",
            "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
            "max_request_bytes", "max_tensor_bytes", "monitoring_config_file",
            "grpc_socket_path", "num_server_processes")})
    if opts.port is None and opts.rest_api_port is None and not opts.grpc_socket_path \
            and not args.version:
        raise UserError("both --port and --rest_api_port are 0: nothing to serve")
    return opts, args




def is_absolute_uri(path: str) -> bool:
    """True for an absolute path or a URI with a scheme (TF Serving's UriIsRelativePath)."""
    return "://" in path or os.path.isabs(path)
