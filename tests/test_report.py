"""benchmarks.report: the Markdown page built from synthetic benchmark records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import report
from tests.helpers import run_module

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # the page only links images; any bytes will do


def _write_jsonl(path: Path, *records: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _runner(app: str, budget: str, value: float, run_dir: Path | None, **extra) -> dict:
    metrics = {"accuracy": value, "loss": 0.1}
    record = {"app": app, "budget": budget, "metric": "accuracy", "value": value,
              "metrics": metrics, "epochs": 12, "wall_seconds": 80.5, "examples_per_sec": 9000.0,
              "peak_rss_mb": 900.4, "git_commit": "abc1234", "time": "2026-11-22T16:35:41+0000",
              "cpu": "Test CPU", "cores": 2,
              "command": f"python -m apps.{app}.train --run-dir {run_dir} --no-export"}
    if run_dir is not None:
        record["run_dir"] = str(run_dir)
    record.update(extra)
    return record


@pytest.fixture()
def bench(tmp_path):
    """A results folder, a finished run directory with a learning curve, and an output path."""
    run_dir = tmp_path / "runs" / "mnist_mlp-default-0"
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "learning_curves.png").write_bytes(PNG)
    (run_dir / "samples" / "epoch_002.png").write_bytes(PNG)
    metrics = {"metrics": {"accuracy": 0.9855, "loss": 0.1}}  # what _runner records
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    results = tmp_path / "results"
    _write_jsonl(results / "mnist_mlp.jsonl", _runner("mnist_mlp", "default", 0.9855, run_dir))
    # A smoke run whose run directory is gone, and one with no run directory at all.
    _write_jsonl(results / "cifar_cnn.jsonl",
                 _runner("cifar_cnn", "tiny", 0.16, tmp_path / "runs" / "gone"),
                 _runner("cifar_cnn", "tiny", 0.17, None, command=None))
    _write_jsonl(results / "dqn_vs_sb3.jsonl",
                 {"benchmark": "dqn_vs_sb3", "env": "CartPole-v1", "steps": 10000,
                  "ours": {"env_steps_per_sec": 730.1}, "sb3": {"env_steps_per_sec": 298.5},
                  "ratio_ours_over_sb3": 2.446, "time": "2026-11-22T17:26:21+0000"})
    _write_jsonl(results / "word2vec_vs_gensim.jsonl",  # keys missing on purpose
                 {"app": "word2vec", "benchmark": "word2vec_vs_gensim", "corpus": "gutenberg",
                  "tokens": 2500000, "word2vec": {"analogy_accuracy": 0.285},
                  "gensim": {"analogy_accuracy": 0.27},
                  "targets": {"analogy_within_2_points": True},
                  "time": "2026-11-22T18:23:40+0000"})
    _write_jsonl(results / "mystery.jsonl",
                 {"what": "a benchmark the report does not know", "n": 3})
    return results, tmp_path / "page" / "REPORT.md", run_dir


def _section(text: str, name: str) -> str:
    return text.split(f"\n## {name}\n")[1].split("\n## ")[0]


def _row(text: str, app: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| [{app}](#{app}) |"))


def test_report_summary_side_tables_and_images(bench):
    results, out, run_dir = bench
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()

    mnist = _row(text, "mnist_mlp")
    # One seed at 0.9855: below the dropout recipe's anchor, and not a mean of 3 seeds.
    assert "**0.9855** accuracy (default)" in mnist and "❌" in mnist and "12 epochs" in mnist
    assert "9,000 examples/s" in mnist and "900 MB" in mnist
    assert ">= 0.989 mean of 3 seeds" in mnist and "(was: 0.984 test accuracy" in mnist
    cifar = _row(text, "cifar_cnn")
    assert "**0.17**" in cifar and "❌ (tiny budget only)" in cifar  # a smoke run is not a pass
    assert "not measured" in _row(text, "dcgan")
    assert "28.5%" in _row(text, "word2vec") and "✅" in _row(text, "word2vec")

    # Side benchmarks are tables with chosen columns, under their app.
    dqn_section = _section(text, "dqn")
    assert "| ours steps/s | SB3 steps/s | ours / SB3 |" in dqn_section
    assert "| 730.1 | 298.5 | 2.45x |" in dqn_section
    assert "| 28.5% / 27.0% | +1.5 points |" in _section(text, "word2vec")
    assert "## Other records" in text and "a benchmark the report does not know" in text

    # The run's images are copied next to the page under stable names and linked relatively.
    img = out.parent / "report_img"
    assert (img / "mnist_mlp_default_learning_curves.png").read_bytes() == PNG
    assert (img / "mnist_mlp_default_samples_last.png").is_file()
    assert "](report_img/mnist_mlp_default_learning_curves.png)" in text

    # Run directories are not kept: the copies made before stay linked.
    shutil.rmtree(run_dir)
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert "](report_img/mnist_mlp_default_learning_curves.png)" in out.read_text()
    assert (img / "mnist_mlp_default_learning_curves.png").is_file()


def test_report_skips_a_reused_run_dir(bench):
    """A run directory now holding another (or an unfinished) run is not shown for the record."""
    results, out, run_dir = bench
    (run_dir / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    report.main(["--results", str(results), "--out", str(out)])
    assert not (out.parent / "report_img" / "mnist_mlp_default_learning_curves.png").exists()
    assert "report_img/mnist_mlp_default" not in out.read_text()


def test_a_probe_with_extra_flags_keeps_the_budgets_own_pictures(bench, tmp_path):
    """A later record of the same budget trained with extra flags is listed with them, but the
    budget's images stay those of its plain run."""
    results, out, run_dir = bench
    probe_dir = tmp_path / "runs" / "probe"
    probe_dir.mkdir()
    probe_png = PNG + b"probe"
    (probe_dir / "learning_curves.png").write_bytes(probe_png)
    (probe_dir / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 0.97,
                                                                    "loss": 0.1}}))
    probe = _runner("mnist_mlp", "default", 0.97, probe_dir, time="2026-11-23T10:00:00+0000",
                    command=f"python -m apps.mnist_mlp.train --batch-size 64 --run-dir "
                            f"{probe_dir} --no-export")
    with open(results / "mnist_mlp.jsonl", "a") as f:
        f.write(json.dumps(probe) + "\n")
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert "default + `--batch-size 64`" in _section(out.read_text(), "mnist_mlp")
    img = out.parent / "report_img" / "mnist_mlp_default_learning_curves.png"
    assert img.read_bytes() == PNG


