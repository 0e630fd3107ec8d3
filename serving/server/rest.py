"""TensorFlow Serving's REST API: URL grammar, JSON requests and answers, errors as
``{"error": ...}`` with TF Serving's HTTP status for its canonical code."""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

import numpy as np

from serving import ServingError
from serving.codec import (
    columnar_to_inputs,
    instances_to_inputs,
    json_bytes,
    outputs_to_rest,
    parse_json_body,
    short,
    to_example,
)
from serving.server.service import Service, map_error, validate_inputs
from serving.server.versions import INT64_MAX

log = logging.getLogger("serving.server")

# URL grammar of TensorFlow Serving's REST API (model_servers/http_rest_api_util.cc).
PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)


def _proto_dict(msg, preserve_names: bool = False) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=preserve_names)


def _f32(x: float) -> float:
    return float(str(np.float32(x)))


def error_body(message: str) -> bytes:
    return json_bytes({"error": message})


def model_of(path: str) -> str:
    """The model name a REST path names ("" when none), for metrics."""
    m = re.match(r"/v1/models/([^/:]+)", path, re.IGNORECASE)
    return urllib.parse.unquote(m.group(1)) if m else ""


def api_of(method: str, path: str) -> str:
    """TF Serving's ``API`` label of a REST request: the verb of a POST, "" for a GET."""
    m = PREDICT_RE.fullmatch(path) if method == "POST" else None
    return m.group(4).lower() if m else ""


def decode_predict(body: bytes, specs_by_signature: dict[str, dict]) -> tuple:
    """Parse a predict body and convert its tensors: ``(signature name, inputs, columnar)``.
    Pure numpy, so it also runs in the parsing worker process for large bodies."""
    doc = parse_json_body(body)
    sig_name = doc.get("signature_name", "")
    if not isinstance(sig_name, str):
        raise ServingError("INVALID_ARGUMENT",
                           f"JSON Value: {short(sig_name)} not formatted correctly. "
                           "'signature_name' key must be a string value.")
    specs = specs_by_signature.get(sig_name or "serving_default")
    if specs is None:
        return sig_name, None, False  # the caller raises the signature error
    if not specs:
        raise ServingError("INVALID_ARGUMENT",
                           f"Failed to get input map for signature: {sig_name or 'DEFAULT'}")
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise ServingError("INVALID_ARGUMENT",
                           "Not formatted correctly expecting only one of 'inputs' or "
                           "'instances' keys to exist")
    if not has_rows and not has_cols:
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
    bools = b"true" in body or b"false" in body
    if has_rows:
        return sig_name, instances_to_inputs(doc["instances"], specs, bools), False
    return sig_name, columnar_to_inputs(doc["inputs"], specs, bools), True


def encode_predict(outputs: dict[str, np.ndarray], columnar: bool) -> bytes:
    """The JSON answer of predict outputs (also run in the worker process for large ones)."""
    return json_bytes(outputs_to_rest(outputs, columnar))


class RestApi:
    """``handle(method, path, body) -> (status, json bytes)`` and the pieces the IO loop uses."""

    def __init__(self, service: Service, opts):
        self.service = service
        self.opts = opts

    def handle(self, method: str, path: str, body: bytes,
               deadline: float | None = None) -> tuple[int, bytes]:
        try:
            return 200, json_bytes(self._dispatch(method, path, body, deadline))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            return self.error_reply(exc)

    @staticmethod
    def spec(m) -> tuple[str, int | None, str | None]:
        name = urllib.parse.unquote(m.group(1) or "")
        version = None
        if m.group(2):
            version = int(m.group(2))
            if version > INT64_MAX:
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
            m = PREDICT_RE.fullmatch(path)
            if not m:
                raise malformed
            verb = m.group(4).lower()
            if verb == "predict":
                servable, sig, inputs, columnar = self.predict_plan(path, body)
                outputs = self.service.run(servable, sig, inputs, deadline)
                self.log_predict(servable, sig, inputs, outputs)
                return outputs_to_rest(outputs, columnar=columnar)
            return self._classify_regress(verb, *self.spec(m), parse_json_body(body), deadline)
        if method == "GET":
            m = STATUS_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label = self.spec(m)
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            if m.group(4):
                resp, sdm = self.service.metadata(name, version, label, ["signature_def"])
                return {"model_spec": _proto_dict(resp.model_spec, True),
                        "metadata": {"signature_def": _proto_dict(sdm, True)}}
            return _proto_dict(self.service.status(name, version, label))
        raise malformed

    def resolve(self, path: str):
        """For ``POST ...:predict``: the servable the URL names; None for other requests."""
        m = PREDICT_RE.fullmatch(path)
        if not m or m.group(4).lower() != "predict":
            return None
        return self.service.core.get_servable(*self.spec(m))

    @staticmethod
    def specs_of(servable) -> dict[str, dict]:
        return {name: sig.inputs for name, sig in servable.signatures.items()}

    def finish_plan(self, servable, decoded) -> tuple:
        sig_name, inputs, columnar = decoded
        sig = self.service.signature(servable, sig_name, rest=True)
        validate_inputs(sig, inputs)
        return servable, sig, inputs, columnar

    def predict_plan(self, path: str, body: bytes):
        """Everything before inference (resolve, parse, convert, validate) as ``(servable,
        signature, inputs, columnar)``; None for requests other than predict."""
        servable = self.resolve(path)
        if servable is None:
            return None
        return self.finish_plan(servable, decode_predict(body, self.specs_of(servable)))

    def log_predict(self, servable, sig, inputs, outputs) -> None:
        """Offer a REST predict to request logging (as the PredictRequest TF Serving makes)."""
        if not self.service.logs.wants(servable.name):
            return
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req, resp = predict_pb2.PredictRequest(), predict_pb2.PredictResponse()
        req.model_spec.name = servable.name
        req.model_spec.signature_name = sig.name
        for k, v in inputs.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        self.service.fill_spec(resp.model_spec, servable, sig.name)
        for k, v in outputs.items():
            resp.outputs[k].CopyFrom(tf.make_tensor_proto(v))
        self.service.logs.log(servable, sig.name, req, resp)

    @staticmethod
    def error_reply(exc: BaseException) -> tuple[int, bytes]:
        exc = map_error(exc)
        if isinstance(exc, ServingError):
            return exc.http_status, error_body(exc.message)
        log.error("REST request failed", exc_info=exc)
        return 500, error_body(f"Internal: {type(exc).__name__}: {exc}")

    def _classify_regress(self, verb, name, version, label, doc, deadline) -> dict[str, Any]:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        sig_name = doc.get("signature_name", "")
        if not isinstance(sig_name, str):
            raise ServingError("INVALID_ARGUMENT",
                               f"JSON Value: {short(sig_name)} not formatted correctly. "
                               "'signature_name' key must be a string value.")
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
            target.context.CopyFrom(to_example(doc["context"]))
        else:
            target = req.input.example_list
        for ex in examples:
            target.examples.add().CopyFrom(to_example(ex))
        if verb == "classify":
            resp = self.service.classify(req, deadline)
            return {"results": [[[c.label, _f32(c.score)] for c in cl.classes]
                                for cl in resp.result.classifications]}
        resp = self.service.regress(req, deadline)
        return {"results": [_f32(r.value) for r in resp.result.regressions]}
