"""The hook between the service and request logging (``serving.request_log``): a model's
``logging_config`` in the model config file makes a RequestLogger, and every Predict, Classify,
Regress and MultiInference of that model offers its request and response to it."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("serving.server")


def _logger_class():
    try:
        from serving.request_log import RequestLogger
    except ImportError:  # request logging not installed: nothing is logged
        return None
    return RequestLogger


class RequestLogs:
    """Model name -> RequestLogger, kept in step with each model's ``logging_config``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loggers: dict[str, tuple[bytes, object]] = {}

    def update(self, model) -> None:
        """(Re)make the logger of ``model`` (a versions.Model) when its logging_config changed."""
        config = model.config
        key = config.logging_config.SerializeToString() if config.HasField("logging_config") \
            else b""
        with self._lock:
            old = self._loggers.get(model.name)
            if old is not None and old[0] == key:
                return
        logger = None
        cls = _logger_class() if key else None
        if cls is not None:
            try:
                logger = cls.from_logging_config(config.logging_config)
            except Exception as exc:  # noqa: BLE001 - a bad logging config must not stop serving
                log.error("model %s: request logging not started: %s", model.name, exc)
        with self._lock:
            old = self._loggers.get(model.name)
            self._loggers[model.name] = (key, logger)
        if old is not None and old[1] is not None:
            old[1].close()

    def wants(self, model_name: str) -> bool:
        entry = self._loggers.get(model_name)
        return entry is not None and entry[1] is not None

    def log(self, servable, signature_name: str, request, response) -> None:
        """Offer one request/response; never blocks, never raises."""
        entry = self._loggers.get(servable.name)
        if entry is None or entry[1] is None:
            return
        try:
            entry[1].maybe_log(servable.name, servable.version, signature_name, request, response)
        except Exception:  # noqa: BLE001 - logging never fails a request
            pass

    def close(self) -> None:
        with self._lock:
            loggers, self._loggers = self._loggers, {}
        for _, logger in loggers.values():
            if logger is not None:
                logger.close()
