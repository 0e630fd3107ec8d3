"""Shared test setup: quiet TensorFlow, the offline data mirror, and a throw-away KERAS_HOME.

Everything here runs before any test module imports TensorFlow or Keras, so the environment
variables below are seen by both (Keras reads KERAS_HOME when it is imported).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository (so `import shared` works)
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KSUITE_DATA_DIR", str(DEFAULT_DATA_DIR))
os.environ.setdefault("KSUITE_OFFLINE", "1")
# Always a fresh, session-wide Keras home: tests never read or write ~/.keras.
_KERAS_HOME = tempfile.mkdtemp(prefix="ksuite-test-keras-home-")
os.environ["KERAS_HOME"] = _KERAS_HOME

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_KERAS_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def keras_home() -> Path:
    """The session's temporary KERAS_HOME (the Keras cache lives in ``<it>/datasets``)."""
    return Path(_KERAS_HOME)


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline data mirror (``KSUITE_DATA_DIR``); the test is skipped when it is absent."""
    path = Path(os.environ["KSUITE_DATA_DIR"])
    if not path.is_dir():
        pytest.skip(f"offline data mirror not found at {path} (set KSUITE_DATA_DIR)")
    return path
