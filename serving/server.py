"""A local, TensorFlow-Serving-compatible model server (``ksuite serve``).

It stands in for ``tensorflow_model_server`` in development and tests, where the real binary
cannot be installed from the package registries. It serves the same model folders
(``<base_path>/<integer version>/``, zero-padded names such as ``00000123`` allowed) and reads the
same ``--model_config_file`` (ModelServerConfig text proto), and it speaks the same two APIs on
the same default ports:

* REST (tornado), port 8501::

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances"|"inputs": ...}
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   {"examples": [...]}
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress

  Errors are ``{"error": "..."}`` with TensorFlow Serving's status mapping (400 bad input or
  unknown label, 404 unknown model/version, 504 timeout, 503 overloaded...).

* gRPC (grpcio), port 8500: ``tensorflow.serving.PredictionService`` (Predict, Classify, Regress,
  GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus,
  HandleReloadConfigRequest), with the official ``tensorflow_serving.apis`` messages.

Versions are loaded with ``tf.saved_model.load``; the base paths are polled every
``--file_system_poll_wait_seconds`` and new versions are loaded while serving. Versions leaving
the version policy are unloaded only once a version the policy wants is available (TensorFlow
Serving's availability-preserving policy), so a version switch drops no request.
``--enable_batching`` batches concurrent requests server-side (``serving.batching``).

Flags are ``tensorflow_model_server``'s, spelled the same; flags of the real server that this one
does not implement are accepted with a warning. Unlike the real server it binds to 127.0.0.1
unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import gc
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, ServingError
from serving.batching import BatchingParameters, BatchScheduler
from shared.errors import UserError, exit_on_user_error

log = logging.getLogger("serving.server")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# URL grammar of TensorFlow Serving's REST API (model_servers/http_rest_api_util.cc).
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_INT64_MAX = 2**63 - 1
# REST predict bodies up to this size are parsed on the IO loop; larger ones on a worker thread.
INLINE_JSON_BYTES = 256 * 1024
# Outputs with more values than this are turned into JSON on a worker thread.
INLINE_JSON_VALUES = 50_000

# ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
_STATE_ENUM = {START: 10, LOADING: 20, AVAILABLE: 30, UNLOADING: 40, END: 50}


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


# =================================================================================================
# Options and flags
# =================================================================================================


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
        """(REST worker threads, gRPC worker threads). Handler threads block while their request
        waits in a batch, so with batching there must be enough of them to fill batches."""
        cpus = os.cpu_count() or 1
        auto = 4 * cpus
        if self.enable_batching:
            auto = max(auto, min(2 * self.batching().max_batch_size, 128))
        return (self.rest_api_num_threads or max(auto, 8), self.grpc_max_threads or max(auto, 16))


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "t", "yes", "y"):
        return True
    if t in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# tensorflow_model_server flags this server accepts but does not act on.
_IGNORED_FLAGS = (
    "grpc_socket_path", "enable_per_model_batching_parameters", "num_unload_threads",
    "flush_filesystem_caches", "tensorflow_session_parallelism", "tensorflow_session_config_file",
    "use_alts_credentials", "ssl_config_file", "platform_config_file",
    "per_process_gpu_memory_fraction", "num_request_iterations_for_warmup",
    "monitoring_config_file", "remove_unused_fields_from_bundle_metagraph",
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
            "max_request_bytes")})
    if opts.port is None and opts.rest_api_port is None and not args.version:
        raise UserError("both --port and --rest_api_port are 0: nothing to serve")
    return opts, args


# =================================================================================================
# Tensors: dtypes, JSON <-> numpy, TensorProto <-> numpy
# =================================================================================================


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature, from its SignatureDef TensorInfo."""

    key: str
    dtype_enum: int
    dtype_name: str  # "float32", "uint8", "string", ...
    np_dtype: Any  # numpy dtype; object for strings
    shape: tuple | None  # None: unknown rank; a None dim: any size

    @property
    def is_string(self) -> bool:
        return self.dtype_name == "string"

    def shape_text(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


def _spec_from_tensor_info(key: str, info) -> TensorSpec:
    tf = _tf()
    try:
        dt = tf.dtypes.as_dtype(info.dtype)
        name = dt.name
        np_dtype = np.dtype(object) if dt == tf.string else np.dtype(dt.as_numpy_dtype)
    except (TypeError, ValueError):
        name, np_dtype = f"dtype_{info.dtype}", None
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(key, int(info.dtype), name, np_dtype, shape)


def _short(value: Any, limit: int = 120) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, dict):
        return "Object"
    return "Array"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64decode(value: dict) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ServingError("INVALID_ARGUMENT",
                           f"Unable to base64 decode {_short(value)}") from None


def _type_error(value: Any, spec: TensorSpec) -> ServingError:
    return ServingError("INVALID_ARGUMENT",
                        f"JSON Value: {_short(value)} Type: {_json_type(value)} is not of expected "
                        f"type: {spec.dtype_name} (input '{spec.key}')")


def _first_bad_leaf(value: Any, ok) -> Any:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        elif not ok(v):
            return v
    return None


def _strings_to_bytes(value: Any, spec: TensorSpec) -> Any:
    if isinstance(value, list):
        return [_strings_to_bytes(v, spec) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value):
        return _b64decode(value)
    raise _type_error(value, spec)


def _ragged(spec: TensorSpec) -> ServingError:
    return ServingError("INVALID_ARGUMENT",
                        f"input '{spec.key}': nested lists of different lengths (a tensor needs "
                        "the same length at every level)")


