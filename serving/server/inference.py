"""Classify, Regress and MultiInference on serialized ``tf.Example`` inputs, with TensorFlow
Serving's checks of the signatures and of what they return."""

from __future__ import annotations

import numpy as np

from serving import ServingError
from serving.codec import dtype_name
from serving.server.servable import Signature

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"


def examples_tensor(inp) -> np.ndarray:
    """An ``Input`` (example list, with or without context) as a string tensor."""
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


def example_signature(service, servable, name: str, method: str):
    name = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(name)
    if sig is None:
        raise ServingError("INVALID_ARGUMENT", f"No signature was found with the name: {name}")
    what = "classification" if method == CLASSIFY_METHOD else "regression"
    if service.opts.enable_signature_method_name_check and sig.method_name != method:
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
    if method == CLASSIFY_METHOD:
        if len(sig.outputs) not in (1, 2):
            raise ServingError("INVALID_ARGUMENT",
                               f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            raise ServingError("FAILED_PRECONDITION",
                               "Expected classification signature outputs to contain at least "
                               f"one of \"classes\" or \"scores\". Signature was: {sig.name}")
    else:
        if len(sig.outputs) != 1:
            raise ServingError("INVALID_ARGUMENT", "Expected one output Tensor.")
        if "outputs" not in sig.outputs:
            raise ServingError("FAILED_PRECONDITION",
                               f"No regression outputs found in SignatureDef: {sig.name} (its "
                               "output must be called 'outputs')")
    return sig


def _spec_args(spec):
    return (spec.name, spec.version.value if spec.HasField("version") else None,
            spec.version_label or None)


def classification_result(out: dict, n: int, result) -> None:
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
                               f"Expected {key} Tensor of {kind}. Got: {dtype_name(t.dtype)}")
        if t.shape[0] != n:
            raise ServingError("INVALID_ARGUMENT",
                               f"Expected {key} output batch size of {n}. Got: {t.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise ServingError("INVALID_ARGUMENT",
                           "Tensors class and score should match in dim_size(1). Got "
                           f"{classes.shape[1]} vs. {scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    for i in range(n):
        c = result.classifications.add()
        for j in range(num_classes):
            cl = c.classes.add()
            if classes is not None:
                label = classes[i, j]
                cl.label = label.decode("utf-8", "replace") if isinstance(label, bytes) \
                    else str(label)
            if scores is not None:
                cl.score = float(scores[i, j])


def regression_result(out: dict, n: int, result) -> None:
    t = out["outputs"]
    if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        raise ServingError("INVALID_ARGUMENT",
                           "Expected output Tensor shape to be either [batch_size] or "
                           f"[batch_size, 1] but got {list(t.shape)}")
    if t.dtype != np.float32:
        raise ServingError("INVALID_ARGUMENT",
                           f"Expected output Tensor of DT_FLOAT. Got: {dtype_name(t.dtype)}")
    if t.shape[0] != n:
        raise ServingError("INVALID_ARGUMENT",
                           f"Input batch size did not match output batch size: {n} vs. "
                           f"{t.shape[0]}")
    for v in t.reshape(-1):
        result.regressions.add().value = float(v)


def _one(service, request, deadline, method: str, api: str, response):
    spec = request.model_spec
    servable = service.core.get_servable(*_spec_args(spec))
    sig = example_signature(service, servable, spec.signature_name, method)
    examples = examples_tensor(request.input)
    n = len(examples)
    if service.metrics is not None:
        service.metrics.examples(servable.name, n)
    out = service.run(servable, sig, {"inputs": examples}, deadline, api)
    service.fill_spec(response.model_spec, servable, sig.name)
    if method == CLASSIFY_METHOD:
        classification_result(out, n, response.result)
    else:
        regression_result(out, n, response.result)
    service.logs.log(servable, sig.name, request, response)
    return response


def classify(service, request, deadline: float | None = None):
    from tensorflow_serving.apis import classification_pb2

    return _one(service, request, deadline, CLASSIFY_METHOD, "Classify",
                classification_pb2.ClassificationResponse())


def regress(service, request, deadline: float | None = None):
    from tensorflow_serving.apis import regression_pb2

    return _one(service, request, deadline, REGRESS_METHOD, "Regress",
                regression_pb2.RegressionResponse())


def joint_signature(sigs: list) -> Signature:
    """One Signature over signatures sharing their input: the first's feeds, and each distinct
    output tensor of any of them, keyed by its tensor name."""
    outputs, fetches = {}, []
    for sig in sigs:
        for spec, fetch in zip(sig.outputs.values(), sig.fetches, strict=True):
            if spec.tensor_name not in outputs:
                outputs[spec.tensor_name] = spec
                fetches.append(fetch)
    first = sigs[0]
    return Signature("\n".join(sig.name for sig in sigs), first.method_name, first.inputs,
                     outputs, first.feeds, fetches)


def multi_inference(service, request, deadline: float | None = None):
    """Several classify/regress tasks of one model version over one set of examples, with TF
    Serving's checks (one model and version, no signature twice, one shared input tensor), run as
    TF Serving runs them: one session run that feeds the examples once and fetches every task's
    outputs."""
    from tensorflow_serving.apis import inference_pb2

    if not request.tasks:
        raise ServingError("INVALID_ARGUMENT", "Tasks are empty.")
    first = request.tasks[0].model_spec
    servable = service.core.get_servable(*_spec_args(first))
    sigs, seen = [], set()
    for task in request.tasks:
        spec = task.model_spec
        if spec.name != first.name:
            raise ServingError("INVALID_ARGUMENT",
                               "All ModelSpecs in a MultiInferenceRequest must access the same "
                               "model name.")
        if _spec_args(spec)[1:] != _spec_args(first)[1:]:
            raise ServingError("INVALID_ARGUMENT",
                               "All ModelSpecs in a MultiInferenceRequest must access the same "
                               "model version.")
        name = spec.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise ServingError("INVALID_ARGUMENT",
                               f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError("UNIMPLEMENTED",
                               f"Unsupported signature method_name: {task.method_name}")
        sigs.append((task, example_signature(service, servable, name, task.method_name)))
    tensors = {sig.inputs["inputs"].tensor_name for _, sig in sigs}
    if len(tensors) != 1:
        raise ServingError("INVALID_ARGUMENT", "Input tensor must be the same for all "
                           "Signatures.")
    examples = examples_tensor(request.input)
    n = len(examples)
    if service.metrics is not None:
        service.metrics.examples(servable.name, n)
    joint = joint_signature([sig for _, sig in sigs])
    fetched = service.run(servable, joint, {"inputs": examples}, deadline, "MultiInference")
    resp = inference_pb2.MultiInferenceResponse()
    for task, sig in sigs:
        out = {key: fetched[spec.tensor_name] for key, spec in sig.outputs.items()}
        result = resp.results.add()
        service.fill_spec(result.model_spec, servable, sig.name)
        if task.method_name == CLASSIFY_METHOD:
            classification_result(out, n, result.classification_result)
        else:
            regression_result(out, n, result.regression_result)
    service.logs.log(servable, "", request, resp)
    return resp
