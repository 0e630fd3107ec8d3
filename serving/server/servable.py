"""One loaded model version, run as TensorFlow Serving runs it: a session over the SavedModel's
MetaGraph (what the C++ ``SavedModelBundle`` holds), fed and fetched by the tensor names its
SignatureDefs record. The graph, not the server, judges the shapes of the tensors it is fed."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.codec import TensorSpec, spec_from_tensor_info

log = logging.getLogger("serving.server")


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


@dataclass
class Signature:
    """A SignatureDef of a loaded version, with the graph tensors it feeds and fetches."""

    name: str
    method_name: str
    inputs: dict[str, TensorSpec]  # sorted by key
    outputs: dict[str, TensorSpec]
    feeds: list  # TF_Output of each input, in ``inputs`` order
    fetches: list  # TF_Output of each output, in ``outputs`` order


class Servable:
    """One version of a model, loaded into its own graph and session.

    ``call(sig, inputs, timeout)`` runs one signature; ``timeout`` (seconds) becomes the run's
    ``RunOptions.timeout_in_ms``, so the runtime itself stops a computation past its deadline."""

    def __init__(self, name: str, version: int, path: Path, tags: list[str],
                 warmup: bool = True, intra_op: int = 0, inter_op: int = 0):
        tf = _tf()
        from tensorflow.python.saved_model import loader_impl

        self.name, self.version, self.path = name, version, Path(path)
        self.key = (name, version)
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op,
                                          inter_op_parallelism_threads=inter_op)
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        try:
            with self.graph.as_default():
                meta = loader_impl.SavedModelLoader(str(path)).load(self.session, tags)
            self.signature_defs = dict(meta.signature_def)
            self.signatures: dict[str, Signature] = {}
            for sig_name, sdef in self.signature_defs.items():
                sig = self._signature(sig_name, sdef)
                if sig is not None:
                    self.signatures[sig_name] = sig
            self.graph.finalize()
        except BaseException:
            self.close()
            raise
        if warmup:
            self._warmup()

    def _signature(self, sig_name: str, sdef) -> Signature | None:
        if sig_name.startswith("__"):  # __saved_model_init_op: not callable
            return None
        infos = list(sdef.inputs.items()) + list(sdef.outputs.items())
        if any(info.WhichOneof("encoding") != "name" for _, info in infos):
            log.warning("%s version %d: signature %s has sparse or composite tensors, which "
                        "the local server does not run", self.name, self.version, sig_name)
            return None
        inputs = {k: spec_from_tensor_info(k, v) for k, v in sorted(sdef.inputs.items())}
        outputs = {k: spec_from_tensor_info(k, v) for k, v in sdef.outputs.items()}
        get = self.graph.get_tensor_by_name
        try:
            feeds = [get(s.tensor_name)._as_tf_output() for s in inputs.values()]
            fetches = [get(s.tensor_name)._as_tf_output() for s in outputs.values()]
        except (KeyError, ValueError) as exc:
            log.warning("%s version %d: signature %s names a tensor missing from the graph: %s",
                        self.name, self.version, sig_name, exc)
            return None
        return Signature(sig_name, sdef.method_name, inputs, outputs, feeds, fetches)

    def _warmup(self) -> None:
        """Run each signature with numeric, fully-shaped inputs once on zeros (batch of 1), so
        the first real request does not pay for graph optimization."""
        for sig in self.signatures.values():
            inputs = {}
            for k, spec in sig.inputs.items():
                if spec.is_string or spec.np_dtype is None or not spec.shape or \
                        any(d is None for d in spec.shape[1:]):
                    inputs = None
                    break
                inputs[k] = np.zeros((1,) + tuple(spec.shape[1:]), spec.np_dtype)
            if inputs:
                try:
                    self.call(sig, inputs)
                except Exception as exc:  # noqa: BLE001 - warm-up is best effort
                    log.debug("warm-up of %s/%s:%s failed: %s", self.name, self.version,
                              sig.name, exc)

    def call(self, sig: Signature, inputs: dict[str, np.ndarray],
             timeout: float | None = None) -> dict[str, np.ndarray]:
        """Feed ``inputs`` (by signature key) and fetch every output of ``sig``."""
        from tensorflow.python.client import pywrap_tf_session as tf_session

        feeds = {f: inputs[k] for f, k in zip(sig.feeds, sig.inputs, strict=True)}
        options = None
        if timeout is not None:
            from tensorflow.core.protobuf import config_pb2

            ms = max(1, int(timeout * 1000))
            options = tf_session.TF_NewBufferFromString(
                config_pb2.RunOptions(timeout_in_ms=ms).SerializeToString())
        try:
            results = self.session._call_tf_sessionrun(options, feeds, sig.fetches, [], None)
        finally:
            if options is not None:
                tf_session.TF_DeleteBuffer(options)
        return dict(zip(sig.outputs, results, strict=True))

    def close(self) -> None:
        try:
            self.session.close()
        except Exception:  # noqa: BLE001 - closing twice or after a failed load
            pass

    def __del__(self):
        self.close()
