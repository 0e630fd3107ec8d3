"""Issue 31: ``--precision``, ``--jit-compile``, cuDNN-eligible recurrent layers, device_check.

- every app trains a tiny run (its contract ``smoke`` flags) under each precision policy with
  finite losses, and its export's signatures take and return the dtypes of the float32 run
  (word2vec, float32-only, refuses the mixed policies in one line);
- ``mixed_float16`` gets Keras' loss scaling; the output layers compute in float32;
- XLA on and off give the same MNIST loss within float tolerance;
- the default GRU and LSTM layers meet cuDNN's conditions;
- ``python -m benchmarks.device_check`` runs end to end on one app and one setting.

The tiny runs are in this process (one TensorFlow start-up for all of them): the runner leaves
no global state behind but the seeds and TensorFlow's op determinism.
"""

from __future__ import annotations

import functools
import json
import math
import types

import pytest

from apps import registry
from shared.precision import resolve_precision
from tests.helpers import child_env, run_module, run_modules

APPS = registry()
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# Tiny runs: the contract test's flags, plus the GAN without its sample-quality evaluation (an
# evaluation classifier to train: not what this file checks).
EXTRA = {"dcgan": ["--no-eval"]}


def _tiny_run(name, precision, base):
    app = APPS[name]
    out = base / f"{name}-{precision}"
    return app.main([*(app.smoke or app.budgets["tiny"]), *EXTRA.get(name, []),
                     "--verbose", "0", "--precision", precision,
                     "--run-dir", str(out / "run"), "--export-dir", str(out / "models")])


@functools.lru_cache(maxsize=None)
def _signature_dtypes(export_dir):
    """{signature: (input name -> dtype, output name -> dtype)} of a reloaded SavedModel."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    return {name: ({k: s.dtype.name for k, s in fn.structured_input_signature[1].items()},
                   {k: s.dtype.name for k, s in fn.structured_outputs.items()})
            for name, fn in loaded.signatures.items()}


def _losses(run_dir):
    """Every loss column of every history.csv of the run (its stages' too)."""
    import pandas as pd

    values = {}
    for history in [run_dir / "history.csv", *sorted(run_dir.glob("*/history.csv"))]:
        if history.exists():
            frame = pd.read_csv(history)
            for col in frame.columns:
                if "loss" in col:
                    values[f"{history.parent.name}/{col}"] = frame[col].tolist()
    return values


# The apps' loaders whose results the tiny runs share (reading 50,000 IMDB files or the CIFAR
# archive again for each policy would be most of this file's time).
CACHED_LOADERS = ("mnist_mlp", "cifar_cnn", "sentiment_gru", "shakespeare_lstm", "dcgan")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mirror):
    """(app, policy) -> (record, run dir), each tiny run made once, when first asked for."""
    import importlib

    base = tmp_path_factory.mktemp("precision")
    done = {}
    with pytest.MonkeyPatch.context() as patch:
        for name in CACHED_LOADERS:
            module = importlib.import_module(f"apps.{name}.data")
            patch.setattr(module, "load", functools.lru_cache(maxsize=None)(module.load))
        yield functools.partial(_get_run, done, base)


def _get_run(done, base, name, precision):
    if (name, precision) not in done:
        record = _tiny_run(name, precision, base)
        done[name, precision] = (record, base / f"{name}-{precision}" / "run")
    return done[name, precision]


MIXED_APPS = [n for n, a in APPS.items() if not a.float32_only]


# The fast suite: every app under bfloat16 (the CPU's mixed policy) and MNIST under float16;
# the rest of the matrix, each compared with its float32 run, is marked slow (~8 min on 2 cores).
# Apps that already train under bfloat16 by default here (a CPU with bfloat16 hardware) get that
# case from the contract test's tiny run (tests/test_apps_contract.py, which checks the export's
# dtypes too).
CPU_BF16_DEFAULT = {n for n in MIXED_APPS
                    if resolve_precision("auto", APPS[n].precision_for(APPS[n].parse([])))
                    == "mixed_bfloat16"}
FAST = {*((n, "mixed_bfloat16") for n in MIXED_APPS if n not in CPU_BF16_DEFAULT),
        ("mnist_mlp", "mixed_float16")}