def json_to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """A JSON value as a tensor of ``spec``'s dtype (TensorFlow Serving's JSON mapping)."""
    if spec.np_dtype is None:
        raise ServingError("UNIMPLEMENTED",
                           f"Conversion of JSON to type {spec.dtype_name} is not supported")
    if spec.is_string:
        nested = _strings_to_bytes(value, spec)
        try:
            arr = np.array(nested, dtype=object)
        except ValueError:
            raise _ragged(spec) from None
        if arr.ndim and any(isinstance(x, list) for x in arr.flat):
            raise _ragged(spec)
        return arr
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError):
        raise _ragged(spec) from None
    if arr.size == 0 and arr.dtype.kind == "f":  # [] or [[]]: no value to check
        return arr.astype(spec.np_dtype)
    kind = arr.dtype.kind
    want = spec.np_dtype.kind
    if kind == "O" or kind in "USV":
        if kind == "O" and any(isinstance(x, list) for x in arr.flat):
            raise _ragged(spec)
        bad = _first_bad_leaf(value, lambda v: isinstance(v, (int, float)) and not
                              isinstance(v, bool) and want != "b")
        if isinstance(bad, int) and not isinstance(bad, bool):
            raise ServingError("INVALID_ARGUMENT",
                               f"JSON Value: {bad} is out of range for {spec.dtype_name} "
                               f"(input '{spec.key}')")
        raise _type_error(bad if bad is not None else value, spec)
    if want == "b":
        if kind != "b":
            raise _type_error(_first_bad_leaf(value, lambda v: isinstance(v, bool)), spec)
        return arr
    if kind == "b":
        raise _type_error(_first_bad_leaf(value, lambda v: not isinstance(v, bool)), spec)
    if want in "iu":
        if kind == "f":
            raise _type_error(_first_bad_leaf(value, lambda v: not isinstance(v, float)), spec)
        info = np.iinfo(spec.np_dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            bad = arr.min() if arr.min() < info.min else arr.max()
            raise ServingError("INVALID_ARGUMENT",
                               f"JSON Value: {int(bad)} is out of range for {spec.dtype_name} "
                               f"(input '{spec.key}')")
    elif want == "c":
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON to {spec.dtype_name}")
    return arr.astype(spec.np_dtype, copy=False)


def _bytes_to_json(arr: np.ndarray, as_b64: bool) -> Any:
    def leaf(b):
        if isinstance(b, str):
            return b
        if not as_b64:
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                pass  # not text: the only lossless JSON form is base64
        return {"b64": base64.b64encode(b).decode("ascii")}

    def walk(x):
        return [walk(v) for v in x] if isinstance(x, list) else leaf(x)

    return walk(arr.tolist())


def array_to_json(arr: np.ndarray, name: str) -> Any:
    """A tensor as JSON: numbers, booleans, UTF-8 strings, ``{"b64": ...}`` for outputs whose
    name ends in ``_bytes`` (TensorFlow Serving's convention). float32 values are written with
    the shortest decimal that reads back to the same float32 (as TF Serving writes them)."""
    kind = arr.dtype.kind
    if kind == "O" or kind == "S":
        return _bytes_to_json(arr, name.endswith("_bytes"))
    if arr.dtype == np.float32 or arr.dtype == np.float16:
        return np.asarray(arr.astype(str), dtype=np.float64).tolist()
    if kind not in "biuf":  # bfloat16 and other extension types: as float32
        return array_to_json(arr.astype(np.float32), name)
    return arr.tolist()


def outputs_to_rest(outputs: dict[str, np.ndarray], columnar: bool) -> dict:
    if not outputs:
        raise ServingError("INVALID_ARGUMENT", "Cannot convert empty tensor map to JSON")
    names = list(outputs)
    if columnar:
        if len(names) == 1:
            return {"outputs": array_to_json(outputs[names[0]], names[0])}
        return {"outputs": {k: array_to_json(v, k) for k, v in outputs.items()}}
    batch = None
    for k, v in outputs.items():
        if v.ndim == 0:
            raise ServingError("INVALID_ARGUMENT",
                               f"Tensor name: {k} has no shape information (a scalar output "
                               "cannot be split into rows; send the request in columnar "
                               "'inputs' format)")
        if batch is not None and v.shape[0] != batch:
            raise ServingError("INVALID_ARGUMENT",
                               f"Tensor name: {k} has inconsistent batch size: {v.shape[0]} "
                               f"expecting: {batch} (use the columnar 'inputs' format)")
        batch = v.shape[0]
    if len(names) == 1:
        return {"predictions": array_to_json(outputs[names[0]], names[0])}
    cols = {k: array_to_json(v, k) for k, v in outputs.items()}
    return {"predictions": [{k: cols[k][i] for k in names} for i in range(batch)]}


def instances_to_inputs(instances: Any, sig: "Signature") -> dict[str, np.ndarray]:
    """Row format: ``instances`` is a list with one element per example."""
    if not isinstance(instances, list):
        raise ServingError("INVALID_ARGUMENT", "Expecting 'instances' to be an list/array")
    if not instances:
        raise ServingError("INVALID_ARGUMENT",
                           "No values in 'instances' array (an empty batch): send at least one "
                           "instance")
    names = list(sig.inputs)
    first = instances[0]
    named = isinstance(first, dict) and not _is_b64(first)
    if not named:
        if len(names) > 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                "instances is a plain list, but expecting list of objects as multiple input "
                f"tensors required as per tensorinfo_map: {', '.join(names)}")
        for i, el in enumerate(instances):
            if isinstance(el, dict) and not _is_b64(el):
                raise ServingError("INVALID_ARGUMENT",
                                   f"Expecting value/list but got object at item {i} of input list")
        return {names[0]: json_to_array(instances, sig.inputs[names[0]])}
    cols: dict[str, list] = {k: [] for k in names}
    want = set(names)
    for i, el in enumerate(instances):
        if not isinstance(el, dict) or _is_b64(el):
            raise ServingError("INVALID_ARGUMENT",
                               f"Expecting object but got list at item {i} of input list")
        for k in el:
            if k not in want:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Failed to process element: {i} key: {k} of 'instances' "
                                   f"list. JSON object: does not have named input: {k}")
        if len(el) != len(want):
            raise ServingError("INVALID_ARGUMENT",
                               f"Failed to process element: {i} of 'instances' list. JSON object "
                               f"keys must be equal to: {','.join(sorted(want))}")
        for k, v in el.items():
            cols[k].append(v)
    return {k: json_to_array(v, sig.inputs[k]) for k, v in cols.items()}


def columnar_to_inputs(value: Any, sig: "Signature") -> dict[str, np.ndarray]:
    """Columnar format: ``inputs`` is one tensor, or an object of named tensors."""
    names = list(sig.inputs)
    if isinstance(value, dict) and not _is_b64(value):
        out = {}
        for k in names:
            if k not in value:
                raise ServingError("INVALID_ARGUMENT", f"Missing named input: {k} in 'inputs' "
                                   f"object (the signature takes {', '.join(names)})")
            out[k] = json_to_array(value[k], sig.inputs[k])
        return out
    if len(names) > 1:
        raise ServingError("INVALID_ARGUMENT",
                           "inputs is a plain value/list, but expecting an object as multiple "
                           f"input tensors required as per tensorinfo_map: {', '.join(names)}")
    return {names[0]: json_to_array(value, sig.inputs[names[0]])}


def _json_feature(example, name: str, values: list) -> None:
    feature = example.features.feature[name]
    kind = None

    def need(k):
        nonlocal kind
        if kind not in (None, k):
            raise ServingError("INVALID_ARGUMENT",
                               f"Unexpected element type in feature: {name} expecting type: {kind}")
        kind = k

    for v in values:
        if isinstance(v, bool):
            need("int64")
            feature.int64_list.value.append(int(v))
        elif isinstance(v, int):
            if not -(2**63) <= v < 2**63:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Feature: {name} has an element out of int64 range")
            need("int64")
            feature.int64_list.value.append(v)
        elif isinstance(v, float):
            need("float")
            feature.float_list.value.append(v)
        elif isinstance(v, str):
            need("bytes")
            feature.bytes_list.value.append(v.encode("utf-8"))
        elif _is_b64(v):
            need("bytes")
            feature.bytes_list.value.append(_b64decode(v))
        else:
            raise ServingError("INVALID_ARGUMENT",
                               f"Feature: {name} has element with unexpected JSON type: "
                               f"{_json_type(v)}")


def json_to_example(obj: Any):
    """A JSON object ``{feature: value | [values]}`` as a ``tf.train.Example`` (TF Serving's
    rules: integers -> int64_list, decimals -> float_list, strings/b64 -> bytes_list)."""
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise ServingError("INVALID_ARGUMENT",
                           f"Example must be JSON object but got JSON {_json_type(obj)}")
    ex = example_pb2.Example()
    for name, value in obj.items():
        _json_feature(ex, name, value if isinstance(value, list) else [value])
    return ex


