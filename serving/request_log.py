"""Request logging as TensorFlow Serving configures it: sampled ``PredictionLog`` TFRecords.

A model's entry in the model config may carry a ``logging_config``
(tensorflow_serving/config/logging_config.proto)::

    logging_config {
      log_collector_config { type: "tfrecord" filename_prefix: "/logs/mnist_mlp/requests" }
      sampling_config { sampling_rate: 0.1 }
    }

Each request is kept with probability ``sampling_rate``. A kept request and its response become
one ``tensorflow.serving.PredictionLog`` (tensorflow_serving/apis/prediction_log.proto): the
``log_metadata`` (model name, version, signature, sampling config, ``timestamp_secs``) and one of
``predict_log`` / ``classify_log`` / ``regress_log`` / ``multi_inference_log``.

Records go to TFRecord files ``<filename_prefix>-<UTC time>-<pid>-<n>.tfrecord``. A file is
written under a hidden temporary name (``.<name>.tmp`` in the same folder) and renamed when it
passes ``max_file_bytes`` or when the logger closes, so a reader that lists ``*.tfrecord`` only
ever sees finished files. ``read_prediction_logs`` reads them back.

The request thread only samples and puts a reference on a bounded queue; a background thread
builds, serializes and writes the records. ``maybe_log`` never blocks and never raises: a full
queue, an unwritable folder or a failing disk drops the record and counts it
(``dropped``, ``dropped_by_reason``). ``written`` counts records flushed to a file. The request
and response protos must not be changed after they are handed to ``maybe_log``.

TensorFlow Serving looks the collector ``type`` up in a registry of ``LogCollector`` factories
(the open-source build registers none); this logger is the one collector here, so ``type`` is
recorded but not checked.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

SUFFIX = ".tfrecord"
TMP_SUFFIX = ".tmp"
RECORD_OVERHEAD = 16  # TFRecord framing: 8-byte length, 4-byte length CRC, 4-byte data CRC
RETRY_OPEN_SECONDS = 1.0  # after a failed open, records are dropped for this long before a retry

# Request proto full name -> the PredictionLog field that holds request and response.
LOG_FIELDS = {
    "tensorflow.serving.PredictRequest": "predict_log",
    "tensorflow.serving.ClassificationRequest": "classify_log",
    "tensorflow.serving.RegressionRequest": "regress_log",
    "tensorflow.serving.MultiInferenceRequest": "multi_inference_log",
}

_STOP = object()
_file_numbers = itertools.count()  # unique file numbers within this process


class _Barrier:
    """Queue marker: the writer sets ``done`` once every record before it is flushed."""

    def __init__(self, finish_file: bool):
        self.finish_file = finish_file
        self.done = threading.Event()


class RequestLogger:
    """Samples requests and writes them as ``PredictionLog`` TFRecord files from a thread."""

    def __init__(self, filename_prefix: str, sampling_rate: float,
                 max_file_bytes: int = 64 << 20, queue_size: int = 1024,
                 seed: int | None = None, log_collector_type: str = ""):
        if not filename_prefix:
            raise ValueError("filename_prefix is empty")
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must be in [0, 1], got {sampling_rate}")
        if max_file_bytes <= 0 or queue_size <= 0:
            raise ValueError("max_file_bytes and queue_size must be positive")
        self.filename_prefix = str(filename_prefix)
        self.sampling_rate = float(sampling_rate)
        self.max_file_bytes = int(max_file_bytes)
        self.log_collector_type = log_collector_type
        self._rng = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._dropped: Counter = Counter()
        self._closed = False
        # Writer-thread state.
        self._writer = None
        self._tmp_path: str | None = None
        self._final_path: str | None = None
        self._file_bytes = 0
        self._unflushed = 0
        self._retry_open_at = 0.0
        self.finished_files: list[str] = []
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def from_logging_config(cls, logging_config, **kwargs) -> RequestLogger | None:
        """A logger for a ``LoggingConfig`` proto; None when absent or the sampling rate is 0."""
        if logging_config is None:
            return None
        rate = logging_config.sampling_config.sampling_rate
        if rate <= 0.0:
            return None
        collector = logging_config.log_collector_config
        if not collector.filename_prefix:
            raise ValueError("logging_config.log_collector_config.filename_prefix is empty")
        return cls(collector.filename_prefix, min(rate, 1.0),
                   log_collector_type=collector.type, **kwargs)

    # -- counters ---------------------------------------------------------------------------------

    @property
    def sampled(self) -> int:
        """Requests the sampler picked (whether or not they were written)."""
        return self._counts["sampled"]

    @property
    def written(self) -> int:
        """Records flushed to a log file."""
        return self._counts["written"]

    @property
    def dropped(self) -> int:
        """Sampled records that were lost (queue full, disk error, bad proto, closed)."""
        with self._lock:
            return sum(self._dropped.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        with self._lock:
            return dict(self._dropped)

    def stats(self) -> dict:
        with self._lock:
            return {"sampled": self._counts["sampled"], "written": self._counts["written"],
                    "dropped": sum(self._dropped.values()),
                    "dropped_by_reason": dict(self._dropped), "queued": self._queue.qsize()}

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _drop(self, reason: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._dropped[reason] += n

    # -- request thread ---------------------------------------------------------------------------

    def maybe_log(self, model_name: str, version, signature_name: str, request,
                  response) -> bool:
        """Sample one request; if kept, queue it for writing. Never blocks, never raises.

        Returns True when the record was queued. ``version`` is an int (or None when unknown).
        """
        try:
            if self.sampling_rate < 1.0 and self._rng.random() >= self.sampling_rate:
                return False
            self._count("sampled")
            if self._closed:
                self._drop("closed")
                return False
            field = LOG_FIELDS.get(type(request).DESCRIPTOR.full_name)
            if field is None:
                self._drop("unsupported_request")
                return False
            item = (field, model_name, version, signature_name, request, response, time.time())
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self._drop("queue_full")
        except Exception:  # noqa: BLE001 - logging must never fail a request
            self._drop("error")
        return False

    def flush(self, timeout: float | None = 10.0, finish_file: bool = False) -> bool:
        """Wait until every record queued so far is flushed (and, with ``finish_file``, the
        current file renamed to its final name). False on timeout or when closed."""
        if self._closed or not self._thread.is_alive():
            return False
        barrier = _Barrier(finish_file)
        try:
            self._queue.put(barrier, timeout=timeout)
        except queue.Full:
            return False
        return barrier.done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, finish the current file and stop the thread."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("request log %s: writer did not drain its queue in %ss",
                        self.filename_prefix, timeout)
            return
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writer thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._finish_file()
                return
            try:
                if isinstance(item, _Barrier):
                    if item.finish_file:
                        self._finish_file()
                    else:
                        self._flush()
                    item.done.set()
                    continue
                self._write(item)
                if self._queue.empty():
                    self._flush()
            except Exception:  # keep the writer alive whatever happens
                log.exception("request log: writer error")
                self._drop("error")

    def _write(self, item) -> None:
        field, model_name, version, signature_name, request, response, stamp = item
        try:
            data = _prediction_log(field, model_name, version, signature_name, request, response,
                                   stamp, self.sampling_rate).SerializeToString()
        except Exception:
            log.exception("request log: cannot encode a %s record", field)
            self._drop("encode_error")
            return
        if self._writer is None and not self._open():
            self._drop("write_error")
            return
        try:
            self._writer.write(data)
        except Exception as e:  # noqa: BLE001
            self._abandon_file(e, extra=1)
            return
        self._unflushed += 1
        self._file_bytes += len(data) + RECORD_OVERHEAD
        if self._file_bytes >= self.max_file_bytes:
            self._finish_file()

    def _open(self) -> bool:
        now = time.monotonic()
        if now < self._retry_open_at:
            return False
        import tensorflow as tf

        folder, base = os.path.split(self.filename_prefix)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{base}-" if base else ""
        name += f"{stamp}-{os.getpid()}-{next(_file_numbers):05d}{SUFFIX}"
        final = os.path.join(folder, name)
        tmp = os.path.join(folder, f".{name}{TMP_SUFFIX}")
        try:
            if folder:
                tf.io.gfile.makedirs(folder)
            self._writer = tf.io.TFRecordWriter(tmp)
        except Exception as e:  # noqa: BLE001
            self._retry_open_at = now + RETRY_OPEN_SECONDS
            log.warning("request log: cannot open %s: %s", tmp, e)
            return False
        self._tmp_path, self._final_path = tmp, final
        self._file_bytes = 0
        self._unflushed = 0
        return True

    def _flush(self) -> None:
        if self._writer is None or not self._unflushed:
            return
        try:
            self._writer.flush()
        except Exception as e:  # noqa: BLE001
            self._abandon_file(e)
            return
        self._count("written", self._unflushed)
        self._unflushed = 0

    def _finish_file(self) -> None:
        """Flush and close the current file and give it its final name."""
        if self._writer is None:
            return
        self._flush()
        if self._writer is None:  # the flush failed and abandoned the file
            return
        import tensorflow as tf

        writer, tmp, final = self._writer, self._tmp_path, self._final_path
        self._writer = self._tmp_path = self._final_path = None
        try:
            writer.close()
            if self._file_bytes:
                tf.io.gfile.rename(tmp, final, overwrite=False)
                self.finished_files.append(final)
            else:
                tf.io.gfile.remove(tmp)
        except Exception as e:  # noqa: BLE001
            log.warning("request log: cannot finish %s: %s", final, e)

    def _abandon_file(self, error: Exception, extra: int = 0) -> None:
        """A write or flush failed: the records not yet flushed are lost; start a new file."""
        log.warning("request log: write to %s failed: %s", self._tmp_path, error)
        self._drop("write_error", self._unflushed + extra)
        self._unflushed = 0
        writer, self._writer = self._writer, None
        self._retry_open_at = time.monotonic() + RETRY_OPEN_SECONDS
        try:
            writer.close()
        except Exception as e:  # noqa: BLE001
            log.debug("request log: closing an abandoned file: %s", e)


def _prediction_log(field: str, model_name: str, version, signature_name: str, request,
                    response, stamp: float, sampling_rate: float):
    from tensorflow_serving.apis import prediction_log_pb2

    record = prediction_log_pb2.PredictionLog()
    meta = record.log_metadata
    meta.model_spec.name = model_name
    if version is not None:
        meta.model_spec.version.value = int(version)
    if signature_name:
        meta.model_spec.signature_name = signature_name
    meta.sampling_config.sampling_rate = sampling_rate
    meta.timestamp_secs = int(stamp)
    entry = getattr(record, field)
    entry.request.CopyFrom(request)
    if response is not None:
        entry.response.CopyFrom(response)
    return record


def log_files(path_or_prefix: str | os.PathLike) -> list[str]:
    """Finished log files: every ``*.tfrecord`` under a folder (recursively), the file itself,
    or the files of a ``filename_prefix``; sorted by name (so by time for one prefix)."""
    path = Path(path_or_prefix)
    if path.is_dir():
        files = [p for p in path.rglob(f"*{SUFFIX}") if not p.name.startswith(".")]
    elif path.is_file():
        files = [path]
    else:
        files = [p for p in path.parent.glob(f"{path.name}-*{SUFFIX}")] if path.parent.is_dir() \
            else []
        if not files:
            raise FileNotFoundError(f"no request log at {path}")
    return sorted(str(p) for p in files)


def read_prediction_logs(path_or_dir: str | os.PathLike) -> Iterator:
    """Yield the ``PredictionLog`` records of a log file, folder or filename prefix."""
    files = log_files(path_or_dir)
    if not files:
        return
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for record in tf.data.TFRecordDataset(files):
        yield prediction_log_pb2.PredictionLog.FromString(record.numpy())
