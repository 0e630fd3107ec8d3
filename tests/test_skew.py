"""Training-serving skew (serving/skew/): distances, statistics per kind, the command."""

from __future__ import annotations

import gzip
import json
import math
import tarfile

import numpy as np
import pytest

from serving import skew

SUBSET = 2000


def idx_images(path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


@pytest.fixture(scope="module")
def digits(mirror):
    """Random subsets: MNIST train (reference), MNIST test, Fashion-MNIST test."""
    rng = np.random.default_rng(0)
    with np.load(mirror / "mnist.npz") as z:
        train, test = z["x_train"], z["x_test"]
    fashion = idx_images(mirror / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
    pick = [a[rng.choice(len(a), SUBSET, replace=False)] for a in (train, test, fashion)]
    return dict(zip(("train", "test", "fashion"), pick))


@pytest.fixture(scope="module")
def reviews(mirror):
    """2,600 IMDB reviews (shuffled) and 300 chunks of Shakespeare of about the same length."""
    texts = []
    with tarfile.open(mirror / "aclImdb.tar.gz") as tar:
        for member in tar:
            if member.isfile() and ("/pos/" in member.name or "/neg/" in member.name):
                texts.append(tar.extractfile(member).read().decode())
                if len(texts) >= 6000:
                    break
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))[:2600]]
    words = (mirror / "tinyshakespeare.txt").read_text().split()
    plays = [" ".join(words[i:i + 230]) for i in range(0, 230 * 300, 230)]
    return texts[:2000], texts[2000:], plays


# -- distances --------------------------------------------------------------------------------


def test_js_distance_exact_values():
    assert skew.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert skew.js_distance([3, 1, 0], [3, 1, 0]) == 0.0
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4):
    # JSD = 1/2 [1/2 log2(2/3) + 1/2 log2(2)] + 1/2 log2(4/3)
    jsd = 0.5 * (0.5 * math.log2(2 / 3) + 0.5) + 0.5 * math.log2(4 / 3)
    assert skew.js_distance([1, 1], [1, 0]) == pytest.approx(math.sqrt(jsd))
    assert skew.js_distance([5, 5], [7, 0]) == pytest.approx(math.sqrt(jsd))  # counts scale
    assert skew.js_distance([1, 0], [1, 1]) == pytest.approx(math.sqrt(jsd))  # symmetric
    with pytest.raises(ValueError):
        skew.js_distance([1, 2], [1, 2, 3])


def test_psi_exact_values_and_smoothing():
    # (1/4 - 1/2) ln(1/2) + (3/4 - 1/2) ln(3/2) = ln(3) / 4
    assert skew.psi([1, 1], [1, 3]) == pytest.approx(math.log(3) / 4)
    assert skew.psi([2, 2], [2, 6]) == pytest.approx(math.log(3) / 4)
    assert skew.psi([4, 3, 2, 1], [4, 3, 2, 1]) == 0.0
    # Empty bins stay finite: floored at EPSILON.
    disjoint = skew.psi([1, 0], [0, 1])
    assert math.isfinite(disjoint) and disjoint == pytest.approx(
        2 * (1 - skew.EPSILON) / (1 + skew.EPSILON) * math.log(1 / skew.EPSILON))
    # A pseudo-count shrinks the empty-bin term for small samples.
    assert skew.psi([50, 50, 0], [5, 5, 1], pseudo_count=0.5) < skew.psi([50, 50, 0], [5, 5, 1])
    assert skew.psi([10, 0], [10, 0], pseudo_count=0.5) == pytest.approx(0.0)


def test_noise_floor():
    # Wilson-Hilferty against the chi-square 0.99 quantile with 9 degrees of freedom (21.666).
    assert skew._chi2_quantile(9, skew.NOISE_Z) == pytest.approx(21.666, rel=0.01)
    js_small, psi_small = skew.noise_floor(2000, 100, 10)
    js_big, psi_big = skew.noise_floor(2000, 2000, 10)
    assert js_big < js_small and psi_big < psi_small
    assert psi_big == pytest.approx(21.666 / 1000, rel=0.01)
    assert js_big == pytest.approx(math.sqrt(psi_big / (8 * math.log(2))))


def test_identical_distributions_give_zero():
    rng = np.random.default_rng(1)
    data = {"images": rng.integers(0, 256, (200, 8, 8), dtype=np.uint8),
            "state": rng.normal(size=(200, 3)).astype(np.float32),
            "reviews": [" ".join(rng.choice(["good", "bad", "film", "plot"], 20))
                        for _ in range(200)]}
    report = skew.compare(data, data)
    assert report.kinds == {"images": "image", "reviews": "text", "state": "vector"}
    assert len(report.features) == 3 + 3 + 3
    assert all(f.js < 1e-9 and abs(f.psi) < 1e-9 for f in report.features)
    assert not report.exceeded


