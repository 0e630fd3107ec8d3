"""The local server against TensorFlow Serving's documented behaviour, on models in TF Serving's
own shapes: a ``half_plus_two`` (signature ``x`` [-1,1] over a shape-agnostic graph, plus
classify and regress signatures on serialized tf.Example, for MultiInference)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import requests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving")

from serving import ServingError  # noqa: E402
from serving.client import GrpcClient, RestClient  # noqa: E402
from serving.server import ModelServer, ServerOptions  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def half_plus_two(path, a: float = 0.5, b: float = 2.0):
    """TF Serving's half_plus_two: y = a*x + b over a graph that accepts any shape; its
    SignatureDefs record x as [-1,1] (from tf.Example parsing, as the original does)."""
    g = tf.Graph()
    with g.as_default():
        ex = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(ex, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        va = tf.compat.v1.Variable(a, name="a")
        vb = tf.compat.v1.Variable(b, name="b")
        y = tf.add(tf.multiply(va, x), vb, name="y")
        with tf.compat.v1.Session(graph=g) as s:
            s.run(tf.compat.v1.global_variables_initializer())
            info = tf.compat.v1.saved_model.build_tensor_info
            sd = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
            sigs = {
                "serving_default": sd({"x": info(x)}, {"y": info(y)},
                                      "tensorflow/serving/predict"),
                "classify_x_to_y": sd({"inputs": info(ex)}, {"scores": info(y)},
                                      "tensorflow/serving/classify"),
                "regress_x_to_y": sd({"inputs": info(ex)}, {"outputs": info(y)},
                                     "tensorflow/serving/regress"),
            }
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(s, ["serve"], signature_def_map=sigs)
            builder.save()
    return path


@pytest.fixture(scope="module")
def hp2(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs")
    half_plus_two(root / "half_plus_two" / "1")
    server = ModelServer(ServerOptions(
        port=0, rest_api_port=0, model_name="half_plus_two",
        model_base_path=str(root / "half_plus_two"), file_system_poll_wait_seconds=0.2)).start()
    url = f"http://127.0.0.1:{server.rest_port}"
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=20, retries=0)
    yield dict(server=server, url=url, grpc=grpc_client, root=root,
               rest=RestClient(url, timeout=20, retries=0))
    grpc_client.close()
    server.stop()


def test_signature_shape_is_the_graphs_to_judge(hp2):
    md = hp2["rest"].metadata("half_plus_two")["metadata"]["signature_def"]["signature_def"]
    x = md["serving_default"]["inputs"]["x"]["tensor_shape"]["dim"]
    assert [d["size"] for d in x] == ["-1", "1"]
    r = requests.post(hp2["url"] + "/v1/models/half_plus_two:predict",
                      json={"instances": [2.0, 3.0, 4.0]}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [3.0, 3.5, 4.0]}
    r = requests.post(hp2["url"] + "/v1/models/half_plus_two:predict",
                      json={"inputs": {"x": [[1.0], [2.0]]}}, timeout=20)
    assert r.json() == {"outputs": [[2.5], [3.0]]}
    p = hp2["grpc"].predict("half_plus_two", {"x": np.array([2.0, 3.0], np.float32)})
    assert p["y"].tolist() == [3.0, 3.5]


def test_input_names_are_checked_and_the_runtime_refusal_is_invalid_argument(hp2):
    r = requests.post(hp2["url"] + "/v1/models/half_plus_two:predict",
                      json={"inputs": {"z": [1.0]}}, timeout=20)
    assert r.status_code == 400 and "Missing named input: x" in r.json()["error"]
    with pytest.raises(ServingError) as e:
        hp2["grpc"].predict("half_plus_two", {"x": np.ones(2, np.float32),
                                              "z": np.ones(2, np.float32)})
    assert e.value.code == "INVALID_ARGUMENT" and "alias not found" in e.value.message
    # a graph that refuses the tensor: its own message, as INVALID_ARGUMENT
    with pytest.raises(ServingError) as e:
        hp2["grpc"].predict("half_plus_two", {"x": [b"not a number"]})
    assert e.value.code == "INVALID_ARGUMENT"


def test_mixed_int_and_bool_arrays_are_refused(hp2):
    for body in ({"instances": [1.0, True]}, {"inputs": {"x": [[True], [2.5]]}}):
        r = requests.post(hp2["url"] + "/v1/models/half_plus_two:predict", json=body, timeout=20)
        assert r.status_code == 400, r.text
        assert "Type: True is not of expected type: float32" in r.json()["error"]


def test_huge_declared_tensor_is_refused_before_allocating(hp2):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    t.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (1000000, 28, 28)]))
    req.inputs["x"].CopyFrom(t)
    assert len(req.SerializeToString()) < 64
    stub = prediction_service_pb2_grpc.PredictionServiceStub(hp2["grpc"].channel)
    start = time.monotonic()
    with pytest.raises(ServingError) as e:
        hp2["grpc"].call(stub.Predict, req)
    assert e.value.code == "RESOURCE_EXHAUSTED" and "declares shape" in e.value.message
    assert time.monotonic() - start < 5
    x = np.array([[1.0]], np.float32)
    assert hp2["grpc"].predict("half_plus_two", {"x": x})["y"].tolist() == [[2.5]]
