"""The gRPC front end: ``tensorflow.serving.PredictionService`` and ``ModelService`` with the
official ``tensorflow_serving.apis`` messages, on grpcio's threaded server."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import numpy as np

from serving import ServingError
from serving.server.processes import FORWARDED
from serving.server.service import map_error, validate_inputs
from shared.errors import UserError

log = logging.getLogger("serving.server")

# The timing record of the call running in this context (set by ``latency_interceptor``).
_CALL: contextvars.ContextVar[dict | None] = contextvars.ContextVar("ksuite_grpc_call",
                                                                    default=None)


def channel_args(text: str) -> list[tuple[str, Any]]:
    """``--grpc_channel_arguments`` (``key=value,...``) as grpc server options."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


# -------------------------------------------------------------------------------------------------

# TensorProto field holding the values of each dtype (types.proto enum -> field name)
_VALUE_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val",
                 6: "int_val", 7: "string_val", 8: "scomplex_val", 9: "int64_val",
                 10: "bool_val", 14: "half_val", 17: "int_val", 18: "dcomplex_val",
                 19: "half_val", 22: "uint32_val", 23: "uint64_val"}


def tensor_proto_to_array(proto, key: str, max_bytes: int) -> np.ndarray:
    """A request's TensorProto as numpy; refused (RESOURCE_EXHAUSTED) before allocating when the
    shape it declares would decode to more than ``max_bytes``, and refused (INVALID_ARGUMENT)
    when its values do not fit its shape."""
    import tensorflow as tf

    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise ServingError("INVALID_ARGUMENT", f"input '{key}': negative dimension in {dims}")
    n = int(np.prod(dims, dtype=object)) if dims else 1
    try:
        dt = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise ServingError("INVALID_ARGUMENT", f"input '{key}': invalid dtype {proto.dtype}")
    item = 8 if dt == tf.string else max(1, dt.size)
    if n * item > max_bytes:
        raise ServingError(
            "RESOURCE_EXHAUSTED",
            f"input '{key}' declares shape [{','.join(map(str, dims))}] ({n} values of "
            f"{dt.name}), over the limit of {max_bytes} bytes of decoded tensor data "
            "(--max_tensor_bytes)")
    if proto.tensor_content:
        if dt != tf.string and len(proto.tensor_content) != n * dt.size:
            raise ServingError("INVALID_ARGUMENT",
                               f"input '{key}': tensor_content holds {len(proto.tensor_content)} "
                               f"bytes, shape [{','.join(map(str, dims))}] needs {n * dt.size}")
    else:
        field = _VALUE_FIELDS.get(int(proto.dtype))
        if field is not None:
            count = len(getattr(proto, field))
            if field in ("scomplex_val", "dcomplex_val"):
                count //= 2
            if dt == tf.string and count != n:
                raise ServingError("INVALID_ARGUMENT",
                                   f"input '{key}': {count} strings for shape "
                                   f"[{','.join(map(str, dims))}] ({n} values)")
            if count > n:
                raise ServingError("INVALID_ARGUMENT",
                                   f"input '{key}': {count} values for shape "
                                   f"[{','.join(map(str, dims))}] ({n} values)")
    try:
        arr = tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001 - any malformed proto is the client's
        raise ServingError("INVALID_ARGUMENT",
                           f"input '{key}' is not a valid TensorProto: {exc}") from None
    if dt == tf.string and arr.dtype != object:
        arr = arr.astype(object)
    return arr


def _spec_args(spec):
    return (spec.name, spec.version.value if spec.HasField("version") else None,
            spec.version_label or None)


def latency_interceptor(metrics):
    """A grpc server interceptor that makes ``request_latency`` span, as TF Serving's does, the
    server's whole hold of a call: from the moment grpcio accepts it (on its polling thread,
    before the hand-off to the thread pool and the request's parsing) until the answer is
    serialized and handed back to grpcio. TF Serving's C++ handler starts on a thread of its
    own as the call arrives and its protobufs cost little, so its handler span is that span;
    here the hand-off and the (de)serialization are Python's and take a share of the time."""
    import grpc

    class LatencyInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            start = time.perf_counter()
            handler = continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            behavior, serialize = handler.unary_unary, handler.response_serializer

            def timed(request, context):
                call = {"start": start, "api": ""}
                _CALL.set(call)
                failed = True
                try:
                    answer = behavior(request, context)
                    data = serialize(answer) if serialize is not None else answer
                    failed = False
                    return data
                finally:
                    if call["api"]:
                        code = "INTERNAL" if failed and call["code"] == "OK" else call["code"]
                        metrics.request(call["model"], call["api"], "GRPC", code,
                                        time.perf_counter() - start)

            return grpc.unary_unary_rpc_method_handler(
                timed, request_deserializer=handler.request_deserializer)

    return LatencyInterceptor()