def parse_json_body(body: bytes) -> dict:
    if not body or not body.strip():
        raise ServingError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ServingError("INVALID_ARGUMENT",
                           f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise ServingError("INVALID_ARGUMENT", f"JSON Value: {_short(doc)} Is not object")
    return doc


# =================================================================================================
# Loaded versions
# =================================================================================================


@dataclass
class Signature:
    name: str
    fn: Any  # concrete function taking the inputs as keyword arguments
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class Servable:
    """One loaded version of a model."""

    def __init__(self, name: str, version: int, path: Path, tags: list[str],
                 warmup: bool = True):
        tf = _tf()
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, Path(path)
        self.key = (name, version)
        self.obj = tf.saved_model.load(str(path), tags=tags)
        sm = saved_model_pb2.SavedModel()
        pb = self.path / "saved_model.pb"
        if pb.exists():
            sm.ParseFromString(pb.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse((self.path / "saved_model.pbtxt").read_text(), sm)
        meta = next((m for m in sm.meta_graphs if set(m.meta_info_def.tags) == set(tags)), None)
        if meta is None:
            meta = next((m for m in sm.meta_graphs if set(tags) <= set(m.meta_info_def.tags)),
                        None)
        if meta is None:
            raise RuntimeError(f"no MetaGraph with tags {tags} in {path}")
        self.signature_defs = dict(meta.signature_def)
        self.signatures: dict[str, Signature] = {}
        for sig_name, fn in self.obj.signatures.items():
            sdef = self.signature_defs.get(sig_name)
            if sdef is None:
                continue
            self.signatures[sig_name] = Signature(
                sig_name, fn, sdef.method_name,
                {k: _spec_from_tensor_info(k, v) for k, v in sorted(sdef.inputs.items())},
                {k: _spec_from_tensor_info(k, v) for k, v in sdef.outputs.items()})
        if warmup:
            self._warmup()

    def _warmup(self) -> None:
        """Run each signature with numeric, fully-shaped inputs once on zeros (batch of 1), so
        the first real request does not pay for graph optimization."""
        for sig in self.signatures.values():
            inputs = {}
            for k, spec in sig.inputs.items():
                if spec.is_string or spec.np_dtype is None or not spec.shape or \
                        any(d is None for d in spec.shape[1:]):
                    inputs = None
                    break
                inputs[k] = np.zeros((1,) + tuple(spec.shape[1:]), spec.np_dtype)
            if inputs:
                try:
                    self.call(sig, inputs)
                except Exception as exc:  # noqa: BLE001 - warm-up is best effort
                    log.debug("warm-up of %s/%s:%s failed: %s", self.name, self.version,
                              sig.name, exc)

    def call(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = sig.fn(**inputs)
        if not isinstance(result, dict):
            result = {next(iter(sig.outputs)): result}
        return {k: v.numpy() for k, v in result.items()}


# =================================================================================================
# Model management (ServerCore)
# =================================================================================================


@dataclass
class _Version:
    version: int
    path: Path
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None
    failed: bool = False


@dataclass
class _Model:
    name: str
    config: Any  # ModelConfig proto
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    removed: bool = False


def _disk_versions(base: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    try:
        children = list(base.iterdir())
    except OSError:
        return out
    for child in children:
        if child.name.isdigit() and child.is_dir() and (
                (child / "saved_model.pb").exists() or (child / "saved_model.pbtxt").exists()):
            v = int(child.name)
            if v <= _INT64_MAX and (v not in out or child.name == str(v)):
                out[v] = child
    return out


def _aspired(config, on_disk: dict[int, Path]) -> set[int]:
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    versions = sorted(on_disk)
    if which == "all":
        return set(versions)
    if which == "specific":
        return {v for v in policy.specific.versions if v in on_disk}
    n = policy.latest.num_versions if which == "latest" else 1
    return set(versions[-max(n, 1):]) if versions else set()


class ServerCore:
    """Models, their versions and labels: loads and unloads versions as the config and the
    folders change, and resolves a request's model spec to a loaded version."""

    def __init__(self, opts: ServerOptions):
        self.opts = opts
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._stop = threading.Event()
        self._loads: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._config_text: str | None = None
        self._heap_lock = threading.Lock()
        self._heap = {"loaded": False, "unloaded": False}
        self.tags = [t.strip() for t in opts.saved_model_tags.split(",") if t.strip()]
        self.batcher = BatchScheduler(opts.batching()) if opts.enable_batching else None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        tf = _tf()
        if self.opts.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(
                self.opts.tensorflow_intra_op_parallelism)
        if self.opts.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(
                self.opts.tensorflow_inter_op_parallelism)
        for i in range(max(1, self.opts.num_load_threads)):
            self._spawn(self._load_worker, f"serving-load-{i}")
        try:
            self.reload_config(self._initial_config())
            self._settle_heap()
        except ServingError as exc:
            self.stop()
            raise UserError(f"cannot start: {exc.message}") from None
        except BaseException:
            self.stop()
            raise
        if self.opts.file_system_poll_wait_seconds > 0:
            self._spawn(self._fs_poll_loop, "serving-fs-poll")
        if self.opts.model_config_file and self.opts.model_config_file_poll_wait_seconds > 0:
            self._spawn(self._config_poll_loop, "serving-config-poll")

    def stop(self) -> None:
        self._stop.set()
        if self.batcher is not None:
            self.batcher.close()
        with self._changed:
            self._changed.notify_all()

    def _settle_heap(self) -> None:
        """Keep Python's full garbage collections short. A process with TensorFlow and a model
        holds about a million objects, and each full collection walks them all (100-400 ms with
        every thread stopped: that was this server's p99). After a load, gc.freeze() moves what
        is alive into the permanent generation, which collections skip. After an unload, the
        unloaded objects are unfrozen and collected once, here, off the request path."""
        with self._heap_lock:
            if self._heap["unloaded"]:
                self._heap = {"loaded": False, "unloaded": False}
                gc.unfreeze()
                gc.collect()
                gc.freeze()
            elif self._heap["loaded"]:
                self._heap["loaded"] = False
                gc.freeze()

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _initial_config(self):
        from serving.config import read_model_config
        from tensorflow_serving.config import model_server_config_pb2 as pb

        if self.opts.model_config_file:
            path = Path(self.opts.model_config_file)
            try:
                self._config_text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot read --model_config_file {path}: {exc}") from None
            return read_model_config(path)
        if not self.opts.model_base_path:
            raise UserError("Both --model_base_path and --model_config_file are empty")
        config = pb.ModelServerConfig()
        mc = config.model_config_list.config.add()
        mc.name = self.opts.model_name
        mc.base_path = self.opts.model_base_path
        mc.model_platform = "tensorflow"
        return config

    # -- config --------------------------------------------------------------------------------
    def reload_config(self, config, wait: bool = True) -> None:
        """Serve exactly the models in ``config`` (ModelServerConfig): add, reconfigure and remove
        models, wait for the versions their policies want, then apply the version labels."""
        from serving.config import check_model_config

        kind = config.WhichOneof("config")
        if kind != "model_config_list":
            raise ServingError("INVALID_ARGUMENT",
                               "ServerModelConfig type not supported: only model_config_list is "
                               f"implemented (got {kind or 'an empty config'})")
        problems = check_model_config(config, labels=False)
        if problems:
            raise ServingError("INVALID_ARGUMENT", "; ".join(problems))
        new = {mc.name: mc for mc in config.model_config_list.config}
        with self._lock:
            for name, m in self._models.items():
                if name not in new:
                    m.removed = True
                    log.info("model %s removed from the config: unloading it", name)
            for name, mc in new.items():
                m = self._models.get(name)
                if m is None or m.removed:
                    if m is not None:  # re-added before its versions were all unloaded
                        m.removed = False
                        m.config = mc
                    else:
                        self._models[name] = _Model(name, mc)
                        log.info("serving model %s from %s", name, mc.base_path)
                else:
                    if mc.base_path != m.config.base_path:
                        log.info("model %s: base path changed to %s", name, mc.base_path)
                        for v in list(m.versions.values()):
                            self._unload(m, v)
                        m.versions.clear()
                    m.config = mc
            self._poll_all()
        if wait:
            self._wait_for_loads(set(new))
        with self._lock:
            errors = []
            for name, mc in new.items():
                m = self._models[name]
                for label, version in mc.version_labels.items():
                    if m.labels.get(label) == version:
                        continue
                    rec = m.versions.get(version)
                    ok = rec is not None and rec.state == AVAILABLE
                    if not ok and not (self.opts.allow_version_labels_for_unavailable_models
                                       and label not in m.labels):
                        errors.append(f"Request to assign label to version {version} of model "
                                      f"{name}, which is not currently available for inference")
            if errors:
                raise ServingError("FAILED_PRECONDITION", "; ".join(errors))
            for name, mc in new.items():
                self._models[name].labels = dict(mc.version_labels)
        self._settle_heap()

    def _wait_for_loads(self, names: set[str]) -> None:
        def pending():
            return any(v.state in (START, LOADING)
                       for n in names if n in self._models
                       for v in self._models[n].versions.values())

        with self._changed:
            while pending() and not self._stop.is_set():
                self._changed.wait(0.5)

    # -- polling, loading, unloading -----------------------------------------------------------
    def _poll_all(self) -> None:
        with self._lock:
            for m in list(self._models.values()):
                self._poll_model(m)

    def _poll_model(self, m: _Model) -> None:
        if m.removed:
            aspired, on_disk = set(), {}
        else:
            on_disk = _disk_versions(Path(m.config.base_path))
            if not on_disk and not m.versions:
                log.warning("No versions of servable %s found under base path %s", m.name,
                            m.config.base_path)
            aspired = _aspired(m.config, on_disk)
            which = m.config.model_version_policy.WhichOneof("policy_choice")
            if which == "specific":
                missing = set(m.config.model_version_policy.specific.versions) - set(on_disk)
                for v in sorted(missing):
                    if v not in m.versions:
                        log.warning("model %s: version %d of the specific policy is not on disk",
                                    m.name, v)
        for v in sorted(aspired):
            rec = m.versions.get(v)
            retry = rec is not None and rec.state == END and (
                not rec.failed or v not in m.aspired)
            if rec is None or retry:
                rec = m.versions[v] = _Version(v, on_disk[v], state=START)
                self._loads.put((m, rec))
        m.aspired = aspired
        self._unload_unaspired(m)
        if m.removed and all(v.state == END for v in m.versions.values()):
            if self._models.get(m.name) is m:
                del self._models[m.name]
        # keep the status history of unloaded versions bounded
        ended = sorted(v for v, r in m.versions.items() if r.state == END and v not in aspired)
        for v in ended[:-20]:
            del m.versions[v]

    def _unload_unaspired(self, m: _Model) -> None:
        """Availability-preserving: a version leaves only when an aspired version is serving
        (or when nothing is aspired any more)."""
        serving = any(m.versions[v].state == AVAILABLE for v in m.aspired if v in m.versions)
        if not (serving or not m.aspired):
            return
        for v, rec in list(m.versions.items()):
            if v not in m.aspired and rec.state in (AVAILABLE, START):
                self._unload(m, rec)

    def _unload(self, m: _Model, rec: _Version) -> None:
        if rec.state == AVAILABLE:
            rec.state = UNLOADING
            log.info("Unloading servable version {name: %s version: %d}", m.name, rec.version)
        if rec.servable is not None:
            self._heap["unloaded"] = True
        rec.servable = None  # in-flight requests keep their own reference
        rec.state = END
        self._changed.notify_all()

    def _load_worker(self) -> None:
        while not self._stop.is_set():
            try:
                m, rec = self._loads.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                if rec.state != START or m.versions.get(rec.version) is not rec:
                    continue
                rec.state = LOADING
            log.info("Loading servable version {name: %s version: %d} from %s", m.name,
                     rec.version, rec.path)
            servable, error, attempt = None, None, 0
            while not self._stop.is_set():
                try:
                    servable = Servable(m.name, rec.version, rec.path, self.tags,
                                        warmup=self.opts.enable_model_warmup)
                    break
                except Exception as exc:  # noqa: BLE001 - a bad model must not kill the server
                    error = f"{type(exc).__name__}: {exc}"
                    attempt += 1
                    with self._lock:
                        wanted = rec.version in m.aspired and not m.removed
                    if attempt > self.opts.max_num_load_retries or not wanted:
                        break
                    log.warning("loading %s version %d failed (%s); retry %d/%d", m.name,
                                rec.version, error, attempt, self.opts.max_num_load_retries)
                    self._stop.wait(max(0.0, self.opts.load_retry_interval_micros / 1e6))
            with self._lock:
                if servable is not None:
                    self._heap["loaded"] = True
                    rec.servable, rec.state = servable, AVAILABLE
                    log.info("Successfully loaded servable version {name: %s version: %d}",
                             m.name, rec.version)
                else:
                    rec.state, rec.failed = END, True
                    rec.error_code, rec.error_message = "UNKNOWN", error or "load cancelled"
                    log.error("Loading servable version {name: %s version: %d} failed: %s",
                              m.name, rec.version, rec.error_message)
                self._unload_unaspired(m)
                self._changed.notify_all()
            self._settle_heap()

    def _fs_poll_loop(self) -> None:
        while not self._stop.wait(self.opts.file_system_poll_wait_seconds):
            try:
                self._poll_all()
                self._settle_heap()
            except Exception:  # noqa: BLE001
                log.exception("file system poll failed")

    def _config_poll_loop(self) -> None:
        from serving.config import parse_model_config

        path = Path(self.opts.model_config_file)
        while not self._stop.wait(self.opts.model_config_file_poll_wait_seconds):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                log.error("cannot read model config file %s: %s", path, exc)
                continue
            if text == self._config_text:
                continue
            self._config_text = text
            try:
                self.reload_config(parse_model_config(text, str(path)))
                log.info("reloaded model config from %s", path)
            except (UserError, ServingError) as exc:
                log.error("model config %s not applied: %s", path, exc)

    # -- lookups -------------------------------------------------------------------------------
    def _lookup(self, name: str, version: int | None, label: str | None):
        """(model or None, version) with a label resolved to its version; hold ``_lock``."""
        m = self._models.get(name)
        if m is not None and m.removed:
            m = None
        if label:
            if m is None or label not in m.labels:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Unrecognized servable version label: {label}")
            version = m.labels[label]
        return m, version

    def get_servable(self, name: str, version: int | None = None,
                     label: str | None = None) -> Servable:
        with self._lock:
            m, version = self._lookup(name, version, label)
            if version is None:
                if m is not None:
                    live = [v for v, r in m.versions.items() if r.state == AVAILABLE]
                    if live:
                        return m.versions[max(live)].servable
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            rec = m.versions.get(version) if m is not None else None
            if rec is None or rec.state != AVAILABLE:
                raise ServingError("NOT_FOUND",
                                   f"Servable not found for request: Specific({name}, {version})")
            return rec.servable

    def model_status(self, name: str, version: int | None = None,
                     label: str | None = None) -> list[_Version]:
        with self._lock:
            m, version = self._lookup(name, version, label)
            if m is None or not m.versions:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is not None:
                if version not in m.versions:
                    raise ServingError("NOT_FOUND",
                                       f"Could not find version {version} of model {name}")
                return [m.versions[version]]
            return [m.versions[v] for v in sorted(m.versions, reverse=True)]

    def loaded(self) -> dict[str, list[int]]:
        """Model name -> versions available for inference (for logs and tests)."""
        with self._lock:
            return {n: sorted(v for v, r in m.versions.items() if r.state == AVAILABLE)
                    for n, m in self._models.items() if not m.removed}

    def wait_until(self, predicate, timeout: float) -> bool:
        """Block until ``predicate(self.loaded())`` is true (tests)."""
        end = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.loaded()):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True


# =================================================================================================
# Protocol-independent request handling
# =================================================================================================


def _input_mismatch(sig: Signature, sent: set[str]) -> ServingError:
    want = set(sig.inputs)
    return ServingError(
        "INVALID_ARGUMENT",
        f"input size does not match signature: {len(sent)}!={len(want)} "
        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(want))}}}). "
        f"Sent extra: {{{','.join(sorted(sent - want))}}}. "
        f"Missing but required: {{{','.join(sorted(want - sent))}}}.")


