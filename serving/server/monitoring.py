"""Prometheus metrics with TensorFlow Serving's names, labels and buckets.

``--monitoring_config_file`` holds an ASCII ``MonitoringConfig``
(tensorflow_serving/config/monitoring_config.proto)::

    prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }

and the REST port then serves the page, written by ``prometheus_client``. The metrics are TF
Serving's (servables/tensorflow/util.cc, batching/batching_session.cc), under the names its
Prometheus exporter gives them ('/' becomes ':'):

* ``:tensorflow:serving:request_count`` {model_name, status}: requests by canonical status;
* ``:tensorflow:serving:request_latency`` {model_name, API, entrypoint}: histogram, microseconds,
  of successful requests, entrypoint ``GRPC`` (from grpcio's acceptance of the call to the
  serialized answer) or ``REST`` (from the kernel's receive timestamp of the request's bytes,
  so the wait for the IO loop counts, to the answer written);
* ``:tensorflow:serving:runtime_latency`` {model_name, API, runtime}: histogram, microseconds,
  of the model's run (runtime ``TF1``: a session, as TF Serving's);
* ``:tensorflow:serving:request_example_counts`` {model}: histogram of tf.Examples per
  Classify/Regress/MultiInference request, and ``:tensorflow:serving:request_example_count_total``;
* ``:tensorflow:serving:batching_session:queuing_latency`` {thread_pool_name}: histogram,
  microseconds a request waited for its batch.

TF Serving's counters carry no ``_total`` suffix; prometheus_client adds one to every metric it
types as counter, so the two counters are exposed untyped, under TF Serving's exact names.
"""

from __future__ import annotations

import threading

DEFAULT_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_MESSAGE = None


def monitoring_config_message():
    """The ``tensorflow.serving.MonitoringConfig`` message class (not in the
    tensorflow-serving-api wheel): built once from its two-message definition."""
    global _MESSAGE
    if _MESSAGE is not None:
        return _MESSAGE
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving", syntax="proto3")
    prom = fdp.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL)
    prom.field.add(name="path", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
    mon = fdp.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, label=F.LABEL_OPTIONAL,
                  type=F.TYPE_MESSAGE, type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    _MESSAGE = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))
    return _MESSAGE


def read_monitoring_config(path: str) -> str | None:
    """The Prometheus path the file enables, or None; ValueError when it does not parse."""
    from google.protobuf import text_format

    msg = monitoring_config_message()()
    try:
        with open(path, encoding="utf-8") as f:
            text_format.Parse(f.read(), msg)
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid MonitoringConfig: {exc}") from None
    if not msg.prometheus_config.enable:
        return None
    return msg.prometheus_config.path or DEFAULT_PATH


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """TensorFlow's monitoring::Buckets::Exponential limits (the last bucket is +Inf)."""
    out, bound = [], float(scale)
    for _ in range(count):
        out.append(bound)
        bound *= growth
    return out


