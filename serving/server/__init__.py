"""A local, TensorFlow-Serving-compatible model server (``ksuite serve``).

It stands in for ``tensorflow_model_server`` in development and tests, where the real binary
cannot be installed from the package registries. It serves the same model folders
(``<base_path>/<integer version>/``, zero-padded names such as ``00000123`` allowed) and reads the
same ``--model_config_file`` (ModelServerConfig text proto), and it speaks the same two APIs on
the same default ports:

* REST (tornado), port 8501::

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances"|"inputs": ...}
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   {"examples": [...]}
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress

  Errors are ``{"error": "..."}`` with TensorFlow Serving's status mapping (400 bad input or
  unknown label, 404 unknown model/version, 504 timeout, 503 overloaded...).

* gRPC (grpcio), port 8500 (and ``--grpc_socket_path``): ``tensorflow.serving.PredictionService``
  (Predict, Classify, Regress, MultiInference, GetModelMetadata) and
  ``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest), with the
  official ``tensorflow_serving.apis`` messages.

Each version is loaded as TensorFlow Serving loads it, into a session over the SavedModel's
MetaGraph; signatures are run by their tensor names, so the graph judges tensor shapes. The base
paths are polled every
``--file_system_poll_wait_seconds`` and new versions are loaded while serving. Versions leaving
the version policy are unloaded only once a version the policy wants is available (TensorFlow
Serving's availability-preserving policy), so a version switch drops no request.
``--enable_batching`` batches concurrent requests server-side (``serving.batching``).

Flags are ``tensorflow_model_server``'s, spelled the same; flags of the real server that this one
does not implement are accepted with a warning. Unlike the real server it binds to 127.0.0.1
unless ``--host`` says otherwise.

Modules: ``options`` (flags), ``servable`` (one loaded version), ``versions`` and ``core``
(model management), ``service`` and ``inference`` (the protocol-independent API), ``rest`` and
``rest_http`` (REST), ``grpc_api`` (gRPC), ``monitoring`` (Prometheus), ``request_logging`` (the
hook to ``serving.request_log``), ``app`` (ModelServer, ``main``), ``processes`` (several server
processes on the same ports, ``--num_server_processes``).
"""

from serving.server.app import ModelServer, main
from serving.server.core import ServerCore
from serving.server.options import ServerOptions, build_parser, parse_args
from serving.server.rest import RestApi
from serving.server.servable import Servable, Signature
from serving.server.service import DEFAULT_SIGNATURE, Service, map_error, validate_inputs

__all__ = ["DEFAULT_SIGNATURE", "ModelServer", "RestApi", "Servable", "ServerCore",
           "ServerOptions", "Service", "Signature", "build_parser", "main", "map_error",
           "parse_args", "validate_inputs"]
