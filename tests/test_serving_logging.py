"""Request logging (serving/request_log.py): sampling, PredictionLog records, rotation, drops."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2, regression_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.request_log import RequestLogger, log_files, read_prediction_logs


def predict_pair(images: np.ndarray):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist_mlp"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    response = predict_pb2.PredictResponse()
    response.outputs["classes"].CopyFrom(tf.make_tensor_proto(np.arange(len(images))))
    return request, response


def model_config(text: str):
    config = model_server_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


def test_from_logging_config(tmp_path):
    config = model_config(f"""
        name: "mnist_mlp" base_path: "/models/mnist_mlp" model_platform: "tensorflow"
        logging_config {{
          log_collector_config {{ type: "tfrecord" filename_prefix: "{tmp_path}/log" }}
          sampling_config {{ sampling_rate: 0.25 }}
        }}""")
    logger = RequestLogger.from_logging_config(config.logging_config)
    try:
        assert logger.sampling_rate == 0.25
        assert logger.filename_prefix == f"{tmp_path}/log"
        assert logger.log_collector_type == "tfrecord"
    finally:
        logger.close()
    off = model_config(f"""logging_config {{
        log_collector_config {{ filename_prefix: "{tmp_path}/log" }}
        sampling_config {{ sampling_rate: 0 }} }}""")
    assert RequestLogger.from_logging_config(off.logging_config) is None
    assert RequestLogger.from_logging_config(model_config("name: 'm'").logging_config) is None
    assert RequestLogger.from_logging_config(None) is None


@pytest.mark.parametrize("rate", [0.0, 1.0, 0.5])
def test_sampling_rate(tmp_path, rate):
    request, response = predict_pair(np.zeros((1, 2, 2), np.uint8))
    n = 2000
    counts = []
    for _ in range(2):  # the same seed samples the same requests
        logger = RequestLogger(str(tmp_path / f"log{len(counts)}"), rate, queue_size=n, seed=7)
        queued = sum(logger.maybe_log("m", 1, "serving_default", request, response)
                     for _ in range(n))
        logger.close()
        assert logger.sampled == queued == logger.written
        assert logger.dropped == 0
        counts.append(logger.sampled)
    assert counts[0] == counts[1]
    if rate == 0.0:
        assert counts[0] == 0
    elif rate == 1.0:
        assert counts[0] == n
    else:
        assert 0.45 * n < counts[0] < 0.55 * n
    assert sum(1 for _ in read_prediction_logs(tmp_path)) == sum(counts)


def test_records_parse_back(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    request, response = predict_pair(images)
    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[1.5]))}))
    classify = classification_pb2.ClassificationRequest()
    classify.input.example_list.examples.add().CopyFrom(example)
    regress = regression_pb2.RegressionRequest()
    regress.input.example_list.examples.add().CopyFrom(example)
    multi = inference_pb2.MultiInferenceRequest()
    multi.input.example_list.examples.add().CopyFrom(example)
    before = int(time.time())
    with RequestLogger(str(tmp_path / "logs" / "mnist"), 1.0) as logger:
        assert logger.maybe_log("mnist_mlp", 3, "serving_default", request, response)
        logger.maybe_log("m2", 1, "classify", classify,
                         classification_pb2.ClassificationResponse())
        logger.maybe_log("m2", 1, "regress", regress, regression_pb2.RegressionResponse())
        logger.maybe_log("m2", None, "", multi, inference_pb2.MultiInferenceResponse())
    records = list(read_prediction_logs(tmp_path / "logs"))
    assert [r.WhichOneof("log_type") for r in records] == [
        "predict_log", "classify_log", "regress_log", "multi_inference_log"]
    first = records[0]
    spec = first.log_metadata.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("mnist_mlp", 3,
                                                                    "serving_default")
    assert first.log_metadata.sampling_config.sampling_rate == 1.0
    assert before <= first.log_metadata.timestamp_secs <= time.time()
    np.testing.assert_array_equal(tf.make_ndarray(first.predict_log.request.inputs["images"]),
                                  images)
    assert list(tf.make_ndarray(first.predict_log.response.outputs["classes"])) == [0, 1, 2]
    assert not records[3].log_metadata.model_spec.HasField("version")
    assert records[1].classify_log.request.input.example_list.examples[0] == example
    # The files read back with plain tf.data too, and are named after the prefix.
    (path,) = log_files(tmp_path / "logs")
    assert os.path.basename(path).startswith("mnist-") and path.endswith(".tfrecord")
    assert sum(1 for _ in tf.data.TFRecordDataset(path)) == 4
    by_prefix = read_prediction_logs(tmp_path / "logs" / "mnist")
    assert next(by_prefix).log_metadata.model_spec.name == "mnist_mlp"


def test_rotation_by_size_and_temporary_names(tmp_path):
    request, response = predict_pair(np.ones((4, 28, 28), np.uint8))  # ~3.2 KB per record
    prefix = tmp_path / "log"
    logger = RequestLogger(str(prefix), 1.0, max_file_bytes=10_000)
    logger.maybe_log("m", 1, "serving_default", request, response)
    assert logger.flush()
    # One record in an unfinished file: hidden temporary name, invisible to readers.
    names = os.listdir(tmp_path)
    assert len(names) == 1 and names[0].startswith(".") and names[0].endswith(".tmp")
    assert log_files(tmp_path) == []
    for _ in range(9):
        logger.maybe_log("m", 1, "serving_default", request, response)
    logger.close()
    files = log_files(tmp_path)
    assert len(files) == 3  # records 1-4, 5-8, 9-10
    sizes = [os.path.getsize(f) for f in files]
    assert all(s >= 10_000 for s in sizes[:-1]) and sizes[-1] < 10_000
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert logger.written == 10 and len(list(read_prediction_logs(tmp_path))) == 10
    assert log_files(prefix) == files


def test_unwritable_folder_drops_without_raising_or_blocking(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the log folder should be")
    request, response = predict_pair(np.zeros((1, 28, 28), np.uint8))
    logger = RequestLogger(str(blocker / "sub" / "log"), 1.0)
    start = time.perf_counter()
    for _ in range(200):
        logger.maybe_log("m", 1, "serving_default", request, response)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed
    logger.close()
    assert logger.sampled == 200 and logger.written == 0
    assert logger.dropped == 200 and logger.dropped_by_reason == {"write_error": 200}


def test_full_queue_drops_without_blocking(tmp_path):
    request, response = predict_pair(np.zeros((1, 28, 28), np.uint8))
    logger = RequestLogger(str(tmp_path / "log"), 1.0, queue_size=4)
    gate = threading.Event()
    real_write = logger._write
    logger._write = lambda item: (gate.wait(10), real_write(item))  # a disk that hangs
    start = time.perf_counter()
    queued = sum(logger.maybe_log("m", 1, "serving_default", request, response)
                 for _ in range(100))
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed
    assert queued <= 5  # the queue, plus the one record the writer holds
    assert logger.dropped_by_reason["queue_full"] == 100 - queued
    gate.set()
    logger.close()
    assert logger.written == queued and logger.written + logger.dropped == logger.sampled == 100
    assert len(list(read_prediction_logs(tmp_path))) == queued


def test_close_flushes_and_later_calls_are_counted(tmp_path):
    request, response = predict_pair(np.zeros((2, 28, 28), np.uint8))
    logger = RequestLogger(str(tmp_path / "log"), 1.0)
    for _ in range(50):
        logger.maybe_log("m", 7, "serving_default", request, response)
    logger.close()
    assert logger.written == 50 and not logger._thread.is_alive()
    assert len(list(read_prediction_logs(tmp_path))) == 50
    assert not logger.maybe_log("m", 7, "serving_default", request, response)
    assert logger.dropped_by_reason == {"closed": 1}
    logger.close()  # idempotent


def test_bad_protos_are_counted_not_raised(tmp_path):
    request, _ = predict_pair(np.zeros((1, 2), np.float32))
    with RequestLogger(str(tmp_path / "log"), 1.0) as logger:
        assert not logger.maybe_log("m", 1, "s", tf.train.Example(), None)
        # A response of the wrong type fails while the record is built, in the writer thread.
        assert logger.maybe_log("m", 1, "s", request, classification_pb2.ClassificationResponse())
        assert logger.maybe_log("m", 1, "s", request, None)
    assert logger.dropped_by_reason == {"unsupported_request": 1, "encode_error": 1}
    assert logger.written == 1