CASES = [pytest.param(n, p, marks=() if (n, p) in FAST else pytest.mark.slow)
         for n in MIXED_APPS for p in POLICIES]


@pytest.mark.parametrize("name, precision", CASES)
def test_each_policy_trains_with_finite_loss_and_float32_signatures(name, precision, runs):
    record, run_dir = runs(name, precision)
    # No 16-bit float crosses the export's boundary, in or out.
    for inputs, outputs in _signature_dtypes(record["export"]).values():
        assert not {"float16", "bfloat16"} & {*inputs.values(), *outputs.values()}
    if (name, precision) in FAST:
        assert record["precision"] == precision
        assert all(math.isfinite(v) for c, vs in _losses(run_dir).items()
                   if "/val_" not in c for v in vs)
        return
    assert record["precision"] == precision
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["precision"] == precision  # the resolved policy is on record
    losses = _losses(run_dir)
    assert losses, f"{name}: no loss column in its history"
    reference, reference_dir = runs(name, "float32")
    # Every training loss, and every validation loss the float32 run has (the GAN logs a NaN
    # val_d_loss without a validation set, under float32 too).
    reference_losses = _losses(reference_dir)
    for column, values in losses.items():
        if "/val_" in column and not all(map(math.isfinite, reference_losses.get(column, []))):
            continue
        assert all(math.isfinite(v) for v in values), (column, values)
    assert _signature_dtypes(record["export"]) == _signature_dtypes(reference["export"])


@pytest.mark.parametrize("name", [n for n, a in APPS.items() if a.float32_only])
@pytest.mark.parametrize("precision", ("mixed_bfloat16", "mixed_float16"))
def test_float32_only_apps_refuse_a_mixed_policy_in_one_line(name, precision, capsys):
    app = APPS[name]
    with pytest.raises(SystemExit) as stop:
        app.parse(["--precision", precision])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {app.prog}: --precision {precision}")
    assert app.parse(["--precision", "float32"]).precision == "float32"


def test_auto_keeps_bfloat16_for_cpus_that_compute_it_in_hardware(monkeypatch, tmp_path, capsys):
    from shared import precision

    defaults = {"cpu": "mixed_bfloat16", "gpu": "mixed_float16"}
    monkeypatch.setattr(precision, "device_kind", lambda: "cpu")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_precision("auto", defaults) == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)  # emulated: ~10x slower
    assert precision.resolve_precision("auto", defaults) == "float32"
    args = types.SimpleNamespace(precision="auto")
    precision.resolve(args, defaults)
    assert args.precision == "float32" and "no bfloat16 hardware" in capsys.readouterr().out
    assert precision.resolve_precision("mixed_bfloat16", defaults) == "mixed_bfloat16"
    monkeypatch.setattr(precision, "device_kind", lambda: "gpu")
    assert precision.resolve_precision("auto", defaults) == "mixed_float16"
    monkeypatch.undo()

    x86, arm, old = (tmp_path / n for n in ("x86", "arm", "old"))
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    old.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert precision.cpu_has_bf16(str(x86)) and precision.cpu_has_bf16(str(arm))
    assert not precision.cpu_has_bf16(str(old))
    assert not precision.cpu_has_bf16(str(tmp_path / "absent"))


def test_refusals_of_jit_compile_are_one_line(capsys):
    refusing = [a for a in APPS.values() if a.no_jit_compile]
    assert refusing, "the DQN's own TD update refuses --jit-compile"
    for app in refusing:
        with pytest.raises(SystemExit) as stop:
            app.parse(["--jit-compile"])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {app.prog}: --jit-compile")
        assert app.parse(["--no-jit-compile"]).jit_compile is False


def test_word2vec_xla_flags_agree():
    app = APPS["word2vec"]
    assert app.parse([]).jit_compile is True  # its measured default: XLA on
    assert app.parse(["--no-xla"]).jit_compile is False  # the older spelling still works
    assert app.parse(["--no-jit-compile"]).jit_compile is False