def servicers(server):
    """(PredictionService, its add function, ModelService, its add function) for ``server``.
    Each call runs on one of --grpc_max_threads threads; with batching it waits there for its
    batch. A ``grpc.aio`` server on the IO loop measured ~20% more CPU per request here."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    service = server.service
    limit = server.opts.tensor_limit()

    def deadline_of(context) -> float | None:
        left = context.time_remaining()
        return None if left is None else time.monotonic() + left

    def guard(api: str):
        def wrap(fn):
            def wrapper(self, request, context):
                call = _CALL.get()
                start = call["start"] if call is not None else time.perf_counter()
                model = request.tasks[0].model_spec.name if api == "MultiInference" and \
                    request.tasks else getattr(getattr(request, "model_spec", None), "name", "")
                code = "OK"
                try:
                    return fn(self, request, context)
                except Exception as exc:
                    exc = map_error(exc)
                    if isinstance(exc, ServingError):
                        code = exc.code
                        status = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN)
                        context.abort(status, exc.message)  # raises
                    code = "INTERNAL"
                    log.error("gRPC %s failed", fn.__name__, exc_info=exc)
                    context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
                finally:
                    if server.metrics is not None and api:
                        if call is not None:  # recorded once the answer is serialized
                            call.update(model=model, api=api, code=code)
                        else:
                            server.metrics.request(model, api, "GRPC", code,
                                                   time.perf_counter() - start)

            wrapper.__name__ = fn.__name__
            return wrapper
        return wrap

    def predict_inputs(request):
        servable = service.core.get_servable(*_spec_args(request.model_spec))
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
            inputs[key] = tensor_proto_to_array(proto, key, limit)
        service.check_output_filter(sig, list(request.output_filter))
        validate_inputs(sig, inputs)
        return servable, sig, inputs

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guard("Predict")
        def Predict(self, request, context):
            servable, sig, inputs = predict_inputs(request)
            outputs = service.run(servable, sig, inputs, deadline_of(context))
            del inputs
            resp = predict_pb2.PredictResponse()
            service.fill_spec(resp.model_spec, servable, sig.name)
            for k in list(request.output_filter) or list(outputs):
                resp.outputs[k].CopyFrom(tf.make_tensor_proto(outputs[k]))
            service.logs.log(servable, sig.name, request, resp)
            return resp

        @guard("Classify")
        def Classify(self, request, context):
            return service.classify(request, deadline_of(context))

        @guard("Regress")
        def Regress(self, request, context):
            return service.regress(request, deadline_of(context))

        @guard("MultiInference")
        def MultiInference(self, request, context):
            return service.multi_inference(request, deadline_of(context))

        @guard("")
        def GetModelMetadata(self, request, context):
            resp, _ = service.metadata(*_spec_args(request.model_spec),
                                       list(request.metadata_field))
            return resp

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guard("")
        def GetModelStatus(self, request, context):
            return service.status(*_spec_args(request.model_spec))

        @guard("")
        def HandleReloadConfigRequest(self, request, context):
            worker = server.worker
            if worker is not None and not dict(context.invocation_metadata()).get(FORWARDED):
                # every server process applies it; the answer waits for all of them
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(1) as pool:
                    others = pool.submit(worker.forward_reload, request,
                                         context.time_remaining())
                    service.core.reload_config(request.config)
                    others.result()
            else:
                service.core.reload_config(request.config)
            resp = model_management_pb2.ReloadConfigResponse()
            resp.status.SetInParent()
            return resp

    return (PredictionService(),
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
            ModelService(), model_service_pb2_grpc.add_ModelServiceServicer_to_server)
