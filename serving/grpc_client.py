"""TensorFlow Serving's gRPC API from Python: ``GrpcClient`` with the official
``tensorflow_serving.apis`` stubs (grpc and TensorFlow are imported when a client is made)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving import DEFAULT_GRPC_PORT, ServingError
from serving.codec import array_to_json, to_array, to_example

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 0.1


def sleep_before_retry(backoff: float, attempt: int) -> None:
    time.sleep(min(backoff * (2 ** attempt), 5.0))


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
                "outputs": {k: array_to_json(v, k) for k, v in self.outputs.items()}}


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
            sleep_before_retry(self.backoff, attempt)
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
            req.inputs[name].CopyFrom(tf.make_tensor_proto(to_array(value)))
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
