"""``ksuite serving-config``: serving/config.py's command, with every app's served model names
read from the app registry (serving/ itself does not know the suite's apps)."""

from __future__ import annotations


def model_names() -> list[str]:
    from apps import registry

    return [name for app in registry().values() for name in app.model_names]


def main(argv=None) -> int:
    from serving import config

    return config.main(argv, model_names=model_names())
