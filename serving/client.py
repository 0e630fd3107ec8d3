"""Client for TensorFlow Serving (and the local server): REST and gRPC (``ksuite predict``).

REST (``RestClient``) needs only ``requests``; gRPC (``GrpcClient``) uses the official
``tensorflow_serving.apis`` stubs, which import TensorFlow for its tensor protos, so it is loaded
only when a ``GrpcClient`` is made.

    >>> from serving.client import RestClient, GrpcClient
    >>> rest = RestClient("http://localhost:8501")
    >>> rest.predict("mnist_mlp", instances=images)            # row format: {"predictions": ...}
    >>> rest.predict("mnist_mlp", inputs={"images": images})   # columnar: {"outputs": {...}}
    >>> rest.predict("mnist_mlp", instances=images, label="canary")
    >>> grpc = GrpcClient("localhost:8500")
    >>> p = grpc.predict("mnist_mlp", {"images": images}, version=3)
    >>> p["probabilities"], p.version

Both take a ``timeout`` (seconds per attempt) and ``retries`` (extra attempts, with exponential
back-off, only when the server is unreachable or answers UNAVAILABLE). Every failure is a
:class:`serving.ServingError` with ``.code`` (``NOT_FOUND``, ``INVALID_ARGUMENT``,
``DEADLINE_EXCEEDED``, ``UNAVAILABLE``, ...), ``.http_status`` and the server's message.
Bytes values are sent as ``{"b64": ...}`` over REST, as TensorFlow Serving expects.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, HTTP_TO_CODE, ServingError
from shared.errors import UserError, exit_on_user_error

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 0.1


def to_json_value(value: Any) -> Any:
    """Numpy arrays/scalars, bytes, and nested lists/dicts of them as TF Serving JSON
    (bytes -> ``{"b64": ...}``)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return to_json_value(value.tolist())
        if value.dtype.kind == "U":
            return value.tolist()
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def _version_path(model: str, version: int | None, label: str | None) -> str:
    if not model:
        raise ValueError("a model name is required")
    if version is not None and label:
        raise ValueError("give a version or a label, not both")
    path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label:
        path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path


def _sleep_before_retry(backoff: float, attempt: int) -> None:
    time.sleep(min(backoff * (2 ** attempt), 5.0))


# =================================================================================================
# REST
# =================================================================================================