def test_kind_inference_and_override():
    assert skew.infer_kind(np.zeros((4, 28, 28), np.uint8)) == "image"
    assert skew.infer_kind(np.zeros((4, 32, 32, 3), np.float32)) == "image"
    assert skew.infer_kind(np.zeros((4, 5), np.float32)) == "vector"
    assert skew.infer_kind(np.zeros(4, np.int32)) == "vector"
    assert skew.infer_kind(["a review"]) == "text"
    assert skew.infer_kind(np.array([b"x", b"y"], dtype=object)) == "text"
    data = {"x": np.arange(40, dtype=np.float32).reshape(10, 2, 2)}
    report = skew.compare(data, {"x": list(data["x"])}, kinds={"x": "vector"})
    assert [f.feature for f in report.features] == ["x[0]", "x[1]", "x[2]", "x[3]"]
    with pytest.raises(ValueError, match="unknown kind"):
        skew.compare(data, data, kinds={"x": "audio"})


def test_vector_shift_is_flagged_on_its_dimension():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(3000, 3))
    logged = rng.normal(size=(500, 3))
    logged[:, 1] += 1.0
    report = skew.compare({"obs": ref}, {"obs": list(logged)})
    assert [f.feature for f in report.features if f.exceeded] == ["obs[1]"]


def test_mnist_test_images_are_not_flagged(digits):
    report = skew.compare({"images": digits["train"]}, {"images": list(digits["test"])})
    assert [f.feature for f in report.features] == [
        "images.pixels", "images.mean_intensity", "images.ink_fraction"]
    assert not report.exceeded, report.table()
    assert max(f.js for f in report.features) < 0.11
    assert max(f.psi for f in report.features) < 0.1


def test_fashion_images_are_flagged(digits):
    report = skew.compare({"images": digits["train"]}, {"images": list(digits["fashion"])})
    assert all(f.exceeded for f in report.features), report.table()
    assert min(f.js for f in report.features) > 0.3
    assert report.exceeded


def test_preprocessing_mismatch_is_flagged(digits):
    """Clients sending [0, 1] floats to a model trained on 0..255 bytes."""
    scaled = (digits["test"][:300] / 255.0).astype(np.float32)
    report = skew.compare({"images": digits["train"]}, {"images": list(scaled)})
    assert report.exceeded and report.features[0].js > 0.3


def test_text_in_domain_not_flagged_other_vocabulary_flagged(reviews):
    reference, same, plays = reviews
    ok = skew.compare({"reviews": reference}, {"reviews": same})
    assert ok.kinds == {"reviews": "text"}
    assert not ok.exceeded, ok.table()
    logged = [np.array(p.encode(), dtype=object) for p in plays]  # as decoded from the log
    shifted = skew.compare({"reviews": reference}, {"reviews": logged})
    flags = {f.feature.split(".")[-1]: f.exceeded for f in shifted.features}
    assert flags["oov_rate"] and flags["tokens"], shifted.table()
    oov = next(f for f in shifted.features if f.feature == "reviews.oov_rate")
    assert oov.summary["logged"] > 3 * oov.summary["reference"]


def test_report_json_and_plot_are_written_atomically(tmp_path, digits):
    report = skew.compare({"images": digits["train"]}, {"images": list(digits["fashion"][:200])},
                          model="mnist_mlp")
    report.to_json(tmp_path / "r" / "skew.json")
    report.plot(tmp_path / "r" / "skew.png")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["skew.json", "skew.png"]
    data = json.loads((tmp_path / "r" / "skew.json").read_text())
    assert data["model"] == "mnist_mlp" and data["exceeded"] is True
    assert data["thresholds"] == {"js": skew.DEFAULT_THRESHOLD_JS,
                                  "psi": skew.DEFAULT_THRESHOLD_PSI}
    first = data["features"][0]
    assert len(first["bins"]) == len(first["reference"]) == len(first["logged"]) == 32
    assert sum(first["reference"]) == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "r" / "skew.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- end to end: request log -> ksuite skew ---------------------------------------------------


