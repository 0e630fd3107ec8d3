"""TensorFlow Serving's JSON and tensor encodings, shared by the client and the local server.

* ``{"b64": ...}`` for bytes, both ways;
* JSON value -> numpy array of a signature input's dtype (``json_to_array``), and numpy array ->
  JSON (``array_to_json``: float32 written with the shortest decimal that reads back the same);
* ``{feature: value(s)}`` -> ``tf.train.Example`` (``to_example``);
* Python/numpy values -> JSON (``to_json_value``) and -> a numpy array for a TensorProto
  (``to_array``);

Import-light: numpy only; TensorFlow is imported by the functions that need it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import ServingError


def _tf():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


# -------------------------------------------------------------------------------------------------
# signature tensors
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature, from its SignatureDef TensorInfo."""

    key: str
    dtype_enum: int
    dtype_name: str  # "float32", "uint8", "string", ...
    np_dtype: Any  # numpy dtype; object for strings; None when numpy has none
    shape: tuple | None  # None: unknown rank; a None dim: any size
    tensor_name: str = ""  # the graph tensor the TensorInfo names ("x:0")

    @property
    def is_string(self) -> bool:
        return self.dtype_name == "string"

    def shape_text(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


def spec_from_tensor_info(key: str, info) -> TensorSpec:
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
    return TensorSpec(key, int(info.dtype), name, np_dtype, shape, info.name)


def dtype_name(dt) -> str:
    """TensorFlow's name of a numpy dtype ("string" for bytes/objects)."""
    return "string" if dt.kind in "OSU" else np.dtype(dt).name


# -------------------------------------------------------------------------------------------------
# JSON helpers
# -------------------------------------------------------------------------------------------------


def short(value: Any, limit: int = 120) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_type(value: Any) -> str:
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


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def b64decode(value: dict) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ServingError("INVALID_ARGUMENT", f"Unable to base64 decode {short(value)}") from None


def b64encode(data: bytes) -> dict:
    return {"b64": base64.b64encode(bytes(data)).decode("ascii")}


def parse_json_body(body: bytes) -> dict:
    """A REST body as a JSON object, or INVALID_ARGUMENT in TF Serving's words."""
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
        raise ServingError("INVALID_ARGUMENT", f"JSON Value: {short(doc)} Is not object")
    return doc


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode("utf-8")


# -------------------------------------------------------------------------------------------------
# JSON -> tensor
# -------------------------------------------------------------------------------------------------


def _type_error(value: Any, spec: TensorSpec) -> ServingError:
    return ServingError("INVALID_ARGUMENT",
                        f"JSON Value: {short(value)} Type: {json_type(value)} is not of expected "
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
    if is_b64(value):
        return b64decode(value)
    raise _type_error(value, spec)


def _ragged(spec: TensorSpec) -> ServingError:
    return ServingError("INVALID_ARGUMENT",
                        f"input '{spec.key}': nested lists of different lengths (a tensor needs "
                        "the same length at every level)")


def _out_of_range(bad, spec: TensorSpec) -> ServingError:
    return ServingError("INVALID_ARGUMENT", f"JSON Value: {int(bad)} is out of range for "
                        f"{spec.dtype_name} (input '{spec.key}')")


def json_to_array(value: Any, spec: TensorSpec, may_hold_bools: bool = True) -> np.ndarray:
    """A JSON value as a tensor of ``spec``'s dtype (TensorFlow Serving's JSON mapping).

    ``may_hold_bools=False`` (the body has no ``true``/``false``) skips the scan that refuses
    booleans mixed into a numeric tensor."""
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
    kind, want = arr.dtype.kind, spec.np_dtype.kind
    if kind == "O" or kind in "USV":
        if kind == "O" and any(isinstance(x, list) for x in arr.flat):
            raise _ragged(spec)
        bad = _first_bad_leaf(value, lambda v: isinstance(v, (int, float)) and not
                              isinstance(v, bool) and want != "b")
        if isinstance(bad, int) and not isinstance(bad, bool):
            raise _out_of_range(bad, spec)
        raise _type_error(bad if bad is not None else value, spec)
    if want == "b":
        if kind != "b":
            raise _type_error(_first_bad_leaf(value, lambda v: isinstance(v, bool)), spec)
        return arr
    if kind == "b":
        raise _type_error(_first_bad_leaf(value, lambda v: not isinstance(v, bool)), spec)
    if may_hold_bools and arr.ndim:  # numpy turns [1, true] into [1, 1]: TF Serving refuses it
        bad = _first_bad_leaf(value, lambda v: not isinstance(v, bool))
        if bad is not None:
            raise _type_error(bad, spec)
    if want in "iu":
        if kind == "f":
            raise _type_error(_first_bad_leaf(value, lambda v: not isinstance(v, float)), spec)
        info = np.iinfo(spec.np_dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise _out_of_range(arr.min() if arr.min() < info.min else arr.max(), spec)
    elif want == "c":
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON to {spec.dtype_name}")
    return arr.astype(spec.np_dtype, copy=False)


def instances_to_inputs(instances: Any, specs: dict[str, TensorSpec],
                        may_hold_bools: bool = True) -> dict[str, np.ndarray]:
    """Row format: ``instances`` is a list with one element per example."""
    if not isinstance(instances, list):
        raise ServingError("INVALID_ARGUMENT", "Expecting 'instances' to be an list/array")
    if not instances:
        raise ServingError("INVALID_ARGUMENT",
                           "No values in 'instances' array (an empty batch): send at least one "
                           "instance")
    names = list(specs)
    first = instances[0]
    if not (isinstance(first, dict) and not is_b64(first)):
        if len(names) > 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                "instances is a plain list, but expecting list of objects as multiple input "
                f"tensors required as per tensorinfo_map: {', '.join(names)}")
        for i, el in enumerate(instances):
            if isinstance(el, dict) and not is_b64(el):
                raise ServingError("INVALID_ARGUMENT",
                                   f"Expecting value/list but got object at item {i} of input list")
        return {names[0]: json_to_array(instances, specs[names[0]], may_hold_bools)}
    cols: dict[str, list] = {k: [] for k in names}
    want = set(names)
    for i, el in enumerate(instances):
        if not isinstance(el, dict) or is_b64(el):
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
    return {k: json_to_array(v, specs[k], may_hold_bools) for k, v in cols.items()}


def columnar_to_inputs(value: Any, specs: dict[str, TensorSpec],
                       may_hold_bools: bool = True) -> dict[str, np.ndarray]:
    """Columnar format: ``inputs`` is one tensor, or an object of named tensors."""
    names = list(specs)
    if isinstance(value, dict) and not is_b64(value):
        out = {}
        for k in names:
            if k not in value:
                raise ServingError("INVALID_ARGUMENT", f"Missing named input: {k} in 'inputs' "
                                   f"object (the signature takes {', '.join(names)})")
            out[k] = json_to_array(value[k], specs[k], may_hold_bools)
        return out
    if len(names) > 1:
        raise ServingError("INVALID_ARGUMENT",
                           "inputs is a plain value/list, but expecting an object as multiple "
                           f"input tensors required as per tensorinfo_map: {', '.join(names)}")
    return {names[0]: json_to_array(value, specs[names[0]], may_hold_bools)}


# -------------------------------------------------------------------------------------------------
# tensor -> JSON
# -------------------------------------------------------------------------------------------------


def _bytes_to_json(arr: np.ndarray, as_b64: bool) -> Any:
    def leaf(b):
        if not isinstance(b, (bytes, bytearray)):
            return b
        if not as_b64:
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                pass  # not text: the only lossless JSON form is base64
        return b64encode(b)

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
    """Predict outputs as the REST answer (``outputs`` or ``predictions``)."""
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


def to_json_value(value: Any) -> Any:
    """Numpy arrays/scalars, bytes, and nested lists/dicts of them as TF Serving JSON
    (bytes -> ``{"b64": ...}``)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return to_json_value(value.tolist())
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return b64encode(value)
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def to_array(value: Any) -> np.ndarray:
    """A value for a TensorProto: strings and ``{"b64"}`` as bytes objects, numbers as numpy."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (bytes, str)):
        arr = np.array(value, dtype=object)
    else:
        arr = np.asarray(value)
        if arr.dtype.kind in "SU":  # numpy's fixed-width bytes would drop trailing NULs
            arr = np.array(value, dtype=object)
    if arr.dtype.kind in "OU":
        flat = [v.encode("utf-8") if isinstance(v, str) else b64decode(v) if is_b64(v) else v
                for v in arr.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        arr = out.reshape(arr.shape)
    return arr


# -------------------------------------------------------------------------------------------------
# tf.Example
# -------------------------------------------------------------------------------------------------


def _feature(example, name: str, values: list) -> None:
    feature = example.features.feature[name]
    kind = None

    def need(k):
        nonlocal kind
        if kind not in (None, k):
            raise ServingError("INVALID_ARGUMENT",
                               f"Unexpected element type in feature: {name} expecting type: {kind}")
        kind = k

    for v in values:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (bool, int)):
            if not -(2**63) <= v < 2**63:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Feature: {name} has an element out of int64 range")
            need("int64")
            feature.int64_list.value.append(int(v))
        elif isinstance(v, float):
            need("float")
            feature.float_list.value.append(v)
        elif isinstance(v, str):
            need("bytes")
            feature.bytes_list.value.append(v.encode("utf-8"))
        elif isinstance(v, (bytes, bytearray)):
            need("bytes")
            feature.bytes_list.value.append(bytes(v))
        elif is_b64(v):
            need("bytes")
            feature.bytes_list.value.append(b64decode(v))
        else:
            raise ServingError("INVALID_ARGUMENT",
                               f"Feature: {name} has element with unexpected JSON type: "
                               f"{json_type(v)}")


def to_example(obj: Any):
    """A ``tf.train.Example`` from ``{feature: value | [values]}`` (TF Serving's rules: integers
    and booleans -> int64_list, decimals -> float_list, strings, bytes and ``{"b64"}`` ->
    bytes_list; one kind per feature); an Example is returned as it is."""
    from tensorflow.core.example import example_pb2

    if isinstance(obj, example_pb2.Example):
        return obj
    if hasattr(obj, "SerializeToString") and type(obj).__name__ == "Example":
        return example_pb2.Example.FromString(obj.SerializeToString())
    if not isinstance(obj, dict):
        raise ServingError("INVALID_ARGUMENT",
                           f"Example must be JSON object but got JSON {json_type(obj)}")
    ex = example_pb2.Example()
    for name, value in obj.items():
        if isinstance(value, np.ndarray):
            value = value.reshape(-1).tolist()
        _feature(ex, name, list(value) if isinstance(value, (list, tuple)) else [value])
    return ex
