"""Named training budgets per app: the flags a benchmark run adds, and the metric it reports.

Read from the app declarations (``apps/<app>/train.py``: ``metric``, ``anchor``, ``budgets``,
``budget_anchors``); ``default`` is the app's default configuration (what an issue's quality
target is about). Every budget trains on real data.
"""

from __future__ import annotations

from apps import registry


def spec(app) -> dict:
    """The benchmark view of one declared app."""
    return {"metric": app.metric, "higher_is_better": app.higher_is_better,
            "anchor": dict(app.anchor), "budgets": dict(app.budgets),
            "budget_anchors": dict(app.budget_anchors)}


BUDGETS: dict[str, dict] = {name: spec(app) for name, app in registry().items()}