class RestClient:
    """TensorFlow Serving's REST API (``/v1/models/...``)."""

    def __init__(self, url: str = f"http://localhost:{DEFAULT_REST_PORT}", *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, session=None):
        import requests

        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self._requests = requests
        self.session = session or requests.Session()

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> dict:
        """One API call with bounded retries; returns the decoded JSON answer."""
        requests = self._requests
        data = None
        if body is not None:
            data = json.dumps(body, allow_nan=True, separators=(",", ":")).encode("utf-8")
        url = self.url + path
        for attempt in range(self.retries + 1):
            try:
                r = self.session.request(method, url, data=data, timeout=self.timeout,
                                         headers={"Content-Type": "application/json"})
            except requests.exceptions.ConnectTimeout:
                err = ServingError("UNAVAILABLE", f"cannot reach {self.url}: connection timed "
                                   f"out after {self.timeout} s")
            except requests.exceptions.Timeout:
                raise ServingError("DEADLINE_EXCEEDED",
                                   f"no answer from {url} within {self.timeout} s") from None
            except requests.exceptions.ConnectionError as exc:
                reason = str(exc.args[0] if exc.args else exc)
                if "Connection refused" in reason:
                    reason = "connection refused (is the server running?)"
                err = ServingError("UNAVAILABLE", f"cannot reach {self.url}: {reason}")
            except requests.exceptions.RequestException as exc:
                raise ServingError("UNKNOWN", f"{method} {url} failed: {exc}") from None
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        raise ServingError("INTERNAL", f"{method} {url}: the server answered "
                                           f"200 with a body that is not JSON: "
                                           f"{r.text[:200]!r}") from None
                err = self._error(r)
            if not err.retryable or attempt == self.retries:
                raise err
            _sleep_before_retry(self.backoff, attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _error(r) -> ServingError:
        message = None
        try:
            doc = r.json()
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                message = doc["error"]
        except ValueError:
            pass
        if message is None:
            message = (r.text or r.reason or "").strip()[:500] or f"HTTP {r.status_code}"
        code = HTTP_TO_CODE.get(r.status_code, "UNKNOWN" if r.status_code >= 500 else
                                "INVALID_ARGUMENT")
        return ServingError(code, message, http_status=r.status_code)

    # -- API -----------------------------------------------------------------------------------
    def model_status(self, model: str, version: int | None = None,
                     label: str | None = None) -> dict:
        """``{"model_version_status": [{"version", "state", "status"}, ...]}``."""
        return self.request("GET", _version_path(model, version, label))

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """``{"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {...}}}}``."""
        return self.request("GET", _version_path(model, version, label) + "/metadata")

    def predict(self, model: str, instances: Any = None, *, inputs: Any = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> dict:
        """Row format (``instances``: one element per example, or a list of
        ``{input: value}`` objects) answers ``{"predictions": ...}``; columnar format
        (``inputs``: a tensor, or ``{input: tensor}``) answers ``{"outputs": ...}``."""
        if (instances is None) == (inputs is None):
            raise ValueError("give exactly one of instances (row format) or inputs (columnar)")
        body: dict[str, Any] = {}
        if signature_name:
            body["signature_name"] = signature_name
        if instances is not None:
            body["instances"] = to_json_value(instances)
        else:
            body["inputs"] = to_json_value(inputs)
        return self.request("POST", _version_path(model, version, label) + ":predict", body)

    def _examples(self, verb, model, examples, context, signature_name, version, label):
        body: dict[str, Any] = {"examples": to_json_value(list(examples))}
        if context is not None:
            body["context"] = to_json_value(context)
        if signature_name:
            body["signature_name"] = signature_name
        return self.request("POST", _version_path(model, version, label) + f":{verb}",
                            body)["results"]

    def classify(self, model: str, examples: list[dict], *, context: dict | None = None,
                 signature_name: str | None = None, version: int | None = None,
                 label: str | None = None) -> list[list[list]]:
        """Per example, ``[[label, score], ...]``. Examples are ``{feature: value(s)}``."""
        return self._examples("classify", model, examples, context, signature_name, version,
                              label)

    def regress(self, model: str, examples: list[dict], *, context: dict | None = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> list[float]:
        """One value per example."""
        return self._examples("regress", model, examples, context, signature_name, version,
                              label)


# =================================================================================================
# gRPC
# =================================================================================================


@dataclass
class Prediction:
    """A gRPC Predict answer: output name -> numpy array, and which version answered."""

    outputs: dict[str, np.ndarray]
    model: str
    version: int
    signature_name: str
    model_spec: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.outputs[key]

    def to_json(self) -> dict:
        return {"model_spec": {"name": self.model, "version": str(self.version),
                               "signature_name": self.signature_name},
                "outputs": {k: _array_json(k, v) for k, v in self.outputs.items()}}


def _array_json(name: str, arr: np.ndarray) -> Any:
    if arr.dtype.kind in "OS":
        def leaf(b):
            if isinstance(b, bytes) and not name.endswith("_bytes"):
                try:
                    return b.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(b).decode("ascii")} if isinstance(b, bytes) else b

        def walk(x):
            return [walk(v) for v in x] if isinstance(x, list) else leaf(x)

        return walk(arr.tolist())
    if arr.dtype == np.float32:
        return np.asarray(arr.astype(str), dtype=np.float64).tolist()
    return arr.tolist()


def _to_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (bytes, str)):
        arr = np.array(value, dtype=object)
    else:
        arr = np.asarray(value)
        if arr.dtype.kind in "SU":  # numpy's fixed-width bytes would drop trailing NULs
            arr = np.array(value, dtype=object)
    if arr.dtype.kind in "OU":
        flat = [v.encode("utf-8") if isinstance(v, str) else
                base64.b64decode(v["b64"]) if isinstance(v, dict) and "b64" in v else v
                for v in arr.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        arr = out.reshape(arr.shape)
    return arr


def rows_to_columns(instances: list) -> Any:
    """Row-format instances as columnar inputs (what gRPC sends)."""
    if isinstance(instances, (np.ndarray, dict)):
        return instances
    if not isinstance(instances, list) or not instances:
        raise ValueError("instances must be a non-empty list")
    first = instances[0]
    if isinstance(first, dict) and not (len(first) == 1 and "b64" in first):
        return {k: [row[k] for row in instances] for k in first}
    return instances


class GrpcClient:
    """TensorFlow Serving's gRPC API (PredictionService + ModelService)."""

    def __init__(self, target: str = f"localhost:{DEFAULT_GRPC_PORT}", *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, max_message_bytes: int = 64 * 1024 * 1024):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target = target
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self._grpc = grpc
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._input_names: dict[tuple, list[str]] = {}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def call(self, method, request):
        """One RPC (a stub method) with bounded retries on UNAVAILABLE."""
        grpc = self._grpc
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() is not None else "UNKNOWN"
                details = exc.details() or str(exc)
                if code == "UNAVAILABLE":
                    details = f"cannot reach {self.target}: {details}"
                elif code == "DEADLINE_EXCEEDED":
                    details = f"no answer from {self.target} within {self.timeout} s ({details})"
                err = ServingError(code, details)
            if not err.retryable or attempt == self.retries:
                raise err
            _sleep_before_retry(self.backoff, attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _fill_spec(spec, model, version, label, signature_name=None) -> None:
        if version is not None and label:
            raise ValueError("give a version or a label, not both")
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    # -- predict -------------------------------------------------------------------------------
    def predict_request(self, model: str, inputs: Any, *, signature_name: str | None = None,
                        version: int | None = None, label: str | None = None,
                        output_filter: list[str] | None = None):
        """The ``PredictRequest`` ``predict`` sends (build once, send many: see benchmarks)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest()
        self._fill_spec(req.model_spec, model, version, label, signature_name)
        if not isinstance(inputs, dict):
            names = self._signature_inputs(model, version, label, signature_name)
            if len(names) != 1:
                raise ServingError("INVALID_ARGUMENT",
                                   f"signature takes several inputs ({', '.join(names)}): pass "
                                   "a dict of named inputs")
            inputs = {names[0]: inputs}
        for name, value in inputs.items():
            req.inputs[name].CopyFrom(tf.make_tensor_proto(_to_array(value)))
        if output_filter:
            req.output_filter.extend(output_filter)
        return req

    def predict(self, model: str, inputs: Any, *, signature_name: str | None = None,
                version: int | None = None, label: str | None = None,
                output_filter: list[str] | None = None) -> Prediction:
        """``inputs``: ``{input name: array}``, or one array for a single-input signature."""
        req = self.predict_request(model, inputs, signature_name=signature_name,
                                   version=version, label=label, output_filter=output_filter)
        return self.parse_predict(self.call(self.prediction.Predict, req))

    @staticmethod
    def parse_predict(resp) -> Prediction:
        import tensorflow as tf

        outputs = {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}
        spec = resp.model_spec
        return Prediction(outputs, spec.name, spec.version.value, spec.signature_name)

    def _signature_inputs(self, model, version, label, signature_name) -> list[str]:
        key = (model, version, label, signature_name or "serving_default")
        if key not in self._input_names:
            md = self.metadata(model, version=version, label=label)
            sigs = md["metadata"]["signature_def"]["signature_def"]
            sig = sigs.get(key[3])
            if sig is None:
                raise ServingError("INVALID_ARGUMENT", f"model {model} has no signature "
                                   f"{key[3]!r} (has: {', '.join(sorted(sigs))})")
            self._input_names[key] = sorted(sig.get("inputs", {}))
        return self._input_names[key]

    # -- classify / regress --------------------------------------------------------------------
    def _input(self, inp, examples, context) -> None:
        if context is not None:
            target = inp.example_list_with_context
            target.context.CopyFrom(to_example(context))
        else:
            target = inp.example_list
        for ex in examples:
            target.examples.add().CopyFrom(to_example(ex))

    def classify(self, model: str, examples: list, *, context: Any = None,
                 signature_name: str | None = None, version: int | None = None,
                 label: str | None = None) -> list[list[tuple[str, float]]]:
        """Per example, ``[(label, score), ...]``. Examples: dicts or ``tf.train.Example``."""
        from tensorflow_serving.apis import classification_pb2

        req = classification_pb2.ClassificationRequest()
        self._fill_spec(req.model_spec, model, version, label, signature_name)
        self._input(req.input, examples, context)
        resp = self.call(self.prediction.Classify, req)
        return [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]

    def regress(self, model: str, examples: list, *, context: Any = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> list[float]:
        from tensorflow_serving.apis import regression_pb2

        req = regression_pb2.RegressionRequest()
        self._fill_spec(req.model_spec, model, version, label, signature_name)
        self._input(req.input, examples, context)
        resp = self.call(self.prediction.Regress, req)
        return [r.value for r in resp.result.regressions]

    # -- metadata / status / config ------------------------------------------------------------
    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """Same shape as the REST metadata answer."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2 as md

        req = md.GetModelMetadataRequest()
        self._fill_spec(req.model_spec, model, version, label)
        req.metadata_field.append("signature_def")
        resp = self.call(self.prediction.GetModelMetadata, req)
        sdm = md.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        kw = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        return {"model_spec": json_format.MessageToDict(resp.model_spec, **kw),
                "metadata": {"signature_def": json_format.MessageToDict(sdm, **kw)}}

    def model_status(self, model: str, version: int | None = None,
                     label: str | None = None) -> dict:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(req.model_spec, model, version, label)
        resp = self.call(self.models.GetModelStatus, req)
        return json_format.MessageToDict(resp, always_print_fields_with_no_presence=True)

    def reload_config(self, config) -> None:
        """Send a ModelServerConfig (HandleReloadConfigRequest)."""
        from tensorflow_serving.apis import model_management_pb2

        req = model_management_pb2.ReloadConfigRequest()
        req.config.CopyFrom(config)
        resp = self.call(self.models.HandleReloadConfigRequest, req)
        if resp.status.error_code != 0:
            raise ServingError("UNKNOWN", resp.status.error_message)


def to_example(obj: Any):
    """A ``tf.train.Example`` from ``{feature: value | list}`` (int/bool -> int64_list,
    float -> float_list, str/bytes -> bytes_list) or an Example (returned as is)."""
    from tensorflow.core.example import example_pb2

    if isinstance(obj, example_pb2.Example):
        return obj
    if hasattr(obj, "SerializeToString") and type(obj).__name__ == "Example":
        return example_pb2.Example.FromString(obj.SerializeToString())
    if not isinstance(obj, dict):
        raise ValueError(f"an example must be a dict of features, got {type(obj).__name__}")
    ex = example_pb2.Example()
    for name, value in obj.items():
        values = value.reshape(-1).tolist() if isinstance(value, np.ndarray) else \
            (list(value) if isinstance(value, (list, tuple)) else [value])
        f = ex.features.feature[name]
        for v in values:
            if isinstance(v, (bool, int, np.integer, np.bool_)):
                f.int64_list.value.append(int(v))
            elif isinstance(v, (float, np.floating)):
                f.float_list.value.append(float(v))
            elif isinstance(v, str):
                f.bytes_list.value.append(v.encode("utf-8"))
            elif isinstance(v, (bytes, bytearray)):
                f.bytes_list.value.append(bytes(v))
            elif isinstance(v, dict) and "b64" in v:
                f.bytes_list.value.append(base64.b64decode(v["b64"]))
            else:
                raise ValueError(f"feature {name!r}: unsupported value {v!r}")
    return ex


# =================================================================================================
# Command line
# =================================================================================================


def _load_data(text: str, what: str) -> Any:
    """JSON text, ``@file.json`` or ``@file.npy``."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UserError(f"{what}: no such file: {path}")
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what}: not valid JSON ({exc.msg} at offset {exc.pos})") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ksuite predict",
        description="Query a TensorFlow Serving server (or `ksuite serve`) over REST or gRPC: "
                    "predict (row 'instances' or columnar 'inputs'), classify/regress "
                    "tf.Example features, model status and metadata. Prints JSON.",
        epilog=(
            "DATA is JSON text, @file.json, @file.npy (one array) or @file.npz (named arrays).\n"
            "examples:\n"
            "  ksuite predict mnist_mlp --status\n"
            "  ksuite predict mnist_mlp --metadata --protocol grpc\n"
            "  ksuite predict mnist_mlp --instances @digits.npy --label canary\n"
            "  ksuite predict mnist_mlp --inputs '{\"images\": [[[0, 0, ...]]]}' --version 3\n"
            "  ksuite predict mymodel --classify --examples '[{\"x\": 1.5}]' "
            "--signature classify"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model name (as in models.config / --model_name)")
    c = p.add_argument_group("server")
    c.add_argument("--protocol", choices=("rest", "grpc"), default="rest",
                   help="API to use (default: rest)")
    c.add_argument("--host", default="localhost", help="server host (default: localhost)")
    c.add_argument("--port", type=int, default=None,
                   help=f"server port (default: {DEFAULT_REST_PORT} for REST, "
                        f"{DEFAULT_GRPC_PORT} for gRPC)")
    c.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per attempt (default: %(default)s)")
    c.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                   help="extra attempts when the server is unreachable or unavailable "
                        "(default: %(default)s)")
    v = p.add_argument_group("which version").add_mutually_exclusive_group()
    v.add_argument("--version", type=int, help="a specific version")
    v.add_argument("--label", help="a version label (e.g. stable, canary)")
    p.add_argument("--signature", help="signature name (default: serving_default)")
    a = p.add_argument_group("what to ask (default: predict)").add_mutually_exclusive_group()
    a.add_argument("--status", action="store_true", help="model version status")
    a.add_argument("--metadata", action="store_true", help="signature defs")
    a.add_argument("--classify", action="store_true", help="classify --examples")
    a.add_argument("--regress", action="store_true", help="regress --examples")
    d = p.add_argument_group("data").add_mutually_exclusive_group()
    d.add_argument("--instances", metavar="DATA", help="predict, row format")
    d.add_argument("--inputs", metavar="DATA", help="predict, columnar format")
    d.add_argument("--examples", metavar="DATA", help="classify/regress: list of feature objects")
    p.add_argument("--context", metavar="DATA", help="classify/regress: features common to all "
                   "examples")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    port = args.port or (DEFAULT_GRPC_PORT if args.protocol == "grpc" else DEFAULT_REST_PORT)
    spec = dict(version=args.version, label=args.label)
    if args.classify or args.regress:
        if not args.examples:
            raise UserError("--classify/--regress need --examples")
    elif not (args.status or args.metadata) and not (args.instances or args.inputs):
        raise UserError("nothing to send: give --instances or --inputs (or --status, "
                        "--metadata, --classify/--regress --examples)")
    if args.protocol == "rest":
        client = RestClient(f"http://{args.host}:{port}", timeout=args.timeout,
                            retries=args.retries)
    else:
        client = GrpcClient(f"{args.host}:{port}", timeout=args.timeout, retries=args.retries)
    with client:
        if args.status:
            out = client.model_status(args.model, **spec)
        elif args.metadata:
            out = client.metadata(args.model, **spec)
        elif args.classify or args.regress:
            examples = _load_data(args.examples, "--examples")
            if not isinstance(examples, list):
                raise UserError("--examples must be a JSON list of feature objects")
            context = _load_data(args.context, "--context") if args.context else None
            fn = client.classify if args.classify else client.regress
            results = fn(args.model, examples, context=context, signature_name=args.signature,
                         **spec)
            out = {"results": [[list(c) for c in r] for r in results]
                   if args.classify else results}
        elif args.protocol == "rest":
            if args.instances:
                out = client.predict(args.model, instances=_load_data(args.instances,
                                                                      "--instances"),
                                     signature_name=args.signature, **spec)
            else:
                out = client.predict(args.model, inputs=_load_data(args.inputs, "--inputs"),
                                     signature_name=args.signature, **spec)
        else:
            data = (rows_to_columns(_load_data(args.instances, "--instances"))
                    if args.instances else _load_data(args.inputs, "--inputs"))
            out = client.predict(args.model, data, signature_name=args.signature,
                                 **spec).to_json()
    json.dump(out, sys.stdout, indent=1, allow_nan=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
