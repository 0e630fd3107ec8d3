"""TensorFlow Serving for the suite: deployment files, a client, and a local stand-in server.

* ``serving.config``  - generate/validate ``models.config`` (ModelServerConfig) and
  ``batching.config`` (BatchingParameters) for the official ``tensorflow/serving`` image.
* ``serving.client``  - REST and gRPC client (``ksuite predict``).
* ``serving.server``  - a local server that speaks TensorFlow Serving's REST and gRPC APIs over
  the same model folders and config files (``ksuite serve``).

This module stays import-light (no TensorFlow, no gRPC): it only holds the status codes and the
one error type that the client and the server share.
"""

from __future__ import annotations

from shared.errors import UserError

# Canonical status codes (google.rpc.Code / tensorflow.error.Code) -> HTTP status, exactly as
# TensorFlow Serving's REST front end maps them (model_servers/http_server.cc, ToHTTPStatusCode).
CODE_TO_HTTP: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# HTTP status -> the code a client reports. 400 is ambiguous in TF Serving (INVALID_ARGUMENT,
# FAILED_PRECONDITION, OUT_OF_RANGE); INVALID_ARGUMENT is by far the common one. 413 is the
# local server's "request body too large" (TF Serving itself has no REST body limit).
HTTP_TO_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501


class ServingError(UserError):
    """A failed serving call, on either side of the wire.

    ``code`` is the canonical status name (``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``, ...), which is
    the gRPC status code and what TensorFlow Serving's REST API maps to an HTTP status.
    ``http_status`` is the HTTP status (given, or derived from ``code``).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        code = code if code in CODE_TO_HTTP else "UNKNOWN"
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else CODE_TO_HTTP[code]

    def __reduce__(self):  # picklable: errors come back from the JSON-parsing worker process
        return (type(self), (self.code, self.message, self.http_status))

    @property
    def retryable(self) -> bool:
        """Worth another attempt: the server was unreachable, overloaded or restarting."""
        return self.code == "UNAVAILABLE"


__all__ = [
    "CODE_TO_HTTP",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_REST_PORT",
    "HTTP_TO_CODE",
    "ServingError",
]