def validate_inputs(sig: Signature, inputs: dict[str, np.ndarray]) -> None:
    if set(inputs) != set(sig.inputs):
        raise _input_mismatch(sig, set(inputs))
    for i, (key, spec) in enumerate(sig.inputs.items()):
        arr = inputs[key]
        if spec.np_dtype is not None and arr.dtype != spec.np_dtype:
            raise ServingError("INVALID_ARGUMENT",
                               f"Expects arg[{i}] ('{key}') to be {spec.dtype_name} but "
                               f"{_np_dtype_name(arr.dtype)} is provided")
        if spec.shape is not None:
            shape = arr.shape
            if len(shape) != len(spec.shape) or any(
                    d is not None and d != s for s, d in zip(shape, spec.shape, strict=True)):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input '{key}' has shape [{','.join(map(str, shape))}], but the signature "
                    f"'{sig.name}' expects {spec.shape_text()} (-1: any size)")
            if shape and spec.shape[0] is None and shape[0] == 0:
                raise ServingError("INVALID_ARGUMENT",
                                   f"input '{key}' is an empty batch (0 rows): send at least "
                                   "one example")


def _np_dtype_name(dt) -> str:
    return "string" if dt.kind in "OSU" else np.dtype(dt).name



def map_error(exc: BaseException) -> BaseException:
    """A model-call failure as the ServingError TF Serving would answer (others unchanged)."""
    if isinstance(exc, ServingError):
        return exc
    tf = _tf()
    if isinstance(exc, tf.errors.OpError):
        code = {3: "INVALID_ARGUMENT", 9: "FAILED_PRECONDITION", 11: "OUT_OF_RANGE",
                8: "RESOURCE_EXHAUSTED"}.get(exc.error_code, "INTERNAL")
        return ServingError(code, (exc.message or str(exc)).strip().splitlines()[0])
    if isinstance(exc, (ValueError, TypeError)):
        return ServingError("INVALID_ARGUMENT", (str(exc) or type(exc).__name__).strip()
                            .splitlines()[0])
    return exc