def test_mixed_float16_scales_the_loss_and_outputs_stay_float32():
    """Keras' compile wraps the optimizer in a LossScaleOptimizer under mixed_float16; the apps
    with their own step get the same wrapper; softmax and logit layers compute in float32."""
    import keras

    from shared.precision import dtype_policy, loss_scaled

    with dtype_policy("mixed_float16"):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8)(inputs)
        outputs = keras.layers.Dense(2, activation="softmax", dtype="float32")(hidden)
        model = keras.Model(inputs, outputs)
    assert keras.config.dtype_policy().name == "float32"  # put back after the build
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert hidden.dtype == "float16" and outputs.dtype == "float32"
    assert isinstance(loss_scaled(keras.optimizers.Adam(), "mixed_float16"),
                      keras.optimizers.LossScaleOptimizer)
    assert not isinstance(loss_scaled(keras.optimizers.Adam(), "mixed_bfloat16"),
                          keras.optimizers.LossScaleOptimizer)


def test_xla_on_and_off_give_the_same_loss(tmp_path, mirror):
    """MNIST's tiny run with and without XLA (child processes: Keras will not compile with XLA
    in a process where op determinism was ever on). Without dropout: XLA draws its random
    numbers with another algorithm ("auto_select"), so the masks, not the arithmetic, would
    differ (0.9% on the first epoch's loss)."""
    app = APPS["mnist_mlp"]
    common = [*app.smoke, "--recipe", "keras", "--dropout", "0", "--verbose", "0", "--no-export",
              "--no-deterministic"]
    run_modules(*[("apps.mnist_mlp.train", [*common, flag, "--run-dir", tmp_path / flag])
                  for flag in ("--jit-compile", "--no-jit-compile")], timeout=300)
    records = {flag: json.loads((tmp_path / flag / "metrics.json").read_text())
               for flag in ("--jit-compile", "--no-jit-compile")}
    assert records["--jit-compile"]["jit_compile"] is True
    assert records["--no-jit-compile"]["jit_compile"] is False
    import pandas as pd

    on, off = (pd.read_csv(tmp_path / flag / "history.csv")
               for flag in ("--jit-compile", "--no-jit-compile"))
    for column in ("loss", "val_loss"):
        assert on[column].tolist() == pytest.approx(off[column].tolist(), rel=1e-4), column
    test_on, test_off = (records[f]["metrics"]["loss"] for f in ("--jit-compile",
                                                                 "--no-jit-compile"))
    assert test_on == pytest.approx(test_off, rel=1e-4)


def _recurrent_layers(model):
    import keras

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (keras.layers.GRU, keras.layers.LSTM)):
            yield layer


def cudnn_violations(layer) -> list[str]:
    """What keeps a Keras GRU/LSTM off the cuDNN kernel (Keras 3 ``GRU``/``LSTM`` docs: tanh,
    sigmoid recurrent activation, no recurrent dropout, not unrolled, with a bias; GRU
    ``reset_after=True``), or [] when it meets every condition."""
    import keras

    out = []
    if layer.use_cudnn not in ("auto", True):
        out.append(f"use_cudnn={layer.use_cudnn}")
    cell = layer.cell
    if cell.activation is not keras.activations.tanh:
        out.append(f"activation {cell.activation.__name__}")
    if cell.recurrent_activation is not keras.activations.sigmoid:
        out.append(f"recurrent_activation {cell.recurrent_activation.__name__}")
    if cell.recurrent_dropout:
        out.append(f"recurrent_dropout {cell.recurrent_dropout}")
    if layer.unroll:
        out.append("unroll")
    if not cell.use_bias:
        out.append("no bias")
    if isinstance(layer, keras.layers.GRU) and not cell.reset_after:
        out.append("reset_after=False")
    return out


def test_default_recurrent_layers_meet_cudnn_conditions():
    """sentiment_gru's (Bi)GRU and shakespeare_lstm's LSTMs, built by each app from its default
    flags (and the LSTM's serving copy), stay on the fast path."""
    import keras

    from apps.shakespeare_lstm.model import stateless_copy
    from shared.app import Data

    gru_app, lstm_app = APPS["sentiment_gru"], APPS["shakespeare_lstm"]
    args = gru_app.parse([])
    vectorizer = type("V", (), {"vocabulary_size": staticmethod(lambda: 100)})()
    gru_model = gru_app.build_model(args, Data(vectorizer=vectorizer, initial=None, lm=None), None)
    args = lstm_app.parse([])
    lstm_model = lstm_app.build_model(
        args, Data(vocab=list("abc"), batch=args.batch_size, stateful=args.mode == "stateful"),
        None)
    models = {"sentiment_gru": gru_model, "shakespeare_lstm": lstm_model,
              "shakespeare_lstm (serving copy)": stateless_copy(lstm_model)}
    for label, model in models.items():
        layers = list(_recurrent_layers(model))
        assert layers, label
        for layer in layers:
            assert cudnn_violations(layer) == [], (label, layer.name)
            # ... and on a CPU, the loop with the input projection hoisted (shared.recurrent).
            assert layer.hoists(), (label, layer.name)
    # The test itself catches a layer that falls off the path.
    slow = keras.layers.GRU(4, recurrent_dropout=0.1, reset_after=False, activation="relu")
    assert set(cudnn_violations(slow)) == {"activation relu", "recurrent_dropout 0.1",
                                           "reset_after=False"}


