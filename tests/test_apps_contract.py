"""One contract test over every declared app (apps.registry()): the runner's promises hold for
each of them. Per-app test files keep only what is specific to their algorithm.

- ``--help`` exits 0 and shows the shared flags, the app's own flags and the defaults in force;
- a bad value and an unknown flag exit 2 with one line on stderr, no traceback;
- missing data (an empty ``KSUITE_DATA_DIR``, offline) is one line naming the file and the
  variable;
- a tiny run (the app's ``smoke`` flags) writes the run record and an export whose every
  signature reloads with ``tf.saved_model.load`` and answers inputs made from its TensorSpecs.
"""

from __future__ import annotations

import json

import pytest

from apps import registry
from tests.helpers import child_env, run_module, run_modules

APPS = registry()
SHARED_FLAGS = ("--epochs", "--batch-size", "--learning-rate", "--optimizer", "--schedule",
                "--patience", "--limit", "--seed", "--run-dir", "--export-dir", "--no-export",
                "--gate-margin", "--strategy", "--devices")


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_registry_lists_every_app_folder():
    from pathlib import Path

    import apps

    folders = {p.parent.name for p in Path(apps.__file__).parent.glob("*/train.py")}
    assert set(APPS) == folders
    for name, app in APPS.items():
        assert app.name == name and app.description and app.metric and app.model_names
        assert "default" in app.budgets


def test_declarations_reach_the_commands():
    """Gate metric, served names and budgets are read from the declarations, not listed again."""
    from benchmarks.budgets import BUDGETS
    from ksuite.serving_config import model_names

    assert set(BUDGETS) == set(APPS)
    for name, app in APPS.items():
        assert BUDGETS[name]["metric"] == app.metric
        assert BUDGETS[name]["higher_is_better"] == app.higher_is_better
        assert set(app.model_names) <= set(model_names())


@pytest.mark.parametrize("name", APPS)
def test_help_shows_shared_and_own_flags_with_defaults(name):
    app = APPS[name]
    proc = run_module(f"apps.{name}.train", "--help", timeout=60)
    for flag in SHARED_FLAGS:
        assert flag in proc.stdout, flag
    parser = app.parser()
    own = [a for g in parser._action_groups if g.title == name for a in g._group_actions]
    for action in own:
        assert action.option_strings[0] in proc.stdout, action.option_strings
    assert f"(default: {app.parse([]).epochs})" in proc.stdout.replace("\n", " ")


@pytest.mark.parametrize("name", APPS)
def test_bad_flags_are_one_line(name):
    line = _one_error_line(run_module(f"apps.{name}.train", "--epochs", "0", check=False,
                                      timeout=60))
    assert "--epochs" in line and "positive integer" in line
    line = _one_error_line(run_module(f"apps.{name}.train", "--frobnicate", check=False,
                                      timeout=60))
    assert "--frobnicate" in line


@pytest.mark.parametrize("name", [n for n, a in APPS.items() if a.reads_files])
def test_missing_data_is_one_line_naming_the_file(name, tmp_path):
    app = APPS[name]
    env = child_env(KSUITE_DATA_DIR=tmp_path / "empty", KERAS_HOME=tmp_path / "kh",
                    KSUITE_OFFLINE=1)
    proc = run_module(f"apps.{name}.train", *(app.smoke or app.budgets["tiny"]),
                      "--run-dir", tmp_path / "run", "--no-export", env=env, check=False,
                      timeout=180)
    line = _one_error_line(proc)
    assert "KSUITE_DATA_DIR" in line


def _example(spec):
    """An input for one TensorSpec: a batch of 2 where the batch size is free."""
    import numpy as np
    import tensorflow as tf

    shape = [2 if d is None else d for d in spec.shape.as_list()] if spec.shape.rank else []
    if spec.dtype == tf.string:
        return tf.constant(np.full(shape, "the king", dtype=object), tf.string)
    if spec.dtype.is_integer:
        return tf.ones(shape, spec.dtype)
    if spec.dtype == tf.bool:
        return tf.zeros(shape, tf.bool)
    return tf.zeros(shape, spec.dtype)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, mirror):
    """Every app's tiny run, side by side in child processes (start-up dominates them)."""
    base = tmp_path_factory.mktemp("contract")
    commands = [(f"apps.{name}.train",
                 [*(app.smoke or app.budgets["tiny"]), "--verbose", "0",
                  "--run-dir", base / name / "run", "--export-dir", base / name / "models"])
                for name, app in APPS.items()]
    run_modules(*commands, timeout=900)
    return base


@pytest.mark.parametrize("name", APPS)
def test_tiny_run_writes_the_record_and_a_serving_export(name, tiny_runs):
    import tensorflow as tf

    app = APPS[name]
    run = tiny_runs / name / "run"
    for file in ("config.json", "metrics.json"):
        assert (run / file).is_file(), file
    record = json.loads((run / "metrics.json").read_text())
    assert app.metric in record["metrics"], record["metrics"]
    exports = sorted((tiny_runs / name / "models").glob("*/1"))
    assert len(exports) == 1 and exports[0].parent.name in app.model_names
    meta = json.loads((exports[0] / "assets.extra" / "ksuite.json").read_text())
    assert meta["app"] == name and app.metric in meta["metrics"]
    # The policy --precision auto picks for a CPU is the one on record (bfloat16 for the apps
    # whose CPU default it is, on a CPU with bfloat16 hardware: their bfloat16 case of
    # test_precision.py is then this run; float32 on a CPU without).
    from shared.precision import cpu_has_bf16

    cpu_default = app.precision_for(app.parse(list(app.smoke or [])))["cpu"]
    assert record["precision"] == (cpu_default if cpu_has_bf16() else "float32")
    loaded = tf.saved_model.load(str(exports[0]))
    assert "serving_default" in loaded.signatures
    for sig_name, fn in loaded.signatures.items():
        inputs = {k: _example(s) for k, s in fn.structured_input_signature[1].items()}
        out = fn(**inputs)
        assert out, sig_name
        # Whatever policy trained it (bfloat16 by default on a CPU for some apps), no 16-bit
        # float crosses the export's boundary (test_precision.py covers the other policies).
        dtypes = {s.dtype.name for s in fn.structured_input_signature[1].values()} | {
            s.dtype.name for s in fn.structured_outputs.values()}
        assert not {"float16", "bfloat16"} & dtypes, (sig_name, dtypes)