class Service:
    """Predict / Classify / Regress / metadata / status on top of a ServerCore."""

    def __init__(self, core: ServerCore, opts: ServerOptions):
        self.core = core
        self.opts = opts

    # -- running -------------------------------------------------------------------------------
    def submit(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray]):
        """Queue a request for a batch (batching on): a concurrent Future of the outputs."""
        return self.core.batcher.submit((servable.key, sig.name),
                                        lambda x, s=servable, g=sig: s.call(g, x), inputs)

    def run(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray],
            deadline: float | None = None) -> dict[str, np.ndarray]:
        try:
            if self.core.batcher is None:
                return servable.call(sig, inputs)
            future = self.submit(servable, sig, inputs)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                future.cancel()
                raise ServingError("DEADLINE_EXCEEDED",
                                   "Deadline exceeded while waiting for a batch") from None
        except Exception as exc:  # noqa: BLE001 - TF raises many types for bad input
            raise map_error(exc) from None

    @staticmethod
    def signature(servable: Servable, name: str, rest: bool = False) -> Signature:
        name = name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(name)
        if sig is None:
            known = ", ".join(sorted(servable.signatures)) or "none"
            if rest:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Serving signature name: \"{name}\" not found in signature "
                                   f"def (model {servable.name} version {servable.version} has: "
                                   f"{known})")
            raise ServingError("FAILED_PRECONDITION",
                               f"Serving signature key \"{name}\" not found. (has: {known})")
        return sig

    @staticmethod
    def check_output_filter(sig: Signature, output_filter: list[str]) -> None:
        seen = set()
        for alias in output_filter:
            if alias not in sig.outputs:
                raise ServingError("INVALID_ARGUMENT",
                                   f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set "
                                   f"{{{','.join(sorted(sig.outputs))}}}.")
            if alias in seen:
                raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
            seen.add(alias)

    def predict_arrays(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray],
                       output_filter: list[str] | None = None,
                       deadline: float | None = None) -> dict[str, np.ndarray]:
        """Validate, run, filter: a whole Predict on the calling thread."""
        validate_inputs(sig, inputs)
        self.check_output_filter(sig, output_filter or [])
        outputs = self.run(servable, sig, inputs, deadline)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    # -- classify / regress --------------------------------------------------------------------
    def _examples_tensor(self, inp) -> np.ndarray:
        kind = inp.WhichOneof("kind")
        if kind == "example_list":
            serialized = [e.SerializeToString() for e in inp.example_list.examples]
        elif kind == "example_list_with_context":
            ctx = inp.example_list_with_context.context.SerializeToString()
            # context first: features of the example override the context's, as in TF Serving
            serialized = [ctx + e.SerializeToString()
                          for e in inp.example_list_with_context.examples]
        else:
            serialized = []
        if not serialized:
            raise ServingError("INVALID_ARGUMENT", "Input is empty.")
        arr = np.empty(len(serialized), dtype=object)
        arr[:] = serialized
        return arr

    def _example_signature(self, request, method: str):
        spec = request.model_spec
        servable = self.core.get_servable(
            spec.name, spec.version.value if spec.HasField("version") else None,
            spec.version_label or None)
        name = spec.signature_name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(name)
        if sig is None:
            raise ServingError("INVALID_ARGUMENT", f"No signature was found with the name: {name}")
        what = "classification" if method == CLASSIFY_METHOD else "regression"
        if self.opts.enable_signature_method_name_check and sig.method_name != method:
            raise ServingError("INVALID_ARGUMENT",
                               f"Expected {what} signature method_name to be {method}. Was: "
                               f"{sig.method_name}")
        if len(sig.inputs) != 1:
            raise ServingError("INVALID_ARGUMENT", "Expected one input Tensor.")
        if "inputs" not in sig.inputs:
            raise ServingError("FAILED_PRECONDITION",
                               f"No {what} inputs found in SignatureDef '{name}': its input must "
                               "be called 'inputs' (a string tensor of serialized tf.Example)")
        if not sig.inputs["inputs"].is_string:
            raise ServingError("FAILED_PRECONDITION",
                               f"Signature '{name}' input 'inputs' is "
                               f"{sig.inputs['inputs'].dtype_name}, {what} needs a string tensor "
                               "of serialized tf.Example")
        return servable, sig

    def classify(self, request, deadline: float | None = None):
        from tensorflow_serving.apis import classification_pb2

        servable, sig = self._example_signature(request, CLASSIFY_METHOD)
        if len(sig.outputs) not in (1, 2):
            raise ServingError("INVALID_ARGUMENT",
                               f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            raise ServingError("FAILED_PRECONDITION",
                               "Expected classification signature outputs to contain at least "
                               f"one of \"classes\" or \"scores\". Signature was: {sig.name}")
        examples = self._examples_tensor(request.input)
        n = len(examples)
        out = self.run(servable, sig, {"inputs": examples}, deadline)
        classes, scores = out.get("classes"), out.get("scores")
        for key, t, kind in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
            if t is None:
                continue
            if t.ndim != 2:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Expected Tensor shape: [batch_size num_classes] but got "
                                   f"{list(t.shape)} for {key}")
            good = t.dtype.kind in "OS" if key == "classes" else t.dtype == np.float32
            if not good:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Expected {key} Tensor of {kind}. Got: "
                                   f"{_np_dtype_name(t.dtype)}")
            if t.shape[0] != n:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Expected {key} output batch size of {n}. Got: {t.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise ServingError("INVALID_ARGUMENT",
                               "Tensors class and score should match in dim_size(1). Got "
                               f"{classes.shape[1]} vs. {scores.shape[1]}")
        num_classes = (classes if classes is not None else scores).shape[1]
        resp = classification_pb2.ClassificationResponse()
        self._fill_spec(resp.model_spec, servable, sig.name)
        for i in range(n):
            c = resp.result.classifications.add()
            for j in range(num_classes):
                cl = c.classes.add()
                if classes is not None:
                    label = classes[i, j]
                    cl.label = label.decode("utf-8", "replace") if isinstance(label, bytes) \
                        else str(label)
                if scores is not None:
                    cl.score = float(scores[i, j])
        return resp

    def regress(self, request, deadline: float | None = None):
        from tensorflow_serving.apis import regression_pb2

        servable, sig = self._example_signature(request, REGRESS_METHOD)
        if len(sig.outputs) != 1:
            raise ServingError("INVALID_ARGUMENT", "Expected one output Tensor.")
        if "outputs" not in sig.outputs:
            raise ServingError("FAILED_PRECONDITION",
                               f"No regression outputs found in SignatureDef: {sig.name} (its "
                               "output must be called 'outputs')")
        examples = self._examples_tensor(request.input)
        n = len(examples)
        t = self.run(servable, sig, {"inputs": examples}, deadline)["outputs"]
        if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
            raise ServingError("INVALID_ARGUMENT",
                               "Expected output Tensor shape to be either [batch_size] or "
                               f"[batch_size, 1] but got {list(t.shape)}")
        if t.dtype != np.float32:
            raise ServingError("INVALID_ARGUMENT",
                               "Expected output Tensor of DT_FLOAT. Got: "
                               f"{_np_dtype_name(t.dtype)}")
        if t.shape[0] != n:
            raise ServingError("INVALID_ARGUMENT",
                               f"Input batch size did not match output batch size: {n} vs. "
                               f"{t.shape[0]}")
        resp = regression_pb2.RegressionResponse()
        self._fill_spec(resp.model_spec, servable, sig.name)
        for v in t.reshape(-1):
            resp.result.regressions.add().value = float(v)
        return resp

    # -- metadata / status ---------------------------------------------------------------------
    @staticmethod
    def _fill_spec(spec, servable: Servable, signature_name: str | None) -> None:
        spec.name = servable.name
        spec.version.value = servable.version
        if signature_name is not None:
            spec.signature_name = signature_name

    def metadata(self, name: str, version: int | None, label: str | None,
                 fields: list[str]):
        from tensorflow_serving.apis import get_model_metadata_pb2 as md

        if not fields:
            raise ServingError("INVALID_ARGUMENT",
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {f} is not supported")
        servable = self.core.get_servable(name, version, label)
        resp = md.GetModelMetadataResponse()
        self._fill_spec(resp.model_spec, servable, None)
        sdm = md.SignatureDefMap()
        for k, v in servable.signature_defs.items():
            sdm.signature_def[k].CopyFrom(v)
        resp.metadata["signature_def"].Pack(sdm)
        return resp, sdm

    def status(self, name: str, version: int | None, label: str | None):
        from tensorflow_serving.apis import get_model_status_pb2 as gs

        if not name:
            raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
        resp = gs.GetModelStatusResponse()
        for rec in self.core.model_status(name, version, label):
            s = resp.model_version_status.add()
            s.version = rec.version
            s.state = _STATE_ENUM[rec.state]
            s.status.SetInParent()
            codes = s.status.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
            s.status.error_code = codes[rec.error_code].number if rec.error_code in codes else 2
            s.status.error_message = rec.error_message
        return resp


# =================================================================================================
# REST front end
# =================================================================================================


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode("utf-8")


def _proto_dict(msg, preserve_names: bool = False) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=preserve_names)


class RestApi:
    """TensorFlow Serving's REST API: ``handle(method, path, body) -> (status, json bytes)``.
    Runs on a worker thread, never on the IO loop."""

    def __init__(self, service: Service, opts: ServerOptions):
        self.service = service
        self.opts = opts

    def handle(self, method: str, path: str, body: bytes,
               deadline: float | None = None) -> tuple[int, bytes]:
        try:
            return 200, _json_bytes(self._dispatch(method, path, body, deadline))
        except ServingError as exc:
            return exc.http_status, _json_bytes({"error": exc.message})
        except Exception as exc:  # noqa: BLE001 - any bug becomes a 500 with a JSON body
            log.exception("REST %s %s failed", method, path)
            return 500, _json_bytes({"error": f"Internal: {type(exc).__name__}: {exc}"})

    @staticmethod
    def _spec(m) -> tuple[str, int | None, str | None]:
        name = urllib.parse.unquote(m.group(1) or "")
        version = None
        if m.group(2):
            version = int(m.group(2))
            if version > _INT64_MAX:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Failed to convert version: {m.group(2)} to numeric.")
        label = urllib.parse.unquote(m.group(3)) if m.group(3) else None
        return name, version, label

    def _dispatch(self, method: str, path: str, body: bytes, deadline: float | None) -> dict:
        if not path.lower().startswith("/v1/"):
            raise ServingError("NOT_FOUND", f"No handler for {method} {path}: the REST API is "
                               "under /v1/models/...")
        malformed = ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label = self._spec(m)
            verb = m.group(4).lower()
            doc = parse_json_body(body)
            sig_name = doc.get("signature_name", "")
            if not isinstance(sig_name, str):
                raise ServingError("INVALID_ARGUMENT",
                                   f"JSON Value: {_short(sig_name)} not formatted correctly. "
                                   "'signature_name' key must be a string value.")
            if verb == "predict":
                return self._predict(name, version, label, sig_name, doc, deadline)
            return self._classify_regress(verb, name, version, label, sig_name, doc, deadline)
        if method == "GET":
            m = _STATUS_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label = self._spec(m)
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            if m.group(4):
                resp, sdm = self.service.metadata(name, version, label, ["signature_def"])
                return {"model_spec": _proto_dict(resp.model_spec, True),
                        "metadata": {"signature_def": _proto_dict(sdm, True)}}
            return _proto_dict(self.service.status(name, version, label))
        raise malformed

    def _predict(self, name, version, label, sig_name, doc, deadline) -> dict:
        servable, sig, inputs, columnar = self._predict_plan(name, version, label, sig_name, doc)
        outputs = self.service.run(servable, sig, inputs, deadline)
        return outputs_to_rest(outputs, columnar=columnar)

    def predict_plan(self, path: str, body: bytes):
        """For ``POST ...:predict``: everything before inference (parse, resolve, convert,
        validate) as ``(servable, signature, inputs, columnar)``; None for other requests."""
        m = _PREDICT_RE.fullmatch(path)
        if not m or m.group(4).lower() != "predict":
            return None
        name, version, label = self._spec(m)
        doc = parse_json_body(body)
        sig_name = doc.get("signature_name", "")
        if not isinstance(sig_name, str):
            raise ServingError("INVALID_ARGUMENT",
                               f"JSON Value: {_short(sig_name)} not formatted correctly. "
                               "'signature_name' key must be a string value.")
        return self._predict_plan(name, version, label, sig_name, doc)

    def _predict_plan(self, name, version, label, sig_name, doc):
        servable = self.service.core.get_servable(name, version, label)
        sig = self.service.signature(servable, sig_name, rest=True)
        if not sig.inputs:
            raise ServingError("INVALID_ARGUMENT",
                               f"Failed to get input map for signature: {sig_name or 'DEFAULT'}")
        has_rows, has_cols = "instances" in doc, "inputs" in doc
        if has_rows and has_cols:
            raise ServingError("INVALID_ARGUMENT",
                               "Not formatted correctly expecting only one of 'inputs' or "
                               "'instances' keys to exist")
        if not has_rows and not has_cols:
            raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
        if has_rows:
            inputs = instances_to_inputs(doc["instances"], sig)
        else:
            inputs = columnar_to_inputs(doc["inputs"], sig)
        validate_inputs(sig, inputs)
        return servable, sig, inputs, has_cols

    @staticmethod
    def error_reply(exc: BaseException) -> tuple[int, bytes]:
        exc = map_error(exc)
        if isinstance(exc, ServingError):
            return exc.http_status, _json_bytes({"error": exc.message})
        log.error("REST request failed", exc_info=exc)
        return 500, _json_bytes({"error": f"Internal: {type(exc).__name__}: {exc}"})

    def _classify_regress(self, verb, name, version, label, sig_name, doc, deadline) -> dict:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        req = (classification_pb2.ClassificationRequest() if verb == "classify"
               else regression_pb2.RegressionRequest())
        req.model_spec.name = name
        if version is not None:
            req.model_spec.version.value = version
        if label:
            req.model_spec.version_label = label
        req.model_spec.signature_name = sig_name
        examples = doc.get("examples")
        if examples is None:
            raise ServingError("INVALID_ARGUMENT",
                               f"When method is {verb}, key 'examples' is expected and was not "
                               "found")
        if not isinstance(examples, list):
            raise ServingError("INVALID_ARGUMENT", "Expecting 'examples' value to be an list/array")
        if not examples:
            raise ServingError("INVALID_ARGUMENT", "'examples' value is an empty array")
        if "context" in doc:
            target = req.input.example_list_with_context
            target.context.CopyFrom(json_to_example(doc["context"]))
        else:
            target = req.input.example_list
        for ex in examples:
            target.examples.add().CopyFrom(json_to_example(ex))
        if verb == "classify":
            resp = self.service.classify(req, deadline)
            return {"results": [[[c.label, _f32(c.score)] for c in cl.classes]
                                for cl in resp.result.classifications]}
        resp = self.service.regress(req, deadline)
        return {"results": [_f32(r.value) for r in resp.result.regressions]}


def _f32(x: float) -> float:
    return float(str(np.float32(x)))


def _make_rest_handler(server: "ModelServer"):
    import tornado.web

    @tornado.web.stream_request_body
    class RestHandler(tornado.web.RequestHandler):
        SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
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
            self._chunks: list[bytes] = []
            self._size = 0
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

        async def _handle(self, method: str):
            if self._too_big:
                self._reply(413, _json_bytes({"error": (
                    f"Request body is larger than the limit of {self.limit} bytes "
                    "(--max_request_bytes)")}))
                return
            body = b"".join(self._chunks)
            timeout = self.server.opts.rest_api_timeout_in_ms / 1000
            deadline = time.monotonic() + timeout if timeout > 0 else None
            loop = asyncio.get_running_loop()
            api, pool = self.server.rest, self.server.rest_pool
            try:
                if method == "POST" and len(body) <= INLINE_JSON_BYTES:
                    # Predict: parse and convert here (small bodies take microseconds), run the
                    # model off the IO loop (a worker thread, or the batch threads).
                    try:
                        plan = api.predict_plan(self.request.path, body)
                    except Exception as exc:  # noqa: BLE001
                        self._reply(*api.error_reply(exc))
                        return
                    if plan is not None:
                        self._reply(*await asyncio.wait_for(
                            self._predict(api, plan, loop, pool), timeout or None))
                        return
                work = loop.run_in_executor(pool, api.handle, method, self.request.path, body,
                                            deadline)
                self._reply(*await asyncio.wait_for(work, timeout or None))
            except asyncio.TimeoutError:
                self._reply(504, _json_bytes({"error": (
                    f"Deadline exceeded: the request took longer than "
                    f"{self.server.opts.rest_api_timeout_in_ms} ms (--rest_api_timeout_in_ms)")}))

        async def _predict(self, api, plan, loop, pool):
            servable, sig, inputs, columnar = plan
            service = api.service
            try:
                if service.core.batcher is not None:
                    outputs = await asyncio.wrap_future(service.submit(servable, sig, inputs))
                else:
                    outputs = await loop.run_in_executor(pool, servable.call, sig, inputs)
                if sum(v.size for v in outputs.values()) > INLINE_JSON_VALUES:
                    result = await loop.run_in_executor(pool, outputs_to_rest, outputs, columnar)
                else:
                    result = outputs_to_rest(outputs, columnar)
                return 200, _json_bytes(result)
            except Exception as exc:  # noqa: BLE001
                return api.error_reply(exc)

        def _reply(self, status: int, payload: bytes):
            from http import HTTPStatus

            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = "Client Closed Request" if status == 499 else "Error"
            self.set_status(status, reason=reason)
            self.finish(payload)

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

        async def options(self, *_):
            if self.server.opts.rest_api_enable_cors_support:
                self.set_status(204)
                self.finish()
            else:
                await self._handle("OPTIONS")

    RestHandler.server = server  # class attribute: set_default_headers runs before initialize
    return RestHandler


# =================================================================================================
# gRPC front end
# =================================================================================================


def _grpc_servicers(server: "ModelServer"):
    """PredictionService and ModelService for a threaded ``grpc.server`` (each call runs on one
    of --grpc_max_threads threads; with batching it waits there for its batch). A ``grpc.aio``
    server on the IO loop measured ~20% more CPU per request here, so the threaded one it is."""
    import grpc
    from tensorflow_serving.apis import (
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    tf = _tf()
    service = server.service

    def deadline_of(context) -> float | None:
        left = context.time_remaining()
        return None if left is None else time.monotonic() + left

    def guard(fn):
        def wrapper(self, request, context):
            try:
                return fn(self, request, context)
            except Exception as exc:  # noqa: BLE001
                exc = map_error(exc)
                if isinstance(exc, ServingError):
                    code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN)
                    context.abort(code, exc.message)  # raises
                log.error("gRPC %s failed", fn.__name__, exc_info=exc)
                context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

        wrapper.__name__ = fn.__name__
        return wrapper

    def spec_args(spec):
        return (spec.name, spec.version.value if spec.HasField("version") else None,
                spec.version_label or None)

    def predict_inputs(request):
        servable = service.core.get_servable(*spec_args(request.model_spec))
        sig = service.signature(servable, request.model_spec.signature_name)
        inputs = {}
        order = list(sig.inputs)
        for key, proto in request.inputs.items():
            spec = sig.inputs.get(key)
            if spec is None:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input tensor alias not found in signature: {key}. Inputs expected to "
                    f"be in the set {{{','.join(order)}}}.")
            if proto.dtype != spec.dtype_enum:
                got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "invalid"
                raise ServingError("INVALID_ARGUMENT",
                                   f"Expects arg[{order.index(key)}] ('{key}') to be "
                                   f"{spec.dtype_name} but {got} is provided")
            try:
                inputs[key] = tf.make_ndarray(proto)
            except Exception as exc:  # noqa: BLE001
                raise ServingError("INVALID_ARGUMENT",
                                   f"input '{key}' is not a valid TensorProto: {exc}") from None
            if spec.is_string and inputs[key].dtype != object:
                inputs[key] = inputs[key].astype(object)
        service.check_output_filter(sig, list(request.output_filter))
        validate_inputs(sig, inputs)
        return servable, sig, inputs

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guard
        def Predict(self, request, context):
            servable, sig, inputs = predict_inputs(request)
            outputs = service.run(servable, sig, inputs, deadline_of(context))
            resp = predict_pb2.PredictResponse()
            service._fill_spec(resp.model_spec, servable, sig.name)
            for k in list(request.output_filter) or list(outputs):
                resp.outputs[k].CopyFrom(tf.make_tensor_proto(outputs[k]))
            return resp

        @guard
        def Classify(self, request, context):
            return service.classify(request, deadline_of(context))

        @guard
        def Regress(self, request, context):
            return service.regress(request, deadline_of(context))

        @guard
        def GetModelMetadata(self, request, context):
            resp, _ = service.metadata(*spec_args(request.model_spec),
                                       list(request.metadata_field))
            return resp

        @guard
        def MultiInference(self, request, context):
            raise ServingError("UNIMPLEMENTED",
                               "MultiInference is not implemented by the local server")

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guard
        def GetModelStatus(self, request, context):
            return service.status(*spec_args(request.model_spec))

        @guard
        def HandleReloadConfigRequest(self, request, context):
            service.core.reload_config(request.config)
            resp = model_management_pb2.ReloadConfigResponse()
            resp.status.SetInParent()
            return resp

    return (PredictionService(),
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
            ModelService(), model_service_pb2_grpc.add_ModelServiceServicer_to_server)


