"""The serving load benchmark's own arithmetic and process set-up (the load run itself is a
benchmark: ``python -m benchmarks.serving_load``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import serving_load

INF = float("inf")


def test_histogram_quantile_interpolates_within_a_bucket_like_prometheus():
    # Microsecond buckets; the first scrape is subtracted: 100 observations between the scrapes,
    # 50 <= 1 ms, 40 in (1, 2] ms, 10 in (2, 5] ms.
    before = [(1000.0, 5.0), (2000.0, 5.0), (5000.0, 5.0), (INF, 5.0)]
    after = [(1000.0, 55.0), (2000.0, 95.0), (5000.0, 105.0), (INF, 105.0)]
    assert serving_load.histogram_quantile(0.5, before, after) == pytest.approx(1.0)
    assert serving_load.histogram_quantile(0.25, before, after) == pytest.approx(0.5)
    assert serving_load.histogram_quantile(0.7, before, after) == pytest.approx(1.5)
    assert serving_load.histogram_quantile(0.99, before, after) == pytest.approx(4.7)
    # no observations between the scrapes: no quantile
    assert serving_load.histogram_quantile(0.5, after, after) is None
    # a rank that falls in the +Inf bucket is reported as the last finite bound
    assert serving_load.histogram_quantile(0.99, [], [(1000.0, 1.0), (INF, 10.0)]) == 1.0


def test_raise_priority_reports_the_steps_it_got(monkeypatch):
    nice = {"value": 0}

    def fake_nice(inc):
        if inc < 0 and nice.get("refuse"):
            raise PermissionError("not permitted")
        nice["value"] += inc
        return nice["value"]

    monkeypatch.setattr(serving_load.os, "nice", fake_nice)
    assert serving_load.raise_priority(0) == 0 and nice["value"] == 0
    assert serving_load.raise_priority(5) == 5 and nice["value"] == -5
    nice["refuse"] = True  # without the privilege the clients run at the server's priority
    assert serving_load.raise_priority(5) == 0 and nice["value"] == -5


def test_raise_priority_in_a_real_process():
    """In a child process (so this one keeps its priority): either the nice value dropped by
    the steps reported, or nothing changed and 0 is reported."""
    code = ("import os; from benchmarks.serving_load import raise_priority; "
            "b = os.nice(0); got = raise_priority(3); print(got, b - os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    got, dropped = int(out[-2]), int(out[-1])
    assert got == dropped and got in (0, 3)


def test_the_client_priority_flag_defaults_to_five_steps():
    args = serving_load.build_parser().parse_args([])
    assert args.client_priority == 5
    assert serving_load.build_parser().parse_args(["--client-priority", "0"]).client_priority == 0
