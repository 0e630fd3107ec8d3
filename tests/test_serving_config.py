"""models.config / batching.config generation and the deployment files (no TensorFlow needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format

pytest.importorskip("tensorflow_serving")
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from serving.batching import BatchingParameters, batching_parameters_message  # noqa: E402
from serving.config import (  # noqa: E402
    build_model_config,
    check_model_config,
    config_to_text,
    discover_models,
    example_model_config,
    main,
)
from shared.errors import UserError  # noqa: E402

SERVING = Path(__file__).resolve().parents[1] / "serving"


def fake_saved_models(root: Path, layout: dict[str, list[str]]) -> Path:
    for name, folders in layout.items():
        for folder in folders:
            d = root / name / folder
            d.mkdir(parents=True)
            (d / "saved_model.pb").write_bytes(b"")
    return root


def parse(text: str):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    return config


@pytest.fixture
def saved(tmp_path):
    root = fake_saved_models(tmp_path / "saved_models", {
        "mnist_mlp": ["1", "2", "00000003"],
        "dcgan": ["7"],
    })
    (root / "mnist_mlp" / "4").mkdir()  # no saved_model.pb: not a version
    (root / "mnist_mlp" / "tmp").mkdir()
    fake_saved_models(root, {".staging": ["1"]})
    (root / "README.md").write_text("x")
    return root


def test_discover_models_reads_integer_and_zero_padded_versions(saved):
    assert discover_models(saved) == {"dcgan": [7], "mnist_mlp": [1, 2, 3]}


def test_latest_policy_with_stable_and_canary_round_trips(saved):
    config = build_model_config(discover_models(saved), base_path_prefix="/models")
    text = config_to_text(config, "generated\nfor a test")
    assert text.startswith("# generated\n# for a test\nmodel_config_list {")
    back = parse(text)
    assert back == config
    by_name = {mc.name: mc for mc in back.model_config_list.config}
    mnist = by_name["mnist_mlp"]
    assert mnist.base_path == "/models/mnist_mlp"
    assert mnist.model_platform == "tensorflow"
    assert mnist.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert mnist.model_version_policy.latest.num_versions == 2
    assert dict(mnist.version_labels) == {"stable": 2, "canary": 3}
    assert dict(by_name["dcgan"].version_labels) == {"stable": 7, "canary": 7}
    assert check_model_config(back) == []


def test_specific_versions_and_explicit_labels(saved):
    config = build_model_config(
        discover_models(saved), base_path_prefix="/srv/models", policy="specific",
        specific={"mnist_mlp": [1, 3]}, labels={"mnist_mlp": {"stable": 1, "canary": 3}})
    back = parse(config_to_text(config))
    mnist = next(mc for mc in back.model_config_list.config if mc.name == "mnist_mlp")
    assert list(mnist.model_version_policy.specific.versions) == [1, 3]
    assert dict(mnist.version_labels) == {"stable": 1, "canary": 3}
    dcgan = next(mc for mc in back.model_config_list.config if mc.name == "dcgan")
    assert list(dcgan.model_version_policy.specific.versions) == [7]  # pinned newest on disk
    assert dcgan.base_path == "/srv/models/dcgan"


def test_all_policy_and_no_labels(saved):
    config = build_model_config(discover_models(saved), policy="all", auto_label=False)
    for mc in parse(config_to_text(config)).model_config_list.config:
        assert mc.model_version_policy.WhichOneof("policy_choice") == "all"
        assert not mc.version_labels


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels={"mnist_mlp": {"canary": 1}}), "only accepts labels on loaded versions"),
    (dict(policy="specific", specific={"mnist_mlp": [9]}), "not found on disk"),
    (dict(specific={"nope": [1]}), "not among the exported models"),
    (dict(labels={"mnist_mlp": {"3": 3}}), "cannot be a number"),
])
def test_invalid_requests_are_refused(saved, kwargs, message):
    with pytest.raises(UserError, match=message):
        build_model_config(discover_models(saved), **kwargs)


def test_check_flags_what_tf_serving_rejects():
    config = parse("""
        model_config_list {
          config { name: "a" base_path: "/m/a" model_platform: "tensorflow" }
          config { name: "a" base_path: "" model_platform: "pytorch" }
        }""")
    problems = " | ".join(check_model_config(config))
    assert "multiple times" in problems and "base_path is empty" in problems
    assert "model_platform must be 'tensorflow'" in problems
    relative = parse("""
        model_config_list {
          config { name: "a" base_path: "saved_models/a" model_platform: "tensorflow" }
          config { name: "b" base_path: "gs://bucket/b" model_platform: "tensorflow" }
        }""")
    assert check_model_config(relative) == [
        "Expected model a to have an absolute path or URI; got base_path()=saved_models/a "
        "(TensorFlow Serving requires absolute base paths)"]


def test_check_refuses_relative_base_paths(tmp_path, capsys):
    cfg = tmp_path / "models.config"
    cfg.write_text('model_config_list { config { name: "a" base_path: "models/a" '
                   'model_platform: "tensorflow" } }')
    with pytest.raises(SystemExit) as e:
        main(["--check", str(cfg)])
    assert e.value.code == 2
    assert "absolute path or URI" in capsys.readouterr().err


def test_example_takes_the_model_names(tmp_path, capsys):
    config = example_model_config(["mnist_mlp", "dcgan"])
    assert [mc.name for mc in config.model_config_list.config] == ["mnist_mlp", "dcgan"]
    (tmp_path / "word2vec" / "1").mkdir(parents=True)
    (tmp_path / "word2vec" / "1" / "saved_model.pb").write_bytes(b"")
    assert main(["--example", "--saved-models", str(tmp_path), "-o", "-"]) == 0
    assert 'name: "word2vec"' in capsys.readouterr().out
    assert main(["--example", "-o", "-"], model_names=["a", "b"]) == 0
    out = capsys.readouterr().out
    assert 'name: "a"' in out and 'name: "b"' in out and "word2vec" not in out


def test_cli_writes_and_checks(saved, tmp_path, capsys):
    out = tmp_path / "models.config"
    assert main(["--saved-models", str(saved), "-o", str(out), "--policy", "specific",
                 "--versions", "mnist_mlp=2,3", "--label", "mnist_mlp:stable=2",
                 "--label", "mnist_mlp:canary=3", "--models", "mnist_mlp"]) == 0
    config = parse(out.read_text())
    assert [mc.name for mc in config.model_config_list.config] == ["mnist_mlp"]
    assert dict(config.model_config_list.config[0].version_labels) == {"stable": 2, "canary": 3}
    assert main(["--check", str(out)]) == 0
    assert "valid ModelServerConfig, 1 model(s): mnist_mlp" in capsys.readouterr().out
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { nam: 'x' } }")
    with pytest.raises(SystemExit) as e:
        main(["--check", str(bad)])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--saved-models", str(tmp_path / "missing")])
    assert "no such folder" in capsys.readouterr().err


def test_committed_example_config_lists_every_app():
    text = (SERVING / "models.config").read_text()
    config = parse(text)
    names = [mc.name for mc in config.model_config_list.config]
    # regenerate: python -m serving.config --example -o serving/models.config
    assert config == example_model_config(names)
    apps = pytest.importorskip("apps")
    served = {n for app in apps.registry().values() for n in app.model_names}
    assert served <= set(names)  # every served model the app registry declares is listed
    assert check_model_config(config) == []
    mnist = config.model_config_list.config[0]
    assert dict(mnist.version_labels) == {"stable": 1, "canary": 2}
    assert list(mnist.model_version_policy.specific.versions) == [1, 2]
    for mc in config.model_config_list.config[1:]:
        assert mc.base_path == f"/models/{mc.name}"
        assert mc.model_version_policy.latest.num_versions == 2


def test_batching_config_is_a_valid_batching_parameters_proto():
    text = (SERVING / "batching.config").read_text()
    msg = batching_parameters_message()()
    text_format.Parse(text, msg)  # the field names tensorflow_model_server reads
    assert msg.max_batch_size.value >= 1 and msg.num_batch_threads.value >= 1
    params = BatchingParameters.from_text(text)
    assert params.max_batch_size == msg.max_batch_size.value
    assert params.batch_timeout_micros == msg.batch_timeout_micros.value
    assert BatchingParameters.from_text(params.to_text()) == params
    with pytest.raises(ValueError, match="not a valid BatchingParameters"):
        BatchingParameters.from_text("max_batch_size: 3")  # a wrapper: needs { value: 3 }
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        BatchingParameters.from_text("max_batch_size { value: 8 } allowed_batch_sizes: 4")


def test_compose_file_runs_the_official_image_with_real_flags():
    from serving.server import build_parser

    text = (SERVING / "docker-compose.yml").read_text()
    assert re.search(r"image:\s*tensorflow/serving:", text)
    assert '"127.0.0.1:8500:8500"' in text and '"127.0.0.1:8501:8501"' in text
    assert "../saved_models:/models" in text
    flags = dict(re.findall(r"^\s*- --(\w+)=(\S+)", text, re.M))
    known = {a.dest for a in build_parser()._actions}  # tensorflow_model_server's flag names
    assert set(flags) <= known, set(flags) - known
    assert flags["model_config_file"] == "/models/models.config"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    assert flags["enable_batching"] == "true"
    mounted = re.search(r"\./batching\.config:(\S+?)(:ro)?$", text, re.M).group(1)
    assert flags["batching_parameters_file"] == mounted
