"""The local TF-Serving-compatible server against the client, over REST and gRPC.

One server per module (ephemeral loopback ports) serves three models from a models.config made by
``serving.config``: ``mnist_mlp`` (two versions, one folder zero-padded, labels stable/canary),
``examples`` (string input, ``_bytes`` output, classify/regress signatures on serialized
tf.Example) and ``swap`` (where a new version appears while clients query).
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
import requests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow_serving")

from serving import ServingError  # noqa: E402
from serving.client import GrpcClient, RestClient  # noqa: E402
from serving.config import build_model_config, config_to_text, discover_models  # noqa: E402
from serving.server import ModelServer, ServerOptions  # noqa: E402
from shared.export import export_keras  # noqa: E402

pytestmark = pytest.mark.timeout(180)

LIMIT = 1 << 20  # --max_request_bytes for this server


def export_mnist(export_dir, seed: int, name: str = "mnist_mlp"):
    """The MNIST app's serving contract on a tiny untrained model."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28))
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)

    def serve(images):
        p = model(tf.cast(images, tf.float32) / 255.0)
        return {"probabilities": p, "classes": tf.argmax(p, axis=-1)}

    sig = [tf.TensorSpec([None, 28, 28], tf.uint8, name="images")]
    return export_keras(name, {"serving_default": (serve, sig)}, track=[model],
                        export_dir=export_dir)


class ExamplesModel(tf.Module):
    """String in, bytes out, and classify/regress on serialized tf.Example (TF Serving's
    contract: input ``inputs``; outputs ``classes``/``scores`` or ``outputs``)."""

    features = {"x": tf.io.FixedLenFeature([], tf.float32),
                "w": tf.io.FixedLenFeature([], tf.float32, default_value=1.0)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"length": tf.strings.length(text), "upper_bytes": tf.strings.upper(text)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        f = tf.io.parse_example(inputs, self.features)
        z = f["x"] * f["w"]
        scores = tf.stack([tf.sigmoid(-z), tf.sigmoid(z)], axis=1)
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(z)[0], 1])
        return {"classes": classes, "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        f = tf.io.parse_example(inputs, self.features)
        return {"outputs": 2.0 * f["x"] * f["w"] + 1.0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    v1 = export_mnist(root, seed=1)
    v2 = export_mnist(root, seed=2)
    padded = v2.with_name("00000002")
    os.rename(v2, padded)  # TF Serving accepts zero-padded version folders
    m = ExamplesModel()
    tf.saved_model.save(m, str(root / "examples" / "1"),
                        signatures={"serving_default": m.serve, "classify": m.classify,
                                    "regress": m.regress})
    export_mnist(root, seed=3, name="swap")

    models = discover_models(root)
    assert models == {"examples": [1], "mnist_mlp": [1, 2], "swap": [1]}
    config = build_model_config(models, base_path_prefix=str(root), policy="specific",
                                specific={"mnist_mlp": [1, 2]})
    for mc in config.model_config_list.config:
        if mc.name == "swap":  # newest version only: a new folder replaces the old version
            mc.model_version_policy.latest.num_versions = 1
            mc.version_labels.clear()
    assert dict(config.model_config_list.config[1].version_labels) == {"stable": 1, "canary": 2}
    cfg = root / "models.config"
    cfg.write_text(config_to_text(config, "test config"))

    server = ModelServer(ServerOptions(
        port=0, rest_api_port=0, model_config_file=str(cfg), file_system_poll_wait_seconds=0.2,
        max_request_bytes=LIMIT, max_num_load_retries=0)).start()
    rest = RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=20, retries=0)
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=20, retries=0)
    direct = {v: tf.saved_model.load(str(p)).signatures["serving_default"]
              for v, p in ((1, v1), (2, padded))}
    yield dict(server=server, rest=rest, grpc=grpc_client, root=root, direct=direct,
               url=f"http://127.0.0.1:{server.rest_port}", config=config)
    grpc_client.close()
    rest.close()
    server.stop()


