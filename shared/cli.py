"""``ksuite``: one entry point for every app and the serving tools.

    ksuite                       list the apps and commands
    ksuite train APP [flags]     same as python -m apps.APP.train [flags]
    ksuite serve [flags]         local TensorFlow-Serving-compatible server (serving/server.py)
    ksuite predict [flags]       REST / gRPC client (serving/client.py)
    ksuite serving-config        write serving/models.config from saved_models/
    ksuite bench APP --budget B  train at a named budget and append a benchmark record
    ksuite report                write benchmarks/REPORT.md from benchmarks/results/
    ksuite pipeline APP [flags]  validate, train, gate against stable, publish as canary
    ksuite promote MODEL         stable := canary (serving config labels)
    ksuite rollback MODEL        stable := the previous stable version
    ksuite demo                  the README's main job (train, export, reload, serve, query)
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import apps
from apps import APPS


def _available(app: str) -> bool:
    return (Path(apps.__file__).parent / app / "train.py").is_file()

COMMANDS = {
    "serve": ("serving.server", "local TensorFlow-Serving-compatible server (REST + gRPC)"),
    "predict": ("serving.client", "query a served model over REST or gRPC"),
    "serving-config": ("serving.config", "generate serving/models.config from saved_models/"),
    "bench": ("benchmarks.run", "train an app at a named budget; append a JSON record"),
    "report": ("benchmarks.report", "write benchmarks/REPORT.md from the benchmark records"),
    "pipeline": ("shared.pipeline", "validate data, train, gate against stable, publish canary"),
    "promote": ("shared.pipeline:main_promote", "label a model's canary version stable"),
    "rollback": ("shared.pipeline:main_rollback", "point stable back at the previous version"),
    "demo": ("shared.demo", "the main job: train MNIST, export, reload, serve and query it"),
}


def _usage() -> str:
    lines = ["usage: ksuite train APP [flags] | ksuite COMMAND [flags]", "", "apps:"]
    for name, what in APPS.items():
        ok = _available(name)
        lines.append(f"  {name:18s} {what}{'' if ok else '  (not available yet)'}")
    lines += ["", "commands:", f"  {'train APP':18s} train an app (python -m apps.APP.train)"]
    for name, (_, what) in COMMANDS.items():
        lines.append(f"  {name:18s} {what}")
    lines += ["", "Every command has --help."]
    return "\n".join(lines)


def _run_module_main(module: str, argv: list[str]) -> int:
    module, _, function = module.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            print(f"error: {module} is not available in this checkout", file=sys.stderr)
            return 2
        raise
    result = getattr(mod, function or "main")(argv)
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help", "list", "apps"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        if not rest or rest[0] in ("-h", "--help"):
            print("usage: ksuite train APP [flags]\napps: " + ", ".join(APPS))
            return 0 if rest else 2
        app, flags = rest[0], rest[1:]
        if app not in APPS:
            print(f"error: unknown app {app!r}; apps: {', '.join(APPS)}", file=sys.stderr)
            return 2
        if not _available(app):
            print(f"error: app {app} is not available in this checkout yet", file=sys.stderr)
            return 2
        _run_module_main(f"apps.{app}.train", flags)
        return 0
    if command in COMMANDS:
        return _run_module_main(COMMANDS[command][0], rest)
    print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
