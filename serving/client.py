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
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from serving import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, HTTP_TO_CODE, ServingError
from serving.codec import to_example, to_json_value  # noqa: F401 - part of this API
from serving.grpc_client import (  # noqa: F401 - part of this module's API
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    GrpcClient,
    Prediction,
    rows_to_columns,
    sleep_before_retry,
)
from shared.errors import UserError, exit_on_user_error


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
            sleep_before_retry(self.backoff, attempt)
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