def test_report_cli_help_and_empty_results(tmp_path):
    assert "--results" in run_module("benchmarks.report", "--help", timeout=60).stdout
    proc = run_module("benchmarks.report", "--results", tmp_path, "--out", tmp_path / "r.md",
                      check=False, timeout=60)
    assert proc.returncode == 2 and "no benchmark records" in proc.stderr


def test_a_budget_can_carry_its_own_anchor():
    """DQN's Pong budget is measured against the random policy (-20.7), not CartPole's 475."""
    spec = {"anchor": {"value": 475, "target": ">= 475"},
            "budget_anchors": {"pong_short": {"value": -20.7, "target": "above -20.7"}}}
    rows = [{"budget": "default", "metric": "eval_return", "value": 500.0, "metrics": {}},
            {"budget": "pong_short", "metric": "eval_return", "value": -9.9, "metrics": {}}]
    assert report.budget_anchor(spec, "pong_short")["value"] == -20.7
    assert report.budget_anchor(spec, "default")["value"] == 475
    lines = report.runs_table("dqn", rows, spec)
    row_of = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert "| -20.7 |" in next(v for k, v in row_of.items() if "pong" in k)
    assert "| 475 |" in next(v for k, v in row_of.items() if k.startswith("default"))


def test_an_anchor_with_a_key_is_compared_with_that_metric():
    """Shakespeare's nanoGPT anchor is on nanoGPT's split: the summary and the runs table show
    metrics.nanogpt_val_loss beside the headline, and the target is checked against it."""
    spec = {"higher_is_better": False,
            "anchor": {"value": 1.4697, "key": "nanogpt_val_loss",
                       "key_label": "on nanoGPT's split", "target": "<= 1.40",
                       "previous": {"value": 1.4786, "source": "Géron"}}}
    rows = [{"budget": "default", "metric": "val_loss", "value": 1.3,
             "metrics": {"nanogpt_val_loss": 1.5116}}]
    row = report.summary_row("shakespeare_lstm", spec, rows, {})
    assert "**1.3** val_loss (1.5116 on nanoGPT's split)" in row[3]
    assert "was: 1.4786" in row[2]
    assert row[4] == report.verdict(False, "default")  # 1.5116 > 1.40, though 1.3 <= 1.40
    rows[0]["metrics"]["nanogpt_val_loss"] = 1.39
    met = report.summary_row("shakespeare_lstm", spec, rows, {})[4]
    assert met == report.verdict(True, "default")
    table = report.runs_table("shakespeare_lstm", rows, spec)
    (line,) = [x for x in table if x.startswith("| default")]
    assert "**1.3** (1.39 on nanoGPT's split)" in line and "| 1.4697 |" in line
    old = [{**rows[0], "metrics": {}}]  # a record from before the metric was logged
    assert "(– on nanoGPT's split)" in report.summary_row("shakespeare_lstm", spec, old, {})[3]