def test_reviews_are_padded_on_the_right():
    """cuDNN's masked kernel needs right-padded sequences: the vectorizer and the bucketed
    batches put the padding (id 0, masked by the embedding) after each review."""
    import numpy as np

    from apps.sentiment_gru.data import make_dataset, make_vectorizer

    texts = np.array(["good film", "a very good film indeed", "bad", "a bad film"])
    labels = np.array([1, 1, 0, 0])
    vectorizer = make_vectorizer(texts, 50, 8)
    for ids, _ in make_dataset(vectorizer, texts, labels, 4):
        ids = ids.numpy()
        for row in ids:
            nonzero = np.flatnonzero(row)
            assert nonzero.size and (row[nonzero[-1] + 1:] == 0).all()
            assert (row[: nonzero[-1] + 1] != 0).all(), row  # no padding before a word


def test_device_check_plans_the_gpu_branches():
    """What it would run on several GPUs (mixed_float16, XLA on/off, mirrored over all of
    them), planned from a device list: no GPU here."""
    from benchmarks.device_check import plan

    gpu = plan(["mnist_mlp", "word2vec"], device_kind="gpu", gpus=4)
    assert {(s["precision"], s["jit_compile"]) for s in gpu if s["app"] == "mnist_mlp"} == {
        ("float32", False), ("float32", True), ("mixed_float16", False),
        ("mixed_float16", True)}
    assert all(s["strategy"] == "mirrored" for s in gpu)
    assert {s["precision"] for s in gpu if s["app"] == "word2vec"} == {"float32"}
    cpu = plan(["mnist_mlp", "dqn"], device_kind="cpu", gpus=0)
    assert {s["precision"] for s in cpu} == {"float32", "mixed_bfloat16"}
    assert all(s["strategy"] == "default" for s in cpu)
    assert not any(s["jit_compile"] for s in cpu if s["app"] == "dqn")


def test_device_check_writes_a_record(tmp_path, mirror):
    """End to end, one app and one setting: the several-GPU branch (mirrored over every
    device, a mixed policy) on 2 logical CPU devices, with the contract's tiny flags; a
    well-formed record and the table."""
    results = tmp_path / "results.jsonl"
    proc = run_module("benchmarks.device_check", "--apps", "mnist_mlp", "--precision",
                      "mixed_bfloat16", "--xla", "off", "--strategy", "mirrored", "--devices",
                      "2", "--results", results, "--runs-dir", tmp_path / "runs", "--",
                      *APPS["mnist_mlp"].smoke, "--recipe", "keras", env=child_env(),
                      timeout=300)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 1
    r = records[0]
    for key in ("app", "budget", "device", "device_kind", "precision", "jit_compile",
                "strategy", "replicas", "metric", "value", "examples_per_sec", "peak_memory_mb",
                "peak_memory_kind", "wall_seconds", "command", "benchmark"):
        assert key in r, key
    assert "error" not in r, r["error"]
    assert r["app"] == "mnist_mlp" and r["precision"] == "mixed_bfloat16"
    assert r["jit_compile"] is False and r["strategy"] == "mirrored" and r["replicas"] == 2
    assert r["device_kind"] == "cpu" and r["peak_memory_kind"] == "process peak RSS"
    assert r["peak_memory_mb"] > 0 and r["examples_per_sec"] > 0 and 0 <= r["value"] <= 1
    assert r["benchmark"] == "device_check"
    assert "mnist_mlp" in proc.stdout and "examples/s" in proc.stdout  # the table