def digits(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def expected(env, version, x):
    out = env["direct"][version](images=tf.constant(x))
    return {k: v.numpy() for k, v in out.items()}


# -------------------------------------------------------------------------------------------------
# status, metadata
# -------------------------------------------------------------------------------------------------


def test_status_over_both_protocols(env):
    ok = {"error_code": "OK", "error_message": ""}
    want = {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok},
        {"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert env["rest"].model_status("mnist_mlp") == want
    assert env["grpc"].model_status("mnist_mlp") == want
    one = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert env["rest"].model_status("mnist_mlp", version=1) == one
    assert env["rest"].model_status("mnist_mlp", label="stable") == one
    assert env["grpc"].model_status("mnist_mlp", label="stable") == one


def test_metadata_lists_signature_with_dtypes_and_shapes(env):
    md = env["rest"].metadata("mnist_mlp")
    assert md == env["grpc"].metadata("mnist_mlp")
    assert md["model_spec"] == {"name": "mnist_mlp", "signature_name": "", "version": "2"}
    sig = md["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    images = sig["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["outputs"]["probabilities"]["tensor_shape"]["dim"]] == \
        ["-1", "10"]
    assert sig["outputs"]["classes"]["dtype"] == "DT_INT64"
    assert env["rest"].metadata("mnist_mlp", label="stable")["model_spec"]["version"] == "1"
    ex = env["rest"].metadata("examples")["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify", "regress"} <= set(ex)
    assert ex["classify"]["inputs"]["inputs"]["dtype"] == "DT_STRING"


# -------------------------------------------------------------------------------------------------
# predict
# -------------------------------------------------------------------------------------------------


def test_rest_predict_row_and_columnar_equal_savedmodel(env):
    x = digits(3)
    want = expected(env, 2, x)
    rows = env["rest"].predict("mnist_mlp", instances=x)["predictions"]
    assert len(rows) == 3 and set(rows[0]) == {"probabilities", "classes"}
    np.testing.assert_array_equal(np.array([r["probabilities"] for r in rows], np.float32),
                                  want["probabilities"])
    assert [r["classes"] for r in rows] == want["classes"].tolist()
    cols = env["rest"].predict("mnist_mlp", inputs={"images": x})["outputs"]
    np.testing.assert_array_equal(np.array(cols["probabilities"], np.float32),
                                  want["probabilities"])
    assert cols["classes"] == want["classes"].tolist()
    # a single (unnamed) columnar input, and row objects naming the input
    assert env["rest"].predict("mnist_mlp", inputs=x)["outputs"] == cols
    named = env["rest"].predict("mnist_mlp", instances=[{"images": a} for a in x])
    assert named["predictions"] == rows


def test_grpc_predict_equals_savedmodel(env):
    x = digits(4, seed=1)
    p = env["grpc"].predict("mnist_mlp", {"images": x})
    assert (p.model, p.version, p.signature_name) == ("mnist_mlp", 2, "serving_default")
    want = expected(env, 2, x)
    np.testing.assert_array_equal(p["probabilities"], want["probabilities"])
    np.testing.assert_array_equal(p["classes"], want["classes"])
    only = env["grpc"].predict("mnist_mlp", x, output_filter=["classes"])  # unnamed input
    assert set(only.outputs) == {"classes"}


def test_version_pinning_and_labels(env):
    x = digits(2, seed=2)
    v1, v2 = expected(env, 1, x), expected(env, 2, x)
    assert not np.array_equal(v1["probabilities"], v2["probabilities"])
    rest, grpc_client = env["rest"], env["grpc"]
    for kwargs, want in (({"version": 1}, v1), ({"version": 2}, v2),
                         ({"label": "stable"}, v1), ({"label": "canary"}, v2)):
        out = rest.predict("mnist_mlp", inputs={"images": x}, **kwargs)["outputs"]
        np.testing.assert_array_equal(np.array(out["probabilities"], np.float32),
                                      want["probabilities"])
        p = grpc_client.predict("mnist_mlp", {"images": x}, **kwargs)
        assert p.version == (1 if want is v1 else 2)
        np.testing.assert_array_equal(p["probabilities"], want["probabilities"])


def test_bytes_in_b64_and_bytes_outputs(env):
    raw = b"\xffbin\x00"
    out = env["rest"].predict("examples", instances=[raw, "abc"])["predictions"]
    assert out[0]["length"] == 5 and out[1]["length"] == 3
    assert out[0]["upper_bytes"] == {"b64": base64.b64encode(b"\xffBIN\x00").decode()}
    assert out[1]["upper_bytes"] == {"b64": base64.b64encode(b"ABC").decode()}
    # the same over gRPC: string tensors travel as bytes
    p = env["grpc"].predict("examples", {"text": [raw, b"abc"]})
    assert p["upper_bytes"].tolist() == [b"\xffBIN\x00", b"ABC"]


# -------------------------------------------------------------------------------------------------
# classify / regress on serialized tf.Example
# -------------------------------------------------------------------------------------------------


def test_classify_and_regress_rest_and_grpc(env):
    rest, grpc_client = env["rest"], env["grpc"]
    examples = [{"x": 2.0}, {"x": -1.0}]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    res = rest.classify("examples", examples, signature_name="classify")
    assert [[c[0] for c in r] for r in res] == [["neg", "pos"], ["neg", "pos"]]
    np.testing.assert_allclose([r[1][1] for r in res], [sig(2.0), sig(-1.0)], rtol=1e-6)
    gres = grpc_client.classify("examples", examples, signature_name="classify")
    assert [[c[0] for c in r] for r in gres] == [["neg", "pos"]] * 2
    np.testing.assert_allclose([r[1][1] for r in gres], [r[1][1] for r in res], rtol=1e-6)
    # context features are shared by every example
    ctx = rest.regress("examples", [{"x": 1.0}, {"x": 3.0}], context={"w": 2.0},
                       signature_name="regress")
    assert ctx == [5.0, 13.0]
    assert grpc_client.regress("examples", [{"x": 1.0}], context={"w": 2.0},
                               signature_name="regress") == [5.0]
    # raw REST answer shape
    r = requests.post(env["url"] + "/v1/models/examples/versions/1:regress",
                      json={"signature_name": "regress", "examples": [{"x": 0.5}]}, timeout=20)
    assert r.status_code == 200 and r.json() == {"results": [2.0]}


def test_classify_errors(env):
    url = env["url"] + "/v1/models/examples:classify"
    cases = [
        ({"signature_name": "classify"}, 400, "'examples' is expected"),
        ({"signature_name": "classify", "examples": []}, 400, "empty array"),
        ({"signature_name": "classify", "examples": [{"x": [1.0, "a"]}]}, 400,
         "Unexpected element type"),
        ({"signature_name": "nope", "examples": [{"x": 1.0}]}, 400, "No signature was found"),
        ({"examples": [{"x": 1.0}]}, 400, "No classification inputs"),  # serving_default
    ]
    for body, status, text in cases:
        r = requests.post(url, json=body, timeout=20)
        assert r.status_code == status, (body, r.text)
        assert text in r.json()["error"], r.text
    with pytest.raises(ServingError) as e:
        env["grpc"].classify("examples", [], signature_name="classify")
    assert e.value.code == "INVALID_ARGUMENT" and "Input is empty" in e.value.message


# -------------------------------------------------------------------------------------------------
# bad input: clear 4xx / gRPC status, and the server keeps serving
# -------------------------------------------------------------------------------------------------

GOOD = {"instances": np.zeros((1, 28, 28), np.uint8).tolist()}
BAD_REST = [
    # (name, method, path, body (bytes | obj), status, substring of the error)
    ("malformed json", "POST", "/v1/models/mnist_mlp:predict", b'{"instances": [1, 2', 400,
     "JSON Parse error"),
    ("empty body", "POST", "/v1/models/mnist_mlp:predict", b"", 400, "document is empty"),
    ("not an object", "POST", "/v1/models/mnist_mlp:predict", b"[1]", 400, "Is not object"),
    ("instances and inputs", "POST", "/v1/models/mnist_mlp:predict",
     {"instances": [[0]], "inputs": [[0]]}, 400, "only one of 'inputs' or 'instances'"),
    ("neither", "POST", "/v1/models/mnist_mlp:predict", {"signature_name": ""}, 400,
     "Missing 'inputs' or 'instances'"),
    # the graph judges shapes: the runtime's own INVALID_ARGUMENT message
    ("wrong shape", "POST", "/v1/models/mnist_mlp:predict", {"instances": [[1, 2, 3]]}, 400,
     "Input to reshape is a tensor with 3 values"),
    ("ragged", "POST", "/v1/models/mnist_mlp:predict", {"instances": [[[1] * 28] * 28, [[1]]]},
     400, "different lengths"),
    ("wrong dtype", "POST", "/v1/models/mnist_mlp:predict",
     {"instances": [[["a"] * 28] * 28]}, 400, "is not of expected type: uint8"),
    ("out of range", "POST", "/v1/models/mnist_mlp:predict",
     {"instances": [[[300] * 28] * 28]}, 400, "out of range for uint8"),
    ("empty batch rows", "POST", "/v1/models/mnist_mlp:predict", {"instances": []}, 400,
     "empty batch"),
    ("empty batch columns", "POST", "/v1/models/mnist_mlp:predict", {"inputs": []}, 400,
     "empty batch"),
    ("unknown model", "POST", "/v1/models/nope:predict", GOOD, 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "POST", "/v1/models/mnist_mlp/versions/7:predict", GOOD, 404,
     "Specific(mnist_mlp, 7)"),
    ("unknown label", "POST", "/v1/models/mnist_mlp/labels/beta:predict", GOOD, 400,
     "Unrecognized servable version label: beta"),
    ("unknown signature", "POST", "/v1/models/mnist_mlp:predict",
     dict(GOOD, signature_name="nope"), 400, 'Serving signature name: "nope" not found'),
    ("signature not a string", "POST", "/v1/models/mnist_mlp:predict",
     dict(GOOD, signature_name=5), 400, "must be a string value"),
    ("wrong named input", "POST", "/v1/models/mnist_mlp:predict",
     {"instances": [{"pixels": [[0] * 28] * 28}]}, 400, "does not have named input: pixels"),
    ("missing columnar input", "POST", "/v1/models/mnist_mlp:predict",
     {"inputs": {"pixels": [[[0] * 28] * 28]}}, 400, "Missing named input: images"),
    ("bad b64", "POST", "/v1/models/examples:predict", {"instances": [{"b64": "%%%"}]}, 400,
     "Unable to base64 decode"),
    ("status of unknown model", "GET", "/v1/models/nope", None, 404,
     "Could not find any versions of model nope"),
    ("status of unknown version", "GET", "/v1/models/mnist_mlp/versions/9", None, 404,
     "Could not find version 9 of model mnist_mlp"),
    ("metadata of unknown label", "GET", "/v1/models/mnist_mlp/labels/x/metadata", None, 400,
     "Unrecognized servable version label: x"),
    ("no model name", "GET", "/v1/models", None, 400, "Missing model name"),
    ("malformed url", "POST", "/v1/models/mnist_mlp/version/1:predict", GOOD, 400,
     "Malformed request"),
    ("GET on predict", "GET", "/v1/models/mnist_mlp:predict", None, 400, "Malformed request"),
    ("outside the API", "GET", "/index.html", None, 404, "No handler"),
    ("too large", "POST", "/v1/models/mnist_mlp:predict", b"[" + b"0," * LIMIT + b"0]", 413,
     "larger than the limit"),
]


@pytest.mark.parametrize("case", BAD_REST, ids=[c[0] for c in BAD_REST])
def test_rest_bad_input(env, case):
    _, method, path, body, status, text = case
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    r = requests.request(method, env["url"] + path, data=data, timeout=20)
    assert r.status_code == status, r.text[:300]
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()
    assert set(err) == {"error"} and text in err["error"], err
    # the server keeps serving
    ok = requests.post(env["url"] + "/v1/models/mnist_mlp:predict", json=GOOD, timeout=20)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_client_raises_clear_errors(env):
    rest = env["rest"]
    with pytest.raises(ServingError) as e:
        rest.predict("nope", instances=[[0]])
    assert (e.value.code, e.value.http_status) == ("NOT_FOUND", 404)
    assert str(e.value).startswith("NOT_FOUND: Servable not found")
    with pytest.raises(ServingError) as e:
        rest.predict("mnist_mlp", instances=[[0]], label="nope")
    assert (e.value.code, e.value.http_status) == ("INVALID_ARGUMENT", 400)
    dead = RestClient("http://127.0.0.1:9", timeout=2, retries=1, backoff=0.01)
    with pytest.raises(ServingError) as e:
        dead.model_status("mnist_mlp")
    assert e.value.code == "UNAVAILABLE" and "cannot reach" in e.value.message


def _grpc_error(fn, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as e:
        fn(*args, **kwargs)
    return e.value


def test_grpc_bad_input(env):
    g = env["grpc"]
    x = digits(1)
    cases = [
        (("nope", {"images": x}), {}, "NOT_FOUND", "Latest(nope)"),
        (("mnist_mlp", {"images": x}), {"version": 7}, "NOT_FOUND", "Specific(mnist_mlp, 7)"),
        (("mnist_mlp", {"images": x}), {"label": "beta"}, "INVALID_ARGUMENT",
         "Unrecognized servable version label"),
        (("mnist_mlp", {"images": x.astype(np.float32)}), {}, "INVALID_ARGUMENT",
         "to be uint8 but float32 is provided"),
        (("mnist_mlp", {"images": np.zeros((1, 783), np.uint8)}), {}, "INVALID_ARGUMENT",
         "Input to reshape is a tensor with 783 values"),  # the graph's own message
        (("mnist_mlp", {"images": np.zeros((0, 28, 28), np.uint8)}), {}, "INVALID_ARGUMENT",
         "empty batch"),
        (("mnist_mlp", {"pixels": x}), {}, "INVALID_ARGUMENT",
         "input tensor alias not found in signature: pixels"),
        (("mnist_mlp", {"images": x}), {"signature_name": "nope"}, "FAILED_PRECONDITION",
         'Serving signature key "nope" not found'),
        (("mnist_mlp", {"images": x}), {"output_filter": ["logits"]}, "INVALID_ARGUMENT",
         "output tensor alias not found"),
        (("mnist_mlp", {"images": np.zeros((1400, 28, 28), np.uint8)}), {},
         "RESOURCE_EXHAUSTED", ""),  # over --max_request_bytes
    ]
    for args, kwargs, code, text in cases:
        err = _grpc_error(g.predict, *args, **kwargs)
        assert err.code == code and text in err.message, (args[0], kwargs, err)
    err = _grpc_error(g.model_status, "mnist_mlp", version=9)
    assert err.code == "NOT_FOUND" and "Could not find version 9" in err.message
    assert g.predict("mnist_mlp", {"images": x}).version == 2  # still serving
