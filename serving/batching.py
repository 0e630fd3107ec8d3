"""Server-side batching, as TensorFlow Serving's ``--enable_batching`` does it.

Concurrent requests for the same model version and signature are queued; a batch thread takes
up to ``max_batch_size`` rows from the queue as soon as the queue holds a full batch, or when the
oldest request has waited ``batch_timeout_micros``, concatenates the inputs along dimension 0,
runs the model once, and splits the outputs back by rows. ``num_batch_threads`` threads run
batches; ``max_enqueued_batches`` bounds each queue (a request that would overflow it is refused
with UNAVAILABLE, as TensorFlow Serving does). Requests whose inputs differ in the non-batch
dimensions go to separate queues, so they never need padding.

The batching parameters file is the ASCII ``BatchingParameters`` protocol buffer that
``tensorflow_model_server --batching_parameters_file`` reads
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto). That proto does not ship in
the ``tensorflow-serving-api`` wheel, so :func:`batching_parameters_message` builds the same message
type from its field list and the file is parsed with ``google.protobuf.text_format``: a field name
TensorFlow Serving would reject is rejected here too.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numpy as np

from serving import ServingError

log = logging.getLogger("serving.batching")

# (field name, number, wrapper type or scalar) - as in session_bundle_config.proto.
_BATCHING_FIELDS = (
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
)

_MESSAGE_CLASS = None


def batching_parameters_message():
    """The ``tensorflow.serving.BatchingParameters`` message class (built once, in a private
    descriptor pool so it can never clash with a real copy of the proto)."""
    global _MESSAGE_CLASS
    if _MESSAGE_CLASS is not None:
        return _MESSAGE_CLASS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    msg = fdp.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for name, number, kind in _BATCHING_FIELDS:
        f = msg.field.add(name=name, number=number)
        if kind == "repeated int64":
            f.label, f.type = F.LABEL_REPEATED, F.TYPE_INT64
        elif kind == "bool":
            f.label, f.type = F.LABEL_OPTIONAL, F.TYPE_BOOL
        else:
            f.label, f.type = F.LABEL_OPTIONAL, F.TYPE_MESSAGE
            f.type_name = f".google.protobuf.{kind}"
    pool.Add(fdp)
    _MESSAGE_CLASS = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    return _MESSAGE_CLASS


@dataclass
class BatchingParameters:
    """Batching knobs with TensorFlow Serving's defaults (BasicBatchScheduler::Options and
    server.cc: max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10,
    num_batch_threads = number of CPUs)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def validate(self) -> "BatchingParameters":
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"batching parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError("batching parameter batch_timeout_micros must be >= 0")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and strictly increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"the last entry of allowed_batch_sizes ({sizes[-1]}) must equal "
                    f"max_batch_size ({self.max_batch_size})")
        return self

    # -- text format -------------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> "BatchingParameters":
        from google.protobuf import text_format

        msg = batching_parameters_message()()
        try:
            text_format.Parse(text, msg)
        except text_format.ParseError as exc:
            raise ValueError(
                f"{source}: not a valid BatchingParameters text proto: {exc}") from None
        out = cls()
        for name, _, kind in _BATCHING_FIELDS:
            if kind == "repeated int64":
                out.allowed_batch_sizes = tuple(int(v) for v in msg.allowed_batch_sizes)
            elif kind == "bool":
                out.pad_variable_length_inputs = bool(msg.pad_variable_length_inputs)
            elif msg.HasField(name):
                setattr(out, name, getattr(msg, name).value)
        return out.validate()

    @classmethod
    def from_file(cls, path) -> "BatchingParameters":
        with open(path, encoding="utf-8") as fh:
            return cls.from_text(fh.read(), source=str(path))

    def to_text(self) -> str:
        from google.protobuf import text_format

        msg = batching_parameters_message()()
        for name, _, kind in _BATCHING_FIELDS:
            if kind == "repeated int64":
                msg.allowed_batch_sizes.extend(self.allowed_batch_sizes)
            elif kind == "bool":
                msg.pad_variable_length_inputs = self.pad_variable_length_inputs
            else:
                getattr(msg, name).value = getattr(self, name)
        return text_format.MessageToString(msg)


# -------------------------------------------------------------------------------------------------
# Scheduler
# -------------------------------------------------------------------------------------------------


class _Task:
    __slots__ = ("inputs", "rows", "future", "enqueued")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int):
        self.inputs = inputs
        self.rows = rows
        self.future: Future = Future()
        self.enqueued = time.monotonic()


class _Queue:
    __slots__ = ("fn", "tasks", "rows")

    def __init__(self, fn):
        self.fn = fn
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0


RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class BatchScheduler:
    """One scheduler per server, shared by every model (as TensorFlow Serving's shared batch
    scheduler is): ``submit(key, fn, inputs)`` returns a Future of ``fn``'s outputs for just
    this request's rows."""

    def __init__(self, params: BatchingParameters):
        self.params = params.validate()
        self._timeout = params.batch_timeout_micros / 1e6
        self._cv = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._closed = False
        self.batches_run = 0
        self.rows_run = 0
        self.on_dequeue: Callable[[float], None] | None = None  # seconds a task waited
        self._threads = [
            threading.Thread(target=self._worker, name=f"{params.thread_pool_name}-{i}",
                             daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    # -- client side ---------------------------------------------------------------------------
    def submit(self, key: Hashable, fn: RunFn, inputs: dict[str, np.ndarray]) -> Future:
        rows = None
        for arr in inputs.values():
            if arr.ndim == 0:
                raise ServingError("INVALID_ARGUMENT",
                                   "Batching Run() input tensors must have at least one dimension")
            if rows is None:
                rows = arr.shape[0]
            elif arr.shape[0] != rows:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    "Batching Run() input tensors must have equal 0th-dimension size")
        rows = rows or 0
        if rows > self.params.max_batch_size:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {rows} is larger than maximum input batch size "
                f"{self.params.max_batch_size}")
        shape_key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        qkey = (key, shape_key)
        task = _Task(inputs, rows)
        with self._cv:
            if self._closed:
                raise ServingError("UNAVAILABLE", "the batch scheduler is shutting down")
            q = self._queues.get(qkey)
            if q is None:
                q = self._queues[qkey] = _Queue(fn)
            batches = math.ceil((q.rows + rows) / self.params.max_batch_size)
            if batches > self.params.max_enqueued_batches:
                raise ServingError(
                    "UNAVAILABLE",
                    "The batch scheduling queue to which this task was submitted is full")
            q.tasks.append(task)
            q.rows += rows
            self._cv.notify()
        return task.future

    def close(self) -> None:
        with self._cv:
            self._closed = True
            pending = [t for q in self._queues.values() for t in q.tasks]
            self._queues.clear()
            self._cv.notify_all()
        for t in pending:
            if not t.future.done():
                t.future.set_exception(ServingError("UNAVAILABLE", "server is shutting down"))

    # -- batch threads -------------------------------------------------------------------------
    def _take_batch(self):
        """Under the lock: pop the next ready batch, or return the time to wait."""
        now = time.monotonic()
        best_key, best_age, wait = None, -1.0, None
        for key, q in self._queues.items():
            if not q.tasks:
                continue
            age = now - q.tasks[0].enqueued
            if q.rows >= self.params.max_batch_size or age >= self._timeout:
                if age > best_age:
                    best_key, best_age = key, age
            else:
                left = self._timeout - age
                wait = left if wait is None else min(wait, left)
        if best_key is None:
            return None, wait
        q = self._queues[best_key]
        tasks, rows = [], 0
        while q.tasks and rows + q.tasks[0].rows <= self.params.max_batch_size:
            t = q.tasks.popleft()
            tasks.append(t)
            rows += t.rows
        q.rows -= rows
        if not q.tasks:
            del self._queues[best_key]  # keys carry shapes: don't let them accumulate
        return (q.fn, tasks, rows), None

    def _worker(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    batch, wait = self._take_batch()
                    if batch is not None:
                        break
                    self._cv.wait(wait)
                if any(q.tasks for q in self._queues.values()):
                    self._cv.notify()  # more work: wake another batch thread
            self._run(*batch)

    def _run(self, fn: RunFn, tasks: list[_Task], rows: int) -> None:
        live = [t for t in tasks if t.future.set_running_or_notify_cancel()]
        if not live:
            return
        if self.on_dequeue is not None:
            now = time.monotonic()
            for t in live:
                self.on_dequeue(now - t.enqueued)
        try:
            if len(live) == 1:
                inputs = live[0].inputs
                padded = rows = live[0].rows
            else:
                rows = sum(t.rows for t in live)
                inputs = {k: np.concatenate([t.inputs[k] for t in live], axis=0)
                          for k in live[0].inputs}
                padded = rows
            sizes = self.params.allowed_batch_sizes
            if sizes:
                padded = next((s for s in sizes if s >= rows), rows)
                if padded > rows:  # pad by repeating the first row, as TF Serving does
                    inputs = {k: np.concatenate([v, np.repeat(v[:1], padded - rows, axis=0)])
                              for k, v in inputs.items()}
            outputs = fn(inputs)
            for name, arr in outputs.items():
                if arr.ndim == 0 or arr.shape[0] != padded:
                    raise ServingError(
                        "INVALID_ARGUMENT",
                        f"Batched output tensor '{name}' has shape {list(arr.shape)}: its 0th "
                        f"dimension must equal the batch size {padded} (outputs of a batched "
                        "signature need a batch dimension)")
            self.batches_run += 1
            self.rows_run += rows
            start = 0
            for t in live:
                stop = start + t.rows
                t.future.set_result({k: v[start:stop] for k, v in outputs.items()})
                start = stop
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            for t in live:
                if not t.future.done():
                    t.future.set_exception(exc)