def _channel_args(text: str) -> list[tuple[str, Any]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


# =================================================================================================
# The server
# =================================================================================================


class ModelServer:
    """Both front ends over one ServerCore: REST on an asyncio IO loop in a background thread
    (tornado), gRPC on grpcio's threaded server; models run on worker or batch threads.
    ``start()`` loads the initial models (as tensorflow_model_server does, before it opens its
    ports) and returns; ``stop()`` shuts down.

    >>> server = ModelServer(ServerOptions(port=0, rest_api_port=0,
    ...                      model_name="mnist_mlp", model_base_path="saved_models/mnist_mlp"))
    >>> server.start().grpc_port, server.rest_port   # the ports actually bound
    """

    def __init__(self, opts: ServerOptions):
        self.opts = opts
        self.core = ServerCore(opts)
        self.service = Service(self.core, opts)
        self.rest = RestApi(self.service, opts)
        rest_threads, grpc_threads = opts.threads()
        self.rest_pool = ThreadPoolExecutor(max_workers=rest_threads, thread_name_prefix="rest")
        self.grpc_pool = ThreadPoolExecutor(max_workers=grpc_threads, thread_name_prefix="grpc")
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc = None
        self._http = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "ModelServer":
        self.core.start()
        try:
            if self.opts.port is not None:
                self._start_grpc()
            if self.opts.rest_api_port is not None:
                self._start_io()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_grpc(self) -> None:
        import grpc

        options = [("grpc.max_receive_message_length", self.opts.max_request_bytes),
                   ("grpc.max_send_message_length", 2**31 - 1),
                   ("grpc.so_reuseport", 0)]
        options += _channel_args(self.opts.grpc_channel_arguments)
        self._grpc = grpc.server(self.grpc_pool, options=options,
                                 maximum_concurrent_rpcs=None)
        pred, add_pred, models, add_models = _grpc_servicers(self)
        add_pred(pred, self._grpc)
        add_models(models, self._grpc)
        host = f"[{self.opts.host}]" if ":" in self.opts.host else self.opts.host
        try:
            port = self._grpc.add_insecure_port(f"{host}:{self.opts.port}")
        except RuntimeError as exc:
            raise UserError(f"cannot listen for gRPC on {host}:{self.opts.port}: {exc}") from None
        if not port:
            raise UserError(f"cannot listen for gRPC on {host}:{self.opts.port} (port in use?)")
        self._grpc.start()
        self.grpc_port = port
        log.info("Running gRPC ModelServer at %s:%d ...", self.opts.host, port)

    async def _setup_rest(self) -> None:
        import tornado.httpserver
        import tornado.netutil
        import tornado.web

        try:
            sockets = tornado.netutil.bind_sockets(self.opts.rest_api_port,
                                                   address=self.opts.host)
        except OSError as exc:
            raise UserError(f"cannot listen for REST on {self.opts.host}:"
                            f"{self.opts.rest_api_port}: {exc}") from None
        app = tornado.web.Application([(r"/.*", _make_rest_handler(self))],
                                      log_function=_log_request)
        limit = self.opts.max_request_bytes
        self._http = tornado.httpserver.HTTPServer(
            app, max_body_size=2 * limit + (1 << 20), max_buffer_size=limit + (1 << 20),
            idle_connection_timeout=300)
        self._http.add_sockets(sockets)
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
            except asyncio.TimeoutError:
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
        self.rest_pool.shutdown(wait=False, cancel_futures=True)
        self.grpc_pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "ModelServer":
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
    import tornado

    tf = _tf()
    print(f"ksuite local model server (TensorFlow Serving APIs)\n"
          f"TensorFlow Library: {tf.__version__}\ngrpcio: {grpc.__version__}\n"
          f"tornado: {tornado.version}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    opts, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.version:
        _print_versions()
        return 0
    if opts.enable_batching:
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
    server = ModelServer(opts)
    server.start()
    loaded = server.core.loaded()
    print(f"serving {', '.join(f'{n} {v}' for n, v in loaded.items()) or 'no model yet'}; "
          f"gRPC {opts.host}:{server.grpc_port or '-'}  REST {opts.host}:{server.rest_port or '-'}",
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
