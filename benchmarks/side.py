"""Side benchmarks: the measurements beside an app's training runs (input pipeline, FLOPs,
transfer learning, gensim, generation speed, latency, SB3, serving load).

Each one is a script ``benchmarks/<name>.py`` that declares itself once, at module level::

    SIDE = Side("cifar_flops", app="cifar_cnn", render=render)   # name, section, renderer

and appends its records with ``SIDE.append(record)`` to ``benchmarks/results/<name>.jsonl``: the
record file is named after the script that writes it (its declared name must be its module's).
``benchmarks.report`` discovers the scripts (:func:`discover`); nothing lists them again. A
script must be cheap to import (TensorFlow and its app inside functions), since the report
imports every one of them.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Side:
    """One side benchmark: its name (the declaring script's module name, and its record file's
    stem), the report section it belongs to (an app's name, or ``serving``) and its renderer
    (records -> Markdown lines)."""

    name: str
    app: str
    render: Callable[[list[dict]], list[str]]

    def append(self, record: dict) -> Path:
        """Append ``record`` (with ``benchmark: <name>``) to ``results/<name>.jsonl``."""
        from benchmarks.run import append_record

        return append_record(self.name, {**record, "benchmark": self.name})


def discover() -> dict[str, Side]:
    """name -> Side for every ``benchmarks/*.py`` that declares ``SIDE``."""
    found = {}
    for info in pkgutil.iter_modules([str(HERE)]):
        if info.ispkg or info.name in ("run", "report", "budgets", "side"):
            continue
        side = getattr(importlib.import_module(f"benchmarks.{info.name}"), "SIDE", None)
        if isinstance(side, Side):
            if side.name != info.name:
                raise ValueError(f"benchmarks/{info.name}.py declares the side benchmark "
                                 f"{side.name!r}: its records would not be named after it")
            found[info.name] = side
    return found
