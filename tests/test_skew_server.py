"""Training-serving skew end to end (issue 26): a small MNIST model trained on real MNIST, served
by the local server with request logging (``logging_config``, sampling rate 1.0), queried over
REST and gRPC; ``ksuite skew`` on the log flags Fashion-MNIST inputs and passes MNIST test
images."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow_serving")

from serving import skew
from serving.client import GrpcClient, RestClient
from serving.server import ModelServer, ServerOptions
from shared.export import export_keras

pytestmark = pytest.mark.timeout(300)

N = 300  # images per protocol


@pytest.fixture(scope="module")
def data(mirror):
    with np.load(mirror / "mnist.npz") as z:
        mnist = {k: z[k] for k in ("x_train", "y_train", "x_test")}
    with gzip.open(mirror / "fashion-mnist" / "t10k-images-idx3-ubyte.gz") as f:
        mnist["fashion"] = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return mnist


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data):
    """A 784-32-10 MLP trained for a few steps on MNIST, exported as the app's contract:
    ``serving_default`` takes ``images`` uint8 [None,28,28]."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28))
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data["x_train"][:2048] / 255.0, data["y_train"][:2048], batch_size=128,
              epochs=1, verbose=0)

    def serve(images):
        p = model(tf.cast(images, tf.float32) / 255.0)
        return {"probabilities": p, "classes": tf.argmax(p, axis=-1)}

    root = tmp_path_factory.mktemp("saved_models")
    sig = [tf.TensorSpec([None, 28, 28], tf.uint8, name="images")]
    export_keras("mnist_mlp", {"serving_default": (serve, sig)}, track=[model],
                 export_dir=root)
    return root / "mnist_mlp"


def serve_and_log(model_dir, log_dir, images) -> None:
    """Serve the model with request logging into ``log_dir``; send half of ``images`` over REST
    and half over gRPC, 50 per request."""
    cfg = log_dir.parent / f"{log_dir.name}.config"
    cfg.write_text(
        f'model_config_list {{ config {{ name: "mnist_mlp" base_path: "{model_dir}" '
        'model_platform: "tensorflow" logging_config { log_collector_config { '
        f'type: "tfrecord" filename_prefix: "{log_dir}/mnist_mlp/requests" }} '
        "sampling_config { sampling_rate: 1.0 } } } }")
    server = ModelServer(ServerOptions(port=0, rest_api_port=0, model_config_file=str(cfg),
                                       file_system_poll_wait_seconds=0)).start()
    try:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=30, retries=0)
        with GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=30, retries=0) as g:
            half = len(images) // 2
            for start in range(0, half, 50):
                answer = rest.predict("mnist_mlp", instances=images[start:start + 50])
                assert len(answer["predictions"]) == len(images[start:start + 50])
            for start in range(half, len(images), 50):
                out = g.predict("mnist_mlp", {"images": images[start:start + 50]})
                assert out["classes"].shape == (len(images[start:start + 50]),)
        rest.close()
    finally:
        server.stop()  # closes the request loggers: every record is in a finished file


def test_fashion_images_through_the_server_are_flagged_mnist_test_images_not(
        tmp_path, model_dir, data, capsys):
    rng = np.random.default_rng(0)
    train = data["x_train"][rng.choice(len(data["x_train"]), 3000, replace=False)]
    calls = []

    def loader(model_name):
        calls.append(model_name)
        return {"images": train}

    shifted = data["fashion"][rng.choice(len(data["fashion"]), 2 * N, replace=False)]
    serve_and_log(model_dir, tmp_path / "log_fashion", shifted)
    logged = skew.logged_inputs(tmp_path / "log_fashion", "mnist_mlp")
    assert len(logged["images"]) == 2 * N  # REST and gRPC requests, all sampled
    out = tmp_path / "report_fashion"
    assert skew.main(["mnist_mlp", "--log", str(tmp_path / "log_fashion"), "--out", str(out)],
                     loader) == 1
    assert "SKEW" in capsys.readouterr().out
    report = json.loads((out / "skew.json").read_text())
    flagged = {f["feature"] for f in report["features"] if f["exceeded"]}
    assert report["exceeded"] is True and "images.pixels" in flagged, flagged

    same = data["x_test"][rng.choice(len(data["x_test"]), 2 * N, replace=False)]
    serve_and_log(model_dir, tmp_path / "log_mnist", same)
    out = tmp_path / "report_mnist"
    assert skew.main(["mnist_mlp", "--log", str(tmp_path / "log_mnist"), "--out", str(out)],
                     loader) == 0
    assert "no skew" in capsys.readouterr().out
    report = json.loads((out / "skew.json").read_text())
    assert report["exceeded"] is False
    assert {f["n_logged"] for f in report["features"]} == {2 * N}
    assert calls == ["mnist_mlp", "mnist_mlp"]
