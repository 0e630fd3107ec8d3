"""Named training budgets per app: the flags a benchmark run adds, and the metric it reports.

Each app declares its own in ``apps/<app>/train.py`` as ``BENCHMARK = {"metric": ...,
"budgets": {"default": [...flags...], "small": [...], ...}}``; ``default`` is the app's default
configuration (what the issue's quality target is about). Every budget trains on real data.
"""

from __future__ import annotations

import importlib

from apps import APPS


def _collect() -> dict[str, dict]:
    out = {}
    for app in APPS:
        try:
            module = importlib.import_module(f"apps.{app}.train")
        except ModuleNotFoundError:
            continue
        spec = getattr(module, "BENCHMARK", None)
        if spec:
            out[app] = spec
    return out


BUDGETS: dict[str, dict] = _collect()
