"""The `ksuite` entry point: lists apps, dispatches `train APP` to `python -m apps.APP.train`."""

from __future__ import annotations

import shutil
import subprocess

from tests.helpers import ROOT, child_env, run_module


def test_ksuite_lists_apps_and_commands():
    proc = run_module("ksuite.cli", timeout=60)
    for name in ("mnist_mlp", "cifar_cnn", "word2vec", "shakespeare_lstm", "sentiment_gru",
                 "dcgan", "dqn", "serve", "predict", "bench"):
        assert name in proc.stdout


def test_ksuite_train_is_python_m_train():
    via_ksuite = run_module("ksuite.cli", "train", "mnist_mlp", "--help", timeout=60).stdout
    direct = run_module("apps.mnist_mlp.train", "--help", timeout=60).stdout
    assert via_ksuite == direct


def test_console_script_installed():
    exe = shutil.which("ksuite") or str(ROOT / ".venv" / "bin" / "ksuite")
    proc = subprocess.run([exe, "train", "mnist_mlp", "--help"], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert proc.returncode == 0 and "--strategy" in proc.stdout


def test_unknown_app_and_command_are_clear_errors():
    proc = run_module("ksuite.cli", "train", "resnet", check=False, timeout=60)
    assert proc.returncode == 2 and "unknown app 'resnet'" in proc.stderr
    proc = run_module("ksuite.cli", "frobnicate", check=False, timeout=60)
    assert proc.returncode == 2 and "unknown command" in proc.stderr


def test_skew_reference_comes_from_the_app_declaring_the_model(mirror):
    """`ksuite skew MODEL` finds the app that exports MODEL and takes its training inputs as the
    signature sees them; an unknown model is one clear error."""
    import numpy as np
    import pytest

    from ksuite.skew import reference_loader
    from shared.errors import UserError

    ref = reference_loader("mnist_mlp")
    assert set(ref) == {"images"} and ref["images"].dtype == np.uint8
    assert ref["images"].shape[1:] == (28, 28) and len(ref["images"]) == 60000
    with pytest.raises(UserError, match="no app exports a model called 'resnet'"):
        reference_loader("resnet")
