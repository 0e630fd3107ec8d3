"""``ksuite``: one entry point for every app and the serving tools.

    ksuite                       list the apps and commands
    ksuite train APP [flags]     same as python -m apps.APP.train [flags]
    ksuite serve [flags]         local TensorFlow-Serving-compatible server
    ksuite predict [flags]       REST / gRPC client
    ksuite serving-config        write saved_models/models.config for every app's models
    ksuite skew MODEL --log DIR  compare logged requests with the model's training data
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

COMMANDS = {
    "serve": ("serving.server", "local TensorFlow-Serving-compatible server (REST + gRPC)"),
    "predict": ("serving.client", "query a served model over REST or gRPC"),
    "serving-config": ("ksuite.serving_config", "generate models.config for every app's models"),
    "skew": ("ksuite.skew", "compare logged requests with the model's training data"),
    "bench": ("benchmarks.run", "train an app at a named budget; append a JSON record"),
    "report": ("benchmarks.report", "write benchmarks/REPORT.md from the benchmark records"),
    "pipeline": ("ksuite.pipeline", "validate data, train, gate against stable, publish canary"),
    "promote": ("ksuite.pipeline:main_promote", "label a model's canary version stable"),
    "rollback": ("ksuite.pipeline:main_rollback", "point stable back at the previous version"),
    "lr-find": ("ksuite.lr_find", "learning-rate range test on an app: loss vs lr, a suggested lr"),
    "demo": ("ksuite.demo", "the main job: train MNIST, export, reload, serve and query it"),
}


def _usage() -> str:
    from apps import registry

    lines = ["usage: ksuite train APP [flags] | ksuite COMMAND [flags]", "", "apps:"]
    for name, app in registry().items():
        lines.append(f"  {name:18s} {app.description}")
    lines += ["", "commands:", f"  {'train APP':18s} train an app (python -m apps.APP.train)"]
    for name, (_, what) in COMMANDS.items():
        lines.append(f"  {name:18s} {what}")
    lines += ["", "Every command has --help."]
    return "\n".join(lines)


def _run_module_main(module: str, argv: list[str]) -> int:
    module, _, function = module.partition(":")
    result = getattr(importlib.import_module(module), function or "main")(argv)
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help", "list", "apps"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from apps import registry

        apps = registry()
        if not rest or rest[0] in ("-h", "--help"):
            print("usage: ksuite train APP [flags]\napps: " + ", ".join(apps))
            return 0 if rest else 2
        if rest[0] not in apps:
            print(f"error: unknown app {rest[0]!r}; apps: {', '.join(apps)}", file=sys.stderr)
            return 2
        apps[rest[0]].main(rest[1:])
        return 0
    if command in COMMANDS:
        return _run_module_main(COMMANDS[command][0], rest)
    print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
