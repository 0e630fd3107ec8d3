"""ServerCore: the models, their versions and labels. Loads and unloads versions as the config and
the folders change, and resolves a request's model spec to a loaded version."""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from pathlib import Path

from serving import ServingError
from serving.batching import BatchScheduler
from serving.server.options import ServerOptions
from serving.server.servable import Servable
from serving.server.versions import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    Model,
    Version,
    aspired_versions,
    disk_versions,
)
from shared.errors import UserError

log = logging.getLogger("serving.server")


class ServerCore:
    """Models and versions; ``start()`` returns once every model of the initial config has a
    version available (as TensorFlow Serving, which opens its ports only then)."""

    def __init__(self, opts: ServerOptions):
        self.opts = opts
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, Model] = {}
        self._stop = threading.Event()
        self._loads: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._config_text: str | None = None
        self._heap_lock = threading.Lock()
        self._heap = {"unloaded": False}
        self.tags = [t.strip() for t in opts.saved_model_tags.split(",") if t.strip()]
        self.batcher = BatchScheduler(opts.batching()) if opts.enable_batching else None
        self.on_model = None  # called with a Model on a config (re)apply and after a version loads

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._freeze_libraries()
        for i in range(max(1, self.opts.num_load_threads)):
            self._spawn(self._load_worker, f"serving-load-{i}")
        try:
            config = self._initial_config()
            self.reload_config(config, labels=False)
            self._wait_until_available({mc.name for mc in config.model_config_list.config})
            self.reload_config(config)
            self._settle_heap()
        except ServingError as exc:
            self.stop()
            raise UserError(f"cannot start: {exc.message}") from None
        except BaseException:
            self.stop()
            raise
        if self.opts.file_system_poll_wait_seconds > 0:
            self._spawn(self._fs_poll_loop, "serving-fs-poll")
        if self.opts.model_config_file and self.opts.model_config_file_poll_wait_seconds > 0:
            self._spawn(self._config_poll_loop, "serving-config-poll")

    def stop(self) -> None:
        self._stop.set()
        if self.batcher is not None:
            self.batcher.close()
        with self._changed:
            self._changed.notify_all()

    def _settle_heap(self) -> None:
        """Keep Python's garbage collections short. TensorFlow's own objects (hundreds of
        thousands) were frozen at start (``gc.freeze()``: collections skip them); a version's
        objects are not, so after an unload one collection of what is not frozen reclaims its
        cycles, here, off the request path. (Unfreezing everything to collect once held the
        interpreter lock for ~250 ms: every request in flight waited.)"""
        with self._heap_lock:
            unloaded, self._heap["unloaded"] = self._heap["unloaded"], False
        if unloaded:
            gc.collect()

    @staticmethod
    def _freeze_libraries() -> None:
        """Import TensorFlow and freeze what is alive, before any version loads."""
        from serving.server.servable import _tf

        _tf()
        gc.collect()
        gc.freeze()

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _initial_config(self):
        from tensorflow_serving.config import model_server_config_pb2 as pb

        from serving.config import read_model_config

        if self.opts.model_config_file:
            path = Path(self.opts.model_config_file)
            try:
                self._config_text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot read --model_config_file {path}: {exc}") from None
            return read_model_config(path)
        if not self.opts.model_base_path:
            raise UserError("Both --model_base_path and --model_config_file are empty")
        config = pb.ModelServerConfig()
        mc = config.model_config_list.config.add()
        mc.name = self.opts.model_name
        mc.base_path = self.opts.model_base_path
        mc.model_platform = "tensorflow"
        return config

    def _wait_until_available(self, names: set[str]) -> None:
        """Block until each model has an available version; a model whose every load failed
        stops the start ("N model(s) did not become available")."""
        last_note = time.monotonic()
        poll = self.opts.file_system_poll_wait_seconds or 1.0
        with self._changed:
            while not self._stop.is_set():
                waiting, failed = [], []
                for n in sorted(names):
                    m = self._models.get(n)
                    if m is None or m.available():
                        continue
                    recs = list(m.versions.values())
                    if recs and all(r.state == END and r.failed for r in recs):
                        failed.append(f"{n}: {recs[-1].error_message}")
                    else:
                        waiting.append(n)
                if failed:
                    raise ServingError("UNKNOWN", f"{len(failed)} model(s) did not become "
                                       f"available: {{{'; '.join(failed)}}}")
                if not waiting:
                    return
                if time.monotonic() - last_note > 10:
                    last_note = time.monotonic()
                    log.info("waiting for models to become available: %s", ", ".join(waiting))
                self._changed.wait(min(poll, 0.5))
                if any(self._models[n].path_error or not self._models[n].versions
                       for n in waiting if n in self._models):
                    self._poll_all()

    # -- config --------------------------------------------------------------------------------
    def reload_config(self, config, wait: bool = True, labels: bool = True) -> None:
        """Serve exactly the models in ``config`` (ModelServerConfig): add, reconfigure and remove
        models, wait for the loads this starts, then apply the version labels."""
        from serving.config import check_model_config

        kind = config.WhichOneof("config")
        if kind != "model_config_list":
            raise ServingError("INVALID_ARGUMENT",
                               "ServerModelConfig type not supported: only model_config_list is "
                               f"implemented (got {kind or 'an empty config'})")
        problems = check_model_config(config, labels=False)
        if problems:
            raise ServingError("INVALID_ARGUMENT", "; ".join(problems))
        new = {mc.name: mc for mc in config.model_config_list.config}
        with self._lock:
            for name, m in self._models.items():
                if name not in new:
                    m.removed = True
                    log.info("model %s removed from the config: unloading it", name)
            for name, mc in new.items():
                m = self._models.get(name)
                if m is None:
                    self._models[name] = Model(name, mc)
                    log.info("serving model %s from %s", name, mc.base_path)
                    continue
                m.removed = False
                if mc.base_path != m.config.base_path:
                    log.info("model %s: base path changed to %s; the versions from %s answer "
                             "until a new one is available", name, mc.base_path,
                             m.config.base_path)
                    for v, rec in m.versions.items():
                        if rec.state == AVAILABLE:
                            m.retiring[v] = rec
                    m.versions = {}
                m.config = mc
            self._poll_all()
            models = [self._models[n] for n in new]
        if self.on_model is not None:
            for m in models:
                self.on_model(m)
        if wait:
            self._wait_for_loads(set(new))
        if labels:
            self._apply_labels(new)
        self._settle_heap()

    def _apply_labels(self, new: dict) -> None:
        with self._lock:
            errors = []
            for name, mc in new.items():
                m = self._models[name]
                m.pending_labels = {}
                for label, version in mc.version_labels.items():
                    if m.labels.get(label) == version:
                        continue
                    rec = m.find(version)
                    if rec is not None and rec.state == AVAILABLE:
                        continue
                    if self.opts.allow_version_labels_for_unavailable_models and \
                            label not in m.labels:
                        continue
                    m.pending_labels[label] = version
                    errors.append(f"Request to assign label to version {version} of model "
                                  f"{name}, which is not currently available for inference")
            if errors:
                raise ServingError("FAILED_PRECONDITION", "; ".join(errors))
            for name, mc in new.items():
                self._models[name].labels = dict(mc.version_labels)

    def _wait_for_loads(self, names: set[str]) -> None:
        def pending():
            return any(v.state in (START, LOADING)
                       for n in names if n in self._models
                       for v in self._models[n].versions.values())

        with self._changed:
            while pending() and not self._stop.is_set():
                self._changed.wait(0.5)

    # -- polling, loading, unloading -----------------------------------------------------------
    def _poll_all(self) -> None:
        with self._lock:
            for m in list(self._models.values()):
                try:
                    self._poll_model(m)
                except Exception:
                    log.exception("polling model %s failed", m.name)

    def _poll_model(self, m: Model) -> None:
        if m.removed:
            aspired, on_disk = set(), {}
        else:
            try:
                on_disk = disk_versions(Path(m.config.base_path))
            except OSError as exc:
                # TF Serving: "Could not find base path ...": this poll is skipped, nothing
                # is unloaded
                error = f"{type(exc).__name__}: {exc}"
                if error != m.path_error:
                    log.error("Could not find base path %s for servable %s with error %s; "
                              "keeping its versions, trying again at the next poll",
                              m.config.base_path, m.name, error)
                m.path_error = error
                return
            if m.path_error:
                log.info("base path %s of %s is readable again", m.config.base_path, m.name)
                m.path_error = ""
            if not on_disk and not m.versions:
                log.warning("No versions of servable %s found under base path %s", m.name,
                            m.config.base_path)
            aspired = aspired_versions(m.config, on_disk)
        for v in sorted(aspired):
            rec = m.versions.get(v)
            retry = rec is not None and rec.state == END and (
                not rec.failed or v not in m.aspired)
            if rec is None or retry:
                rec = m.versions[v] = Version(v, on_disk[v], state=START)
                self._loads.put((m, rec))
        m.aspired = aspired
        self._unload_unaspired(m)
        self._apply_pending_labels(m)
        if m.removed and all(v.state == END for v in m.versions.values()) and not m.retiring:
            if self._models.get(m.name) is m:
                del self._models[m.name]
        ended = sorted(v for v, r in m.versions.items() if r.state == END and v not in aspired)
        for v in ended[:-20]:  # keep the status history of unloaded versions bounded
            del m.versions[v]

    def _apply_pending_labels(self, m: Model) -> None:
        """Labels of the config whose version was not available yet: applied once it is."""
        for label, version in list(m.pending_labels.items()):
            rec = m.find(version)
            if rec is not None and rec.state == AVAILABLE:
                m.labels[label] = version
                del m.pending_labels[label]
                log.info("model %s: label %s now on version %d", m.name, label, version)

    def _unload_unaspired(self, m: Model) -> None:
        """Availability-preserving: a version leaves only when an aspired version is serving
        (or when nothing is aspired any more)."""
        serving = any(m.versions[v].state == AVAILABLE for v in m.aspired if v in m.versions)
        if not (serving or not m.aspired or m.removed):
            return
        for v, rec in list(m.versions.items()):
            if v not in m.aspired and rec.state in (AVAILABLE, START):
                self._unload(m, rec)
        if serving or m.removed:
            for rec in m.retiring.values():
                self._unload(m, rec)
            m.retiring = {}

    def _unload(self, m: Model, rec: Version) -> None:
        if rec.state == AVAILABLE:
            rec.state = UNLOADING
            log.info("Unloading servable version {name: %s version: %d}", m.name, rec.version)
        if rec.servable is not None:
            self._heap["unloaded"] = True
        rec.servable = None  # in-flight requests keep their own reference
        rec.state = END
        self._changed.notify_all()

    def _load_worker(self) -> None:
        while not self._stop.is_set():
            try:
                m, rec = self._loads.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                if rec.state != START or m.versions.get(rec.version) is not rec:
                    continue
                rec.state = LOADING
            log.info("Loading servable version {name: %s version: %d} from %s", m.name,
                     rec.version, rec.path)
            servable, error, attempt = None, None, 0
            while not self._stop.is_set():
                try:
                    servable = Servable(m.name, rec.version, rec.path, self.tags,
                                        warmup=self.opts.enable_model_warmup,
                                        intra_op=self.opts.tensorflow_intra_op_parallelism,
                                        inter_op=self.opts.tensorflow_inter_op_parallelism)
                    break
                except Exception as exc:  # noqa: BLE001 - a bad model must not kill the server
                    error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                    attempt += 1
                    with self._lock:
                        wanted = rec.version in m.aspired and not m.removed
                    if attempt > self.opts.max_num_load_retries or not wanted:
                        break
                    log.warning("loading %s version %d failed (%s); retry %d/%d", m.name,
                                rec.version, error, attempt, self.opts.max_num_load_retries)
                    self._stop.wait(max(0.0, self.opts.load_retry_interval_micros / 1e6))
            with self._lock:
                if servable is not None:
                    rec.servable, rec.state = servable, AVAILABLE
                    log.info("Successfully loaded servable version {name: %s version: %d}",
                             m.name, rec.version)
                else:
                    rec.state, rec.failed = END, True
                    rec.error_code, rec.error_message = "UNKNOWN", error or "load cancelled"
                    log.error("Loading servable version {name: %s version: %d} failed: %s",
                              m.name, rec.version, rec.error_message)
                self._unload_unaspired(m)
                self._apply_pending_labels(m)
                self._changed.notify_all()
            if servable is not None and self.on_model is not None:
                self.on_model(m)
            self._settle_heap()

    def _fs_poll_loop(self) -> None:
        while not self._stop.wait(self.opts.file_system_poll_wait_seconds):
            try:
                self._poll_all()
                self._settle_heap()
            except Exception:
                log.exception("file system poll failed")

    def _config_poll_loop(self) -> None:
        from serving.config import parse_model_config

        path = Path(self.opts.model_config_file)
        applied = True
        while not self._stop.wait(self.opts.model_config_file_poll_wait_seconds):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                log.error("cannot read model config file %s: %s", path, exc)
                continue
            if text == self._config_text and applied:
                continue
            changed, self._config_text = text != self._config_text, text
            try:
                self.reload_config(parse_model_config(text, str(path)))
                applied = True
                if changed:
                    log.info("reloaded model config from %s", path)
            except (UserError, ServingError) as exc:
                applied = False  # re-applied at every poll until it succeeds
                if changed:
                    log.error("model config %s not applied (trying again at every poll): %s",
                              path, exc)

    # -- lookups -------------------------------------------------------------------------------
    def _lookup(self, name: str, version: int | None, label: str | None):
        """(model or None, version) with a label resolved to its version; hold ``_lock``."""
        m = self._models.get(name)
        if m is not None and m.removed:
            m = None
        if label:
            if m is None or label not in m.labels:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Unrecognized servable version label: {label}")
            version = m.labels[label]
        return m, version

    def get_servable(self, name: str, version: int | None = None,
                     label: str | None = None) -> Servable:
        with self._lock:
            m, version = self._lookup(name, version, label)
            if version is None:
                live = m.available() if m is not None else []
                if live:
                    return m.find(live[-1]).servable
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            rec = m.find(version) if m is not None else None
            if rec is None or rec.state != AVAILABLE:
                raise ServingError("NOT_FOUND",
                                   f"Servable not found for request: Specific({name}, {version})")
            return rec.servable

    def model_status(self, name: str, version: int | None = None,
                     label: str | None = None) -> list[Version]:
        with self._lock:
            m, version = self._lookup(name, version, label)
            if m is None or not (m.versions or m.retiring):
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is not None:
                rec = m.find(version)
                if rec is None:
                    raise ServingError("NOT_FOUND",
                                       f"Could not find version {version} of model {name}")
                return [rec]
            recs = {**m.retiring, **m.versions}
            return [recs[v] for v in sorted(recs, reverse=True)]

    def loaded(self) -> dict[str, list[int]]:
        """Model name -> versions available for inference (for logs and tests)."""
        with self._lock:
            return {n: m.available() for n, m in self._models.items() if not m.removed}

    def models(self) -> list[Model]:
        with self._lock:
            return [m for m in self._models.values() if not m.removed]

    def wait_until(self, predicate, timeout: float) -> bool:
        """Block until ``predicate(self.loaded())`` is true (tests)."""
        end = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.loaded()):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True
