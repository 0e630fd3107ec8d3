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
