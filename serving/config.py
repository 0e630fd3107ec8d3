"""Generate and check TensorFlow Serving's config files from what is in ``saved_models/``.

``models.config`` is an ASCII ``ModelServerConfig`` protocol buffer
(tensorflow_serving/config/model_server_config.proto) holding a ``model_config_list``: one
``config`` per exported model with its ``name``, ``base_path``, ``model_platform: "tensorflow"``,
a ``model_version_policy`` (``latest { num_versions: N }``, ``specific { versions: ... }`` or
``all {}``) and ``version_labels`` (``stable``, ``canary``). It is written with the official
proto classes and ``google.protobuf.text_format``, so it is valid for
``tensorflow_model_server --model_config_file`` by construction.

``batching.config`` is an ASCII ``BatchingParameters`` proto for ``--batching_parameters_file``.

Labels: TensorFlow Serving only accepts a label that points at a version it has loaded, so the
generated labels always point at versions the version policy serves: ``canary`` is the newest
served version and ``stable`` the one before it (both the same version when only one is served).

Examples::

    python -m serving.config                    # saved_models/ -> saved_models/models.config
    python -m serving.config --policy specific --versions mnist_mlp=3,4 \\
        --label mnist_mlp:stable=3 --label mnist_mlp:canary=4
    python -m serving.config --base-path-prefix "$PWD/saved_models" -o /tmp/models.local.config
    python -m serving.config --example -o serving/models.config   # the committed example
    python -m serving.config --check saved_models/models.config serving/batching.config
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from shared.errors import UserError, exit_on_user_error

DEFAULT_SAVED_MODELS = "saved_models"
DEFAULT_OUTPUT = "saved_models/models.config"  # mounted at /models/models.config in the container
DEFAULT_PREFIX = "/models"  # where docker-compose.yml mounts saved_models/
DEFAULT_NUM_VERSIONS = 2
LABELS = ("stable", "canary")


def _pb():
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2


def disk_versions(base_path: str | Path) -> list[int]:
    """Sorted integer versions under a model's base path: numeric folder names (zero padding
    allowed, ``00000123`` is 123) that hold a SavedModel."""
    base = Path(base_path)
    out = []
    if base.is_dir():
        for child in base.iterdir():
            if child.is_dir() and child.name.isdigit() and (
                (child / "saved_model.pb").exists() or (child / "saved_model.pbtxt").exists()
            ):
                out.append(int(child.name))
    return sorted(set(out))


def discover_models(saved_models: str | Path) -> dict[str, list[int]]:
    """Model name -> sorted versions, for every ``<saved_models>/<name>/<int>/`` SavedModel."""
    root = Path(saved_models)
    if not root.is_dir():
        raise UserError(f"no such folder: {root} (export a model first, or pass --saved-models)")
    found = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            v = disk_versions(child)
            if v:
                found[child.name] = v
    return found


def served_versions(versions: list[int], policy: str, num_versions: int = 1,
                    specific: list[int] | None = None) -> list[int]:
    """The versions a policy serves, given the versions on disk (what TF Serving will load)."""
    versions = sorted(versions)
    if policy == "all":
        return versions
    if policy == "specific":
        return sorted(v for v in (specific or []) if v in versions)
    return versions[-max(1, num_versions):]


def auto_labels(served: list[int]) -> dict[str, int]:
    """``canary`` = newest served version, ``stable`` = the one before (or the same)."""
    if not served:
        return {}
    served = sorted(served)
    return {"stable": served[-2] if len(served) > 1 else served[-1], "canary": served[-1]}


def build_model_config(
    models: dict[str, list[int]],
    *,
    base_path_prefix: str = DEFAULT_PREFIX,
    policy: str = "latest",
    num_versions: int = DEFAULT_NUM_VERSIONS,
    specific: dict[str, list[int]] | None = None,
    labels: dict[str, dict[str, int]] | None = None,
    auto_label: bool = True,
):
    """A ``ModelServerConfig`` with one ``model_config_list.config`` per model.

    ``models``: name -> versions on disk. ``policy``: ``latest`` (newest ``num_versions``),
    ``specific`` (the versions in ``specific[name]``, default: the newest ``num_versions`` on
    disk, pinned) or ``all``. ``labels``: name -> {label: version}, overriding the automatic
    stable/canary labels (``auto_label=False`` turns those off)."""
    pb = _pb()
    if policy not in ("latest", "specific", "all"):
        raise UserError(f"unknown version policy {policy!r} (latest, specific or all)")
    if num_versions < 1:
        raise UserError("--num-versions must be >= 1")
    specific = specific or {}
    labels = labels or {}
    for name in list(specific) + list(labels):
        if name not in models:
            raise UserError(f"model {name!r} is not among the exported models: "
                            f"{', '.join(sorted(models)) or 'none'}")
    config = pb.ModelServerConfig()
    for name in sorted(models):
        on_disk = models[name]
        mc = config.model_config_list.config.add()
        mc.name = name
        mc.base_path = str(PurePosixPath(base_path_prefix) / name) if base_path_prefix \
            else name
        mc.model_platform = "tensorflow"
        if policy == "latest":
            mc.model_version_policy.latest.num_versions = num_versions
            served = served_versions(on_disk, "latest", num_versions)
        elif policy == "all":
            mc.model_version_policy.all.SetInParent()
            served = list(on_disk)
        else:
            pinned = specific.get(name) or on_disk[-num_versions:]
            missing = [v for v in pinned if v not in on_disk]
            if missing:
                raise UserError(f"{name}: version(s) {missing} not found on disk "
                                f"(available: {on_disk})")
            mc.model_version_policy.specific.versions.extend(sorted(set(pinned)))
            served = sorted(set(pinned))
        wanted = dict(auto_labels(served)) if auto_label else {}
        wanted.update(labels.get(name, {}))
        for label, version in sorted(wanted.items()):
            if version not in served:
                raise UserError(
                    f"{name}: label {label!r} -> version {version}, but the version policy "
                    f"serves {served}; TensorFlow Serving only accepts labels on loaded versions")
            if label.isdigit():
                raise UserError(f"{name}: a version label cannot be a number ({label!r})")
            mc.version_labels[label] = version
    return config


def example_model_config(model_names=None):
    """The documentation example for ``model_names`` (default: the model folders under
    ``saved_models/``). ``mnist_mlp`` shows a canary rollout (specific versions 1 and 2,
    ``stable`` -> 1, ``canary`` -> 2); the others serve their newest two versions."""
    pb = _pb()
    if model_names is None:
        model_names = list(discover_models(DEFAULT_SAVED_MODELS))
    config = pb.ModelServerConfig()
    for name in model_names:
        mc = config.model_config_list.config.add()
        mc.name = name
        mc.base_path = f"{DEFAULT_PREFIX}/{name}"
        mc.model_platform = "tensorflow"
        if name == "mnist_mlp":
            mc.model_version_policy.specific.versions.extend([1, 2])
            mc.version_labels["stable"] = 1
            mc.version_labels["canary"] = 2
        else:
            mc.model_version_policy.latest.num_versions = DEFAULT_NUM_VERSIONS
    return config


def config_to_text(config, header: str = "") -> str:
    from google.protobuf import text_format

    body = text_format.MessageToString(config)
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header else []
    return ("\n".join(lines) + "\n" if lines else "") + body


def parse_model_config(text: str, source: str = "<text>"):
    """Parse an ASCII ModelServerConfig (what ``--model_config_file`` reads)."""
    from google.protobuf import text_format

    config = _pb().ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UserError(f"{source}: invalid ModelServerConfig text proto: {exc}") from None
    return config


def read_model_config(path: str | Path):
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model config file not found: {p}")
    return parse_model_config(p.read_text(encoding="utf-8"), source=str(p))


def check_model_config(config, labels: bool = True) -> list[str]:
    """Problems TensorFlow Serving would refuse the config for (empty list = fine).
    ``labels``: also flag labels on versions a specific policy does not serve (TF Serving
    refuses those when it applies the config, unless the versions are loaded)."""
    problems = []
    kind = config.WhichOneof("config")
    if kind != "model_config_list":
        return [f"only model_config_list is supported (got {kind or 'an empty config'})"]
    seen = set()
    for mc in config.model_config_list.config:
        if not mc.name:
            problems.append("a config entry has no name")
        if mc.name in seen:
            problems.append(f"Illegal to list model {mc.name} multiple times in config list")
        seen.add(mc.name)
        if not mc.base_path:
            problems.append(f"{mc.name}: base_path is empty")
        elif "://" not in mc.base_path and not PurePosixPath(mc.base_path).is_absolute():
            problems.append(f"Expected model {mc.name} to have an absolute path or URI; got "
                            f"base_path()={mc.base_path} (TensorFlow Serving requires "
                            "absolute base paths)")
        if mc.model_platform != "tensorflow":
            problems.append(f"{mc.name}: model_platform must be 'tensorflow' "
                            f"(got {mc.model_platform!r})")
        policy = mc.model_version_policy.WhichOneof("policy_choice")
        if policy == "latest" and mc.model_version_policy.latest.num_versions < 0:
            problems.append(f"{mc.name}: latest.num_versions must be >= 0")
        if policy == "specific" and not mc.model_version_policy.specific.versions:
            problems.append(f"{mc.name}: specific policy lists no versions")
        for label, version in mc.version_labels.items():
            served = mc.model_version_policy.specific.versions
            if labels and policy == "specific" and version not in served:
                problems.append(f"{mc.name}: label {label!r} points at version {version}, which "
                                "the specific policy does not serve")
    return problems


def write_text(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)  # atomic: a server polling the file never reads half of it
    return p


def _parse_versions(items: list[str]) -> dict[str, list[int]]:
    out = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        try:
            out[name] = [int(v) for v in rest.split(",") if v.strip()]
        except ValueError:
            out[name] = []
        if not sep or not name or not out[name]:
            raise UserError(f"--versions expects NAME=V1[,V2...], got {item!r}")
    return out


def _parse_labels(items: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for item in items or []:
        name, sep, rest = item.partition(":")
        label, sep2, version = rest.partition("=")
        if not (sep and sep2 and name and label and version.strip().isdigit()):
            raise UserError(f"--label expects NAME:LABEL=VERSION, got {item!r}")
        out.setdefault(name, {})[label] = int(version)
    return out


def _check_files(paths: list[str]) -> None:
    from serving.batching import BatchingParameters

    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"no such file: {p}")
        text = p.read_text(encoding="utf-8")
        if "model_config_list" in text or "custom_model_config" in text:
            config = parse_model_config(text, str(p))
            problems = check_model_config(config)
            if problems:
                raise UserError(f"{p}: " + "; ".join(problems))
            names = [mc.name for mc in config.model_config_list.config]
            print(f"{p}: valid ModelServerConfig, {len(names)} model(s): {', '.join(names)}")
        else:
            try:
                params = BatchingParameters.from_text(text, str(p))
            except ValueError as exc:
                raise UserError(str(exc)) from None
            print(f"{p}: valid BatchingParameters: max_batch_size={params.max_batch_size} "
                  f"batch_timeout_micros={params.batch_timeout_micros} "
                  f"max_enqueued_batches={params.max_enqueued_batches} "
                  f"num_batch_threads={params.num_batch_threads}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ksuite serving-config",
        description="Write TensorFlow Serving's models.config (ModelServerConfig text proto) "
                    "from the models exported under saved_models/, or check config files.",
        epilog="The default output, saved_models/models.config, is what serving/"
               "docker-compose.yml passes as --model_config_file (saved_models/ is mounted at "
               "/models). For the local server outside the container, write a copy with local "
               "paths: --base-path-prefix \"$PWD/saved_models\" -o /tmp/models.local.config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--saved-models", default=DEFAULT_SAVED_MODELS,
                   help="folder holding <model>/<version>/ SavedModels (default: %(default)s)")
    p.add_argument("-o", "--output", default=None,
                   help=f"file to write (default: {DEFAULT_OUTPUT}; '-' for stdout)")
    p.add_argument("--base-path-prefix", default=DEFAULT_PREFIX,
                   help="base_path written for model NAME is PREFIX/NAME, as the server sees it "
                        "(default: %(default)s, the container mount point)")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="only these exported models (default: all found)")
    p.add_argument("--policy", choices=("latest", "specific", "all"), default="latest",
                   help="model_version_policy (default: %(default)s)")
    p.add_argument("--num-versions", type=int, default=DEFAULT_NUM_VERSIONS,
                   help="latest: serve the newest N versions; specific without --versions: pin "
                        "the newest N on disk (default: %(default)s)")
    p.add_argument("--versions", action="append", metavar="NAME=V1[,V2]",
                   help="specific policy: versions to serve for NAME (repeatable)")
    p.add_argument("--label", action="append", metavar="NAME:LABEL=VERSION",
                   help="version label, e.g. mnist_mlp:stable=3 (repeatable; overrides the "
                        "automatic stable/canary labels)")
    p.add_argument("--no-auto-labels", action="store_true",
                   help="do not add stable (previous) / canary (newest) labels")
    p.add_argument("--example", action="store_true",
                   help="write the documentation example for the models exported under "
                        "--saved-models (or the names the caller of main() passes) instead "
                        "(no labels: TF Serving refuses labels on versions it has not loaded)")
    p.add_argument("--check", nargs="+", metavar="FILE",
                   help="parse and check models.config / batching.config files, then exit")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None, model_names=None) -> int:
    """``ksuite serving-config``; ``model_names`` are the names ``--example`` lists (default:
    the model folders under ``--saved-models``)."""
    args = build_parser().parse_args(argv)
    if args.check:
        _check_files(args.check)
        return 0
    if args.example:
        if model_names is None:
            model_names = list(discover_models(args.saved_models))
        config = example_model_config(model_names)
        header = (
            "TensorFlow Serving model config (ModelServerConfig text proto): documentation example "
            "for every app's model,\ngenerated by `python -m serving.config --example`. "
            "mnist_mlp shows a canary rollout (specific versions,\nstable/canary labels); the "
            "others serve their newest two versions (latest policy).\n"
            "The deployment uses saved_models/models.config instead, generated by `ksuite "
            "serving-config` from\nthe models actually exported: TF Serving waits for every "
            "listed model, and refuses labels\non versions it has not loaded.")
    else:
        models = discover_models(args.saved_models)
        if args.models:
            missing = [m for m in args.models if m not in models]
            if missing:
                raise UserError(f"not exported under {args.saved_models}: {', '.join(missing)}")
            models = {k: v for k, v in models.items() if k in args.models}
        if not models:
            raise UserError(f"no exported models under {args.saved_models} "
                            "(expected <name>/<integer version>/saved_model.pb)")
        config = build_model_config(
            models, base_path_prefix=args.base_path_prefix, policy=args.policy,
            num_versions=args.num_versions, specific=_parse_versions(args.versions),
            labels=_parse_labels(args.label), auto_label=not args.no_auto_labels)
        header = (f"Generated by `ksuite serving-config` from {args.saved_models}/ "
                  f"({', '.join(f'{k}: {v}' for k, v in models.items())}).\n"
                  "Regenerate after exporting; the server re-reads it every "
                  "--model_config_file_poll_wait_seconds.")
    problems = check_model_config(config)
    if problems:
        raise UserError("; ".join(problems))
    text = config_to_text(config, header)
    if args.output == "-" or (args.example and args.output is None):
        sys.stdout.write(text)
        return 0
    out = write_text(args.output or DEFAULT_OUTPUT, text)
    print(f"wrote {out} ({len(config.model_config_list.config)} model(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