def test_an_evaluation_curve_is_plotted_beside_the_published_points(tmp_path):
    """A record's metrics.eval_curve and its budget anchor's published points make one PNG,
    named so that the page links it with the budget's other pictures; no curve, no plot."""
    anchor = {"value": 18.0, "metric": "Pong return",
              "curve": {"CleanRL": {"steps": [3_000_000, 10_000_000], "returns": [18, 20.25]}}}
    record = {"git_commit": "abc1234", "time": "2026-12-04T10:00:00+0000",
              "metrics": {"eval_curve": {"steps": [50_000, 100_000], "returns": [-20.0, -3.5]}}}
    path = report.reference_plot("dqn", "pong", record, anchor, tmp_path)
    assert path == tmp_path / "dqn_pong_vs_published.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    assert report.reference_plot("dqn", "small", {"metrics": {}}, anchor, tmp_path) is None
    assert report.reference_plot("dqn", "pong", record, {"value": 18.0}, tmp_path / "x") is None
    lines = report.image_lines([path], tmp_path, "dqn_pong")
    assert lines[0] == ("![dqn pong: evaluation return beside the published runs' points]"
                        "(dqn_pong_vs_published.png)")
    probe = {**record, "metrics": {"eval_curve": {"steps": [50_000], "returns": [-19.0]}}}
    again = report.reference_plot("dqn", "pong", record, anchor, tmp_path / "p",
                                  probes=[("ours + --double", probe)])
    assert again.read_bytes().startswith(b"\x89PNG")


def test_probe_records_keep_the_latest_run_of_each_flag_set():
    """The curves drawn beside a budget's plain run: one per set of extra flags, the latest."""
    spec = {"budgets": {"pong": ["--env", "ALE/Pong-v5"]}}
    cmd = "python -m apps.dqn.train --env ALE/Pong-v5"
    rows = [{"budget": "pong", "command": c, "value": v} for c, v in [
        (cmd, 11.4), (cmd + " --double", 1.0), (cmd + " --n-step 3", 2.0),
        (cmd + " --double", 3.0)]]
    assert [r["value"] for r in report.probe_records(rows, spec)] == [3.0, 2.0]


def test_a_resumed_run_reports_the_time_of_all_its_epochs(tmp_path):
    """benchmarks.run sums history.csv's epoch_seconds (every session of a resumed run) and the
    report shows that sum instead of the last invocation's wall time."""
    from benchmarks.run import epoch_seconds_total

    (tmp_path / "history.csv").write_text("epoch,accuracy,epoch_seconds\n"
                                          "0,0.5,100.0\n1,0.6,110.25\n2,0.7,90.0\n")
    assert epoch_seconds_total(tmp_path) == 300.2
    assert epoch_seconds_total(tmp_path / "missing") is None
    resumed = _runner("cifar_cnn", "default", 0.86, None, resumed=True, epoch_seconds_total=300.2)
    assert report.wall_seconds(resumed) == 300.2
    fresh = _runner("cifar_cnn", "default", 0.86, None, resumed=False, epoch_seconds_total=300.2)
    assert report.wall_seconds(fresh) == 80.5


