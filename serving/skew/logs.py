"""The request log: the rows each input received, from PredictionLog records (tensors or
tf.Examples)."""

from __future__ import annotations

import os
from collections import deque

import numpy as np


def _rows(array: np.ndarray) -> list[np.ndarray]:
    return [array] if array.ndim == 0 else list(array)


def _example_rows(examples, context=None) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for example in examples:
        features = dict(context.features.feature) if context is not None else {}
        features.update(example.features.feature)
        for name, feat in features.items():
            kind = feat.WhichOneof("kind")
            if kind == "bytes_list":
                value = np.asarray(list(feat.bytes_list.value), dtype=object)
            elif kind == "float_list":
                value = np.asarray(feat.float_list.value, dtype=np.float32)
            elif kind == "int64_list":
                value = np.asarray(feat.int64_list.value, dtype=np.int64)
            else:
                continue
            out.setdefault(name, []).append(value)
    return out


def _record_inputs(record) -> dict[str, list[np.ndarray]]:
    kind = record.WhichOneof("log_type")
    if kind in ("predict_log", "predict_streamed_log"):
        from tensorflow import make_ndarray

        return {name: _rows(make_ndarray(t))
                for name, t in getattr(record, kind).request.inputs.items()}
    if kind in ("classify_log", "regress_log", "multi_inference_log"):
        source = getattr(record, kind).request.input
        which = source.WhichOneof("kind")
        if which == "example_list":
            return _example_rows(source.example_list.examples)
        if which == "example_list_with_context":
            ctx = source.example_list_with_context
            return _example_rows(ctx.examples, ctx.context)
    return {}


def logged_inputs(log_dir: str | os.PathLike, model_name: str,
                  limit: int | None = None) -> dict[str, list[np.ndarray]]:
    """The rows each input of ``model_name`` received, from the request log under ``log_dir``
    (oldest first; with ``limit``, only the newest ``limit`` rows of each input)."""
    from serving.request_log import read_prediction_logs

    rows: dict[str, deque] = {}
    for record in read_prediction_logs(log_dir):
        if record.log_metadata.model_spec.name != model_name:
            continue
        for name, values in _record_inputs(record).items():
            rows.setdefault(name, deque(maxlen=limit)).extend(values)
    return {name: list(values) for name, values in rows.items()}