def write_log(folder, model_name, images, batch=50):
    """PredictRequests of these images, logged as the server logs them."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving.request_log import RequestLogger

    with RequestLogger(str(folder / model_name), 1.0, seed=0) as logger:
        for start in range(0, len(images), batch):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images[start:start + batch]))
            response = predict_pb2.PredictResponse()
            response.outputs["classes"].CopyFrom(tf.make_tensor_proto(np.zeros(batch, np.int64)))
            assert logger.maybe_log(model_name, 1, "serving_default", request, response)
    assert logger.written == math.ceil(len(images) / batch)


def test_command_end_to_end(tmp_path, digits, capsys):
    write_log(tmp_path / "good", "mnist_mlp", digits["test"][:500])
    write_log(tmp_path / "good", "other_model", digits["fashion"][:100])  # ignored
    write_log(tmp_path / "bad", "mnist_mlp", digits["fashion"][:500])
    calls = []

    def loader(model_name):
        calls.append(model_name)
        if model_name != "mnist_mlp":
            raise KeyError(f"no training data for {model_name}")
        return {"images": digits["train"]}

    logged = skew.logged_inputs(tmp_path / "good", "mnist_mlp")
    assert list(logged) == ["images"] and len(logged["images"]) == 500
    np.testing.assert_array_equal(logged["images"][0], digits["test"][0])
    assert len(skew.logged_inputs(tmp_path / "good", "mnist_mlp", limit=120)["images"]) == 120

    out = tmp_path / "out-good"
    assert skew.main(["mnist_mlp", "--log", str(tmp_path / "good"), "--out", str(out)],
                     loader) == 0
    printed = capsys.readouterr().out
    assert "images.mean_intensity" in printed and "no skew" in printed
    report = json.loads((out / "skew.json").read_text())
    assert report["exceeded"] is False and report["features"][0]["n_logged"] == 500
    assert (out / "skew.png").stat().st_size > 0

    out = tmp_path / "out-bad"
    assert skew.main(["mnist_mlp", "--log", str(tmp_path / "bad"), "--out", str(out),
                      "--limit", "200"], loader) == 1
    printed = capsys.readouterr().out
    assert "SKEW" in printed and "images.pixels" in printed
    report = json.loads((out / "skew.json").read_text())
    assert report["exceeded"] is True and report["features"][0]["n_logged"] == 200
    assert calls == ["mnist_mlp"] * 2
    # Without a loader (python -m serving.skew) the training inputs come from an .npz; looser
    # thresholds on both distances let the same log pass.
    np.savez(tmp_path / "train.npz", images=digits["train"])
    assert skew.main(["mnist_mlp", "--log", str(tmp_path / "bad"), "--out", str(out),
                      "--reference", str(tmp_path / "train.npz"), "--kind", "images=image",
                      "--threshold-js", "0.99", "--threshold-psi", "100"]) == 0


class LoaderError(Exception):
    exit_code = 2  # like shared.errors.UserError


@pytest.mark.parametrize("case", ["missing", "empty", "other_model", "no_training_data",
                                  "no_common_input", "loader_error", "bad_kind"])
def test_command_errors_are_one_line(tmp_path, digits, capsys, case):
    log = tmp_path / "log"
    if case != "missing":
        log.mkdir()
    if case in ("other_model", "no_training_data", "no_common_input", "loader_error",
                "bad_kind"):
        write_log(log, "other_model" if case == "other_model" else "mnist_mlp",
                  digits["test"][:50])

    def loader(model_name):
        if case == "no_training_data":
            raise KeyError(f"no training data for {model_name}")
        if case == "loader_error":
            raise LoaderError(f"{model_name}: data file missing, set KSUITE_DATA_DIR")
        return {"pixels": digits["train"]} if case == "no_common_input" else \
            {"images": digits["train"]}

    extra = ["--kind", "images=audio"] if case == "bad_kind" else []
    assert skew.main(["mnist_mlp", "--log", str(log), "--out", str(tmp_path / "o"), *extra],
                     loader) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert not (tmp_path / "o").exists()
    if case == "other_model":
        assert "no request-log records of model 'mnist_mlp'" in lines[0]


def test_report_files_are_written_and_named(tmp_path):
    """to_json and plot return the paths they wrote (main prints them)."""
    import numpy as np

    from serving import skew

    rng = np.random.default_rng(0)
    report = skew.compare({"x": rng.normal(size=(500, 3))}, {"x": rng.normal(size=(100, 3))})
    assert report.to_json(tmp_path / "skew.json") == tmp_path / "skew.json"
    assert report.plot(tmp_path / "skew.png") == tmp_path / "skew.png"
    assert (tmp_path / "skew.json").stat().st_size > 0 and (tmp_path / "skew.png").exists()