def test_the_wall_time_of_every_sitting_is_kept_and_totalled(tmp_path):
    """Each invocation of a run directory is a sitting in its sittings.json; the entry is
    rewritten on every beat, so a sitting killed before its end still counts to its last beat,
    and the record's wall time is the total of all sittings."""
    import json
    import time

    from benchmarks.run import Sittings

    with Sittings(tmp_path, beat=0.05) as first:
        time.sleep(0.3)
        mid = json.loads((tmp_path / "sittings.json").read_text())
        assert mid[-1]["ended"] is False and mid[-1]["seconds"] >= 0.1  # beats while it runs
    assert first.entries[-1]["ended"] is True and 0.3 <= first.entries[-1]["seconds"] < 5
    # A killed sitting: its last beat is all the file keeps of it.
    killed = [*first.entries, {"started": "x", "seconds": 40.0, "ended": False}]
    (tmp_path / "sittings.json").write_text(json.dumps(killed))
    with Sittings(tmp_path, beat=10) as third:
        pass
    on_disk = json.loads((tmp_path / "sittings.json").read_text())
    assert len(on_disk) == 3 and on_disk[1]["seconds"] == 40.0 and on_disk[2]["ended"] is True
    assert third.total == round(sum(e["seconds"] for e in on_disk), 1) >= 40.3
    record = _runner("dqn", "pong", 18.5, None, resumed=True, epoch_seconds_total=30.0,
                     wall_seconds_all_sittings=third.total)
    assert report.wall_seconds(record) == third.total


def test_a_run_directory_from_before_the_ledger_starts_it_with_its_epoch_times(tmp_path):
    from benchmarks.run import Sittings

    (tmp_path / "history.csv").write_text("epoch,epoch_seconds\n0,100.0\n1,150.5\n")
    with Sittings(tmp_path, beat=10) as sittings:
        pass
    assert sittings.entries[0]["seconds"] == 250.5 and sittings.entries[0]["ended"] is True
    assert len(sittings.entries) == 2 and sittings.total >= 250.5
    fresh = tmp_path / "fresh"
    with Sittings(fresh, beat=10) as sittings:
        pass
    assert len(sittings.entries) == 1 and (fresh / "sittings.json").is_file()


def test_side_benchmarks_name_themselves():
    """Each side benchmark script declares its name (= its module, = its record file), its
    section and its renderer; the committed record files all belong to an app or a script."""
    from apps import registry
    from benchmarks.report import RESULTS, side_benchmarks

    sides = side_benchmarks()
    assert {"cifar_flops", "cifar_transfer", "dqn_vs_sb3", "mnist_input_pipeline",
            "sentiment_latency", "shakespeare_generation_speed", "word2vec_vs_gensim",
            "serving_load", "device_check"} <= set(sides)
    for name, side in sides.items():
        # An app's section, or one of its own (serving; devices: benchmarks/device_check.py).
        assert side.name == name and (side.app in registry() or side.app in ("serving",
                                                                             "devices"))
        assert isinstance(side.render([]), list)
    for path in RESULTS.glob("*.jsonl"):
        assert path.stem in registry() or path.stem in sides, path.name


def test_generation_speed_rows_name_the_width_and_load_they_were_timed_at():
    """Rows of different architectures or machine loads are told apart in the table."""
    from benchmarks.shakespeare_generation_speed import render

    record = {"time": "2026-12-06T10:43:00+0000", "model": {"units": [384, 384]},
              "load_average": [1.31, 1.9, 2.3], "speedup": 243.7, "git_commit": "abc1234",
              "in_graph_generate": {"chars_per_sec": 3537.2}}
    text = "\n".join(render([record]))
    assert "| 384 x 384 | 1.3 |" in text and "3,537 chars/s" in text and "244x" in text
    assert "| – | – |" in "\n".join(render([{"time": "2026-11-22T17:01:00+0000"}]))


