"""The suite's applications: each folder declares its app once (``apps/<app>/train.py``'s
``APP``, an ``shared.app.App``); this registry discovers them. It is the only list of apps:
gate metrics, data validators, served model names and benchmark budgets are read from the
declarations. Adding an app means adding a folder with a ``train.py`` that defines ``APP``.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path


@cache
def registry() -> dict:
    """name -> App, for every ``apps/<folder>/train.py`` that declares ``APP``, in their order."""
    from shared.app import App

    found = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.ispkg or not (Path(__file__).parent / info.name / "train.py").is_file():
            continue
        app = getattr(importlib.import_module(f"apps.{info.name}.train"), "APP", None)
        if isinstance(app, App):
            found.append(app)
    return {app.name: app for app in sorted(found, key=lambda a: (a.order, a.name))}


def get(name: str):
    """The declared app called ``name``; a one-line error for an unknown one."""
    from shared.errors import UserError

    apps = registry()
    if name not in apps:
        raise UserError(f"unknown app {name!r}; apps: {', '.join(apps)}")
    return apps[name]


def __getattr__(attr):
    if attr == "APPS":  # name -> one-line description, in the registry's order
        return {name: app.description for name, app in registry().items()}
    raise AttributeError(attr)