class _Counters:
    """TF Serving's counters, collected under their exact names (see the module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.values: dict[str, dict[tuple, int]] = {}
        self.specs: dict[str, tuple[str, tuple]] = {}

    def define(self, name: str, doc: str, labels: tuple) -> None:
        self.specs[name] = (doc, labels)
        self.values[name] = {}

    def inc(self, name: str, key: tuple, n: int = 1) -> None:
        with self._lock:
            cells = self.values[name]
            cells[key] = cells.get(key, 0) + n

    def collect(self):
        from prometheus_client.core import Metric

        with self._lock:
            snapshot = {k: dict(v) for k, v in self.values.items()}
        for name, cells in snapshot.items():
            doc, labels = self.specs[name]
            m = Metric(name, doc, "unknown")
            for key, value in sorted(cells.items()):
                m.add_sample(name, dict(zip(labels, key, strict=True)), value)
            yield m


class _Shared:
    """The metrics of every server process (``prometheus_client``'s multiprocess files), with
    TF Serving's counter names and each metric's own help text."""

    def __init__(self, folder, docs: dict[str, str], counters: dict[str, str]):
        self.folder, self.docs, self.counters = str(folder), docs, counters

    def collect(self):
        from prometheus_client.core import Metric
        from prometheus_client.multiprocess import MultiProcessCollector

        for m in MultiProcessCollector(None, path=self.folder).collect():
            name = self.counters.get(m.name)
            if name is None:
                m.documentation = self.docs.get(m.name, m.documentation)
                yield m
                continue
            out = Metric(name, self.docs[name], "unknown")
            for smp in sorted(m.samples, key=lambda smp: sorted(smp.labels.items())):
                if smp.name.endswith("_total"):
                    out.add_sample(name, smp.labels, smp.value)
            yield out


class Metrics:
    """The server's metrics in a registry of its own (several servers may share a process).
    With ``multiprocess`` (a folder; ``PROMETHEUS_MULTIPROC_DIR`` of every server process of
    one ``ksuite serve``), values are kept in that folder and the page adds up every process's."""

    REQUEST_COUNT = ":tensorflow:serving:request_count"
    EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"

    def __init__(self, thread_pool_name: str = "batch_threads", multiprocess=None):
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # TF Serving exposes no *_created series
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry(auto_describe=True)
        counters = {self.REQUEST_COUNT: ("The total number of requests.",
                                         ("model_name", "status")),
                    self.EXAMPLE_COUNT_TOTAL: ("The total number of tensorflow.Examples.",
                                               ("model",))}
        self.docs = {name: doc for name, (doc, _) in counters.items()}
        if multiprocess is None:
            self.counters = _Counters()
            for name, (doc, labels) in counters.items():
                self.counters.define(name, doc, labels)
            self.registry.register(self.counters)
        else:  # prometheus_client names counters <name>_total: renamed back by _Shared
            self._shared = {name: Counter(name, doc, labels, registry=None)
                            for name, (doc, labels) in counters.items()}
            self._names = {c._name: name for name, c in self._shared.items()}
        latency = exponential_buckets(10, 1.8, 33)  # ~20 minutes
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=latency, registry=self.registry)
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=latency, registry=self.registry)
        self.example_counts = Histogram(
            ":tensorflow:serving:request_example_counts",
            "The number of tensorflow.Examples per request.", ["model"],
            buckets=exponential_buckets(1, 2, 15), registry=self.registry)
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"], buckets=exponential_buckets(100, 1.2, 52),
            registry=self.registry)
        for h in (self.request_latency, self.runtime_latency, self.example_counts,
                  self.queuing_latency):
            self.docs[h._name] = h._documentation
        self.thread_pool_name = thread_pool_name

    def _inc(self, name: str, key: tuple, n: int = 1) -> None:
        if self.multiprocess is None:
            self.counters.inc(name, key, n)
        else:
            self._shared[name].labels(*key).inc(n)

    # -- recording (seconds in, microseconds out, as TF Serving records them) ------------------
    def request(self, model: str, api: str, entrypoint: str, code: str, seconds: float) -> None:
        """One finished request: counted by status; its latency kept when it succeeded."""
        self._inc(self.REQUEST_COUNT, (model, code))
        if code == "OK":
            self.request_latency.labels(model, api, entrypoint).observe(seconds * 1e6)

    def runtime(self, model: str, api: str, seconds: float) -> None:
        self.runtime_latency.labels(model, api, "TF1").observe(seconds * 1e6)

    def examples(self, model: str, n: int) -> None:
        self.example_counts.labels(model).observe(n)
        self._inc(self.EXAMPLE_COUNT_TOTAL, (model,), n)

    def queuing(self, seconds: float) -> None:
        self.queuing_latency.labels(self.thread_pool_name).observe(seconds * 1e6)

    def page(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import CollectorRegistry, exposition

        if self.multiprocess is None:
            return exposition.generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Shared(self.multiprocess, self.docs, self._names))
        return exposition.generate_latest(registry)