def test_headline_is_the_budgets_own_command():
    """A probe with extra flags does not become the headline when the budget has a plain run."""
    from benchmarks.report import best_run

    spec = {"budgets": {"default": [], "small": ["--epochs", "3"]}, "higher_is_better": True}
    plain = {"budget": "default", "value": 0.980,
             "command": "python -m apps.x.train --run-dir r --no-export"}
    probe = {"budget": "default", "value": 0.990,
             "command": "python -m apps.x.train --l2 1e-4 --run-dir r --no-export"}
    assert best_run([plain, probe], spec) is plain
    assert best_run([probe], spec) is probe  # no plain run: the probe, shown with its flags


def test_seed_means_and_minute_targets():
    seeds = {str(k): {"value": v, "wall_seconds": w}
             for k, v, w in ((42, 0.9889, 800), (43, 0.9895, 590), (44, 0.9889, 715))}
    record = {"value": 0.9891, "seeds": seeds, "wall_seconds": 800}
    target = ">= 0.989 mean of 3 seeds in <= 15 min"
    assert report.target_met(record, target) is True
    assert report.target_met(dict(record, wall_seconds=901), target) is False  # one seed too slow
    assert report.target_met(dict(record, seeds=None), target) is False  # one run is not a mean
    assert report.target_met(dict(record, value=0.9886), target) is False
    # A first seed's total over its sittings (carried into the record) is not the record's
    # time: the slowest seed's is.
    first = dict(record, wall_seconds_all_sittings=590.0, sittings=1)
    assert report.wall_seconds(first) == 800
    assert report.target_met(dict(first, wall_seconds=950), target) is False
    assert report.seeds_text(record) == " (mean of 3 seeds: 0.9889, 0.9895, 0.9889)"
    assert report.seeds_text({"value": 0.9}) == ""


def test_the_apps_seed_flag_passes_through_the_runner(tmp_path, monkeypatch):
    """``--seed 43`` is the app's flag: the runner must not read it as an abbreviation of its
    own ``--seeds`` (which would train 43 seeds)."""
    import benchmarks.run as bench

    calls = []

    def fake_run_once(app, budget, flags, tag, runs_dir, resume):
        calls.append(flags)
        return {"app": app, "metric": "accuracy", "value": 0.99, "epochs": 1,
                "wall_seconds": 1.0, "examples_per_sec": 1.0, "peak_rss_mb": 1}

    monkeypatch.setattr(bench, "run_once", fake_run_once)
    monkeypatch.setattr(bench, "append_record", lambda app, record: tmp_path / "r.jsonl")
    assert bench.main(["mnist_mlp", "--budget", "tiny", "--seed", "43"]) == 0
    assert calls == [["--seed", "43"]]


def test_a_record_of_several_seeds_states_its_slowest_seed(tmp_path, monkeypatch):
    """The mean's record carries the slowest seed's time over all its sittings, not the first
    seed's (which the rest of the record copies)."""
    import benchmarks.run as bench

    times = {"42": (480.0, 1), "43": (1_300.0, 2), "44": (550.0, 1)}

    def fake_run_once(app, budget, flags, tag, runs_dir, resume):
        seed = flags[flags.index("--seed") + 1] if "--seed" in flags else "42"
        total, sittings = times[seed]
        return {"app": app, "metric": "accuracy", "value": 0.99, "epochs": 50,
                "best_epoch": None, "examples_per_sec": 1.0, "command": f"seed {seed}",
                "wall_seconds": total / sittings, "wall_seconds_all_sittings": total,
                "sittings": sittings, "resumed": sittings > 1}

    monkeypatch.setattr(bench, "run_once", fake_run_once)
    record = bench.run_seeds("mnist_mlp", "default", [], 3, runs_dir=tmp_path)
    assert record["wall_seconds"] == record["wall_seconds_all_sittings"] == 1_300.0
    assert record["sittings"] == 2 and bench.wall_seconds_of(record) == 1_300.0
    assert [s["wall_seconds"] for s in record["seeds"].values()] == [480.0, 1_300.0, 550.0]
