"""Server-side batching (serving.batching.BatchScheduler) on plain numpy functions."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving import ServingError
from serving.batching import BatchingParameters, BatchScheduler

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def make():
    made = []

    def factory(**kw):
        s = BatchScheduler(BatchingParameters(**{"num_batch_threads": 1, **kw}))
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def test_concurrent_requests_share_batches_and_get_their_own_rows(make):
    sched = make(max_batch_size=16, batch_timeout_micros=20_000)
    sizes = []

    def fn(inputs):
        sizes.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 2, "n": np.arange(len(inputs["x"]))}

    def one(i):
        rows = 1 + i % 3
        x = np.full((rows, 2), i, np.int64)
        out = sched.submit("model", fn, {"x": x}).result(timeout=10)
        return i, rows, out

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(48)))
    for i, rows, out in results:
        assert out["y"].shape == (rows, 2) and (out["y"] == 2 * i).all()
        assert out["n"].shape == (rows,)
    assert sum(sizes) == sum(r for _, r, _ in results)
    assert max(sizes) <= 16
    assert len(sizes) < 48 and sched.batches_run == len(sizes)


def test_timeout_bounds_the_wait_of_a_lone_request(make):
    sched = make(max_batch_size=64, batch_timeout_micros=50_000)
    t = time.monotonic()
    out = sched.submit("m", lambda d: {"y": d["x"] + 1}, {"x": np.zeros((1, 3))}).result(5)
    waited = time.monotonic() - t
    assert (out["y"] == 1).all()
    assert 0.03 < waited < 2.0


def test_full_batch_does_not_wait_for_the_timeout(make):
    sched = make(max_batch_size=4, batch_timeout_micros=5_000_000)
    t = time.monotonic()
    out = sched.submit("m", lambda d: {"y": d["x"]}, {"x": np.zeros((4, 1))}).result(5)
    assert out["y"].shape == (4, 1) and time.monotonic() - t < 2.0


def test_different_inner_shapes_are_batched_separately(make):
    sched = make(max_batch_size=8, batch_timeout_micros=30_000)
    seen = []

    def fn(d):
        seen.append(d["x"].shape)
        return {"y": d["x"].sum(axis=1)}

    futures = [sched.submit("m", fn, {"x": np.ones((1, k))}) for k in (2, 3, 2, 3)]
    assert [f.result(5)["y"].tolist() for f in futures] == [[2.0], [3.0], [2.0], [3.0]]
    assert sorted(seen) == [(2, 2), (2, 3)]


def test_allowed_batch_sizes_pad_and_slice(make):
    sched = make(max_batch_size=8, batch_timeout_micros=0, allowed_batch_sizes=(4, 8))
    seen = []

    def fn(d):
        seen.append(len(d["x"]))
        return {"y": d["x"] * 10}

    out = sched.submit("m", fn, {"x": np.arange(3)[:, None]}).result(5)
    assert out["y"].ravel().tolist() == [0, 10, 20]
    assert seen == [4]


def test_errors(make):
    sched = make(max_batch_size=4, max_enqueued_batches=1, batch_timeout_micros=0)
    fn = lambda d: {"y": d["x"]}  # noqa: E731
    with pytest.raises(ServingError, match="larger than maximum input batch size 4"):
        sched.submit("m", fn, {"x": np.zeros((5, 1))})
    with pytest.raises(ServingError, match="at least one dimension"):
        sched.submit("m", fn, {"x": np.float32(1)})
    with pytest.raises(ServingError, match="equal 0th-dimension"):
        sched.submit("m", fn, {"x": np.zeros((2, 1)), "z": np.zeros((3, 1))})
    # a model whose output has no batch dimension cannot be split back
    bad = sched.submit("m", lambda d: {"y": np.float32(0)}, {"x": np.zeros((1, 1))})
    with pytest.raises(ServingError, match="0th dimension must equal the batch size"):
        bad.result(5)
    # an exception reaches every request of the batch
    boom = sched.submit("m", lambda d: 1 / 0, {"x": np.zeros((1, 1))})
    with pytest.raises(ZeroDivisionError):
        boom.result(5)


def test_full_queue_is_unavailable(make):
    sched = make(max_batch_size=2, max_enqueued_batches=2, batch_timeout_micros=0)
    gate, busy = threading.Event(), threading.Event()

    def slow(d):
        busy.set()
        gate.wait(10)
        return {"y": d["x"]}

    first = sched.submit("m", slow, {"x": np.zeros((2, 1))})
    assert busy.wait(10)  # the batch thread is now busy with it
    queued = [sched.submit("m", slow, {"x": np.zeros((2, 1))}) for _ in range(2)]
    with pytest.raises(ServingError) as e:
        sched.submit("m", slow, {"x": np.zeros((1, 1))})
    assert e.value.code == "UNAVAILABLE" and "queue" in e.value.message
    gate.set()
    for f in [first] + queued:
        assert f.result(10)["y"].shape == (2, 1)


def test_batching_adds_no_handler_threads():
    """Handler threads beyond 2 per core only make grpcio's polling thread wait for the
    interpreter lock before it stamps a call (a wait the latency histogram cannot see), with
    batching as without; a batch then holds at most that many requests."""
    import os

    from serving.server import ServerOptions

    auto = max(4, 2 * (os.cpu_count() or 1))
    assert ServerOptions(enable_batching=True).threads() == ServerOptions().threads() == \
        (auto, auto)
    assert ServerOptions(enable_batching=True, grpc_max_threads=64,
                         rest_api_num_threads=32).threads() == (32, 64)
