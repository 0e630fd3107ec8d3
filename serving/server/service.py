"""Predict / Classify / Regress / MultiInference / metadata / status on top of a ServerCore,
independent of the protocol that asked."""

from __future__ import annotations

import time

import numpy as np

from serving import ServingError
from serving.codec import dtype_name
from serving.server import inference
from serving.server.core import ServerCore
from serving.server.options import ServerOptions
from serving.server.request_logging import RequestLogs
from serving.server.servable import Servable, Signature
from serving.server.versions import STATE_ENUM

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


def _tf():
    from serving.server.servable import _tf as tf

    return tf()


def _input_mismatch(sig: Signature, sent: set[str]) -> ServingError:
    want = set(sig.inputs)
    return ServingError(
        "INVALID_ARGUMENT",
        f"input size does not match signature: {len(sent)}!={len(want)} "
        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(want))}}}). "
        f"Sent extra: {{{','.join(sorted(sent - want))}}}. "
        f"Missing but required: {{{','.join(sorted(want - sent))}}}.")


def validate_inputs(sig: Signature, inputs: dict[str, np.ndarray]) -> None:
    """What TF Serving checks before the graph runs: input names, and dtypes (which the session
    would refuse with the same words). Shapes are the graph's to judge. An empty batch is
    refused (the local server's documented difference)."""
    if set(inputs) != set(sig.inputs):
        raise _input_mismatch(sig, set(inputs))
    for i, (key, spec) in enumerate(sig.inputs.items()):
        arr = inputs[key]
        if spec.np_dtype is not None and arr.dtype != spec.np_dtype:
            raise ServingError("INVALID_ARGUMENT",
                               f"Expects arg[{i}] ('{key}') to be {spec.dtype_name} but "
                               f"{dtype_name(arr.dtype)} is provided")
        if arr.ndim and arr.shape[0] == 0 and spec.shape and spec.shape[0] is None:
            raise ServingError("INVALID_ARGUMENT",
                               f"input '{key}' is an empty batch (0 rows): send at least one "
                               "example")


_OP_CODES = {1: "CANCELLED", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
             8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 11: "OUT_OF_RANGE",
             12: "UNIMPLEMENTED"}


def map_error(exc: BaseException) -> BaseException:
    """A model-call failure as the ServingError TF Serving would answer (others unchanged):
    the runtime's own code and message."""
    if isinstance(exc, ServingError):
        return exc
    tf = _tf()
    if isinstance(exc, tf.errors.OpError):
        message = (exc.message or str(exc)).strip()
        message = message.split("\n\t [[")[0].strip()  # drop the graph node trace
        return ServingError(_OP_CODES.get(exc.error_code, "INTERNAL"), message)
    if isinstance(exc, (ValueError, TypeError)):
        return ServingError("INVALID_ARGUMENT", (str(exc) or type(exc).__name__).strip()
                            .splitlines()[0])
    return exc


class Service:
    """The protocol-independent half of the server; ``metrics`` (monitoring) may be None."""

    def __init__(self, core: ServerCore, opts: ServerOptions, metrics=None):
        self.core = core
        self.opts = opts
        self.metrics = metrics
        self.logs = RequestLogs()
        if core.batcher is not None and metrics is not None:
            core.batcher.on_dequeue = metrics.queuing
        core.on_model = self.logs.update

    # -- running -------------------------------------------------------------------------------
    def _call(self, servable: Servable, sig: Signature, inputs, api: str, timeout=None):
        start = time.perf_counter()
        out = servable.call(sig, inputs, timeout)
        if self.metrics is not None:
            self.metrics.runtime(servable.name, api, time.perf_counter() - start)
        return out

    def submit(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray],
               api: str = "Predict"):
        """Queue a request for a batch (batching on): a concurrent Future of the outputs."""
        return self.core.batcher.submit(
            (servable.key, sig.name), lambda x, s=servable, g=sig: self._call(s, g, x, api),
            inputs)

    def call(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray],
             api: str = "Predict", deadline: float | None = None) -> dict[str, np.ndarray]:
        """Without batching: run now; past ``deadline`` the runtime stops the computation."""
        timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
        return self._call(servable, sig, inputs, api, timeout)

    def run(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray],
            deadline: float | None = None, api: str = "Predict") -> dict[str, np.ndarray]:
        from concurrent.futures import TimeoutError as FutureTimeout

        try:
            if self.core.batcher is None:
                return self.call(servable, sig, inputs, api, deadline)
            future = self.submit(servable, sig, inputs, api)
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

    # -- classify / regress / multi-inference --------------------------------------------------
    def classify(self, request, deadline: float | None = None):
        return inference.classify(self, request, deadline)

    def regress(self, request, deadline: float | None = None):
        return inference.regress(self, request, deadline)

    def multi_inference(self, request, deadline: float | None = None):
        return inference.multi_inference(self, request, deadline)

    # -- metadata / status ---------------------------------------------------------------------
    @staticmethod
    def fill_spec(spec, servable: Servable, signature_name: str | None) -> None:
        spec.name = servable.name
        spec.version.value = servable.version
        if signature_name is not None:
            spec.signature_name = signature_name

    _fill_spec = fill_spec

    def metadata(self, name: str, version: int | None, label: str | None, fields: list[str]):
        from tensorflow_serving.apis import get_model_metadata_pb2 as md

        if not fields:
            raise ServingError("INVALID_ARGUMENT",
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {f} is not supported")
        servable = self.core.get_servable(name, version, label)
        resp = md.GetModelMetadataResponse()
        self.fill_spec(resp.model_spec, servable, None)
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
            s.state = STATE_ENUM[rec.state]
            s.status.SetInParent()
            codes = s.status.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
            s.status.error_code = codes[rec.error_code].number if rec.error_code in codes else 2
            s.status.error_message = rec.error_message
        return resp
