"""CIFAR-10 app: real batch files (md5, split sizes), augmentation only in training, VGG16 stage
parameter counts, VGG16 weight loading through a stand-in file, export round trips, the model
presets, the stages' epoch bound, the app's own error paths (the generic ones are
tests/test_apps_contract.py's).

Everything trains on tiny subsets (``--limit``, ``--test-limit``); nothing here is a benchmark.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

VGG16_NOTOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture(scope="module")
def cifar(mirror):
    """The verified batch folder and the default split (loaded once for the module)."""
    from apps.cifar_cnn import data

    folder = data.batches_folder()
    return folder, data.load()


# ----------------------------------------------------------------------------------- data


def test_batches_md5_verified_and_bad_files_refused(cifar, tmp_path):
    from apps.cifar_cnn import data
    from shared.errors import UserError

    folder, _ = cifar
    data.verify_batches(folder)  # the real files pass
    bad = tmp_path / "cifar-10-batches-py"
    bad.mkdir()
    for name in data.BATCH_MD5:
        os.symlink(folder / name, bad / name)
    (bad / "data_batch_3").unlink()
    (bad / "data_batch_3").write_bytes(b"not a cifar batch")
    with pytest.raises(UserError, match=r"data_batch_3 has md5 .* expected 54ebc095"):
        data.verify_batches(bad)
    (bad / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        data.verify_batches(bad)


def test_split_sizes_and_classes(cifar):
    from apps.cifar_cnn import data

    _, ((x_tr, y_tr), (x_val, y_val), (x_test, y_test), names) = cifar
    assert x_tr.shape == (45000, 32, 32, 3) and x_tr.dtype == np.uint8
    assert x_val.shape == (5000, 32, 32, 3) and len(y_val) == 5000
    assert x_test.shape == (10000, 32, 32, 3) and len(y_test) == 10000
    assert names == data.CLASS_NAMES and names[0] == "airplane" and names[9] == "truck"
    # 5,000 images per class in the training batches, 1,000 in the test batch.
    np.testing.assert_array_equal(np.bincount(np.concatenate([y_tr, y_val])), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    # Few-label transfer subset: relabelled 0..3, exactly 500 per class, test = all 4,000.
    xs, ys = data.select_classes(x_tr, y_tr, data.VEHICLES, 500)
    xt, yt = data.select_classes(x_test, y_test, data.VEHICLES)
    assert xs.shape == (2000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(ys), [500] * 4)
    assert len(xt) == 4000 and set(np.unique(yt)) == {0, 1, 2, 3}


def test_augmentation_only_in_training():
    """Training batches are augmented (and differ from the pixels); the evaluation pipeline and
    the model's inference are deterministic and untouched."""
    from apps.cifar_cnn import data
    from apps.cifar_cnn.model import build_keras_classic

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 64).astype("uint8")
    eval_batches = [b for b, _ in data.make_dataset(x, y, 32)]
    again = [b for b, _ in data.make_dataset(x, y, 32)]
    np.testing.assert_array_equal(np.concatenate(eval_batches), x.astype("float32"))
    np.testing.assert_array_equal(np.concatenate(again), x.astype("float32"))
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # as Run.start does: seeded == repeatable
    train = data.make_dataset(x, y, 64, training=True, augment=True, seed=1)
    (a, _), = list(train)
    (a2, _), = list(train)  # the next epoch: new shuffle, new transforms
    (b, _), = list(data.make_dataset(x, y, 64, training=True, augment=True, seed=1))
    assert a.shape == (64, 32, 32, 3) and a.dtype == "float32"
    assert not np.allclose(np.sort(np.asarray(a).ravel()), np.sort(x.astype("float32").ravel()))
    assert not np.array_equal(np.asarray(a), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same seed, same batch
    plain = data.make_dataset(x, y, 64, training=True, augment=False, seed=1)
    (p, _), = list(plain)
    np.testing.assert_array_equal(np.sort(np.asarray(p).ravel()), np.sort(x.ravel()))
    model = build_keras_classic()
    assert not any("random" in type(layer).__name__.lower() for layer in model.layers)
    xf = x[:8].astype("float32")
    np.testing.assert_array_equal(np.asarray(model(xf, training=False)),
                                  np.asarray(model(xf, training=False)))


# ----------------------------------------------------------------------------------- VGG16


def test_vgg16_parameter_counts_per_stage():
    from apps.cifar_cnn import model as M

    base = M.vgg16_base(32)
    model = M.build_vgg16_transfer(base, M.build_head(10))
    M.set_trainable_blocks(base, 0)
    # Stage 1: the 14,714,688 VGG16 weights frozen; head 512*256+256 + 256*10+10 = 133,898.
    assert M.count_params(model) == {"trainable": 133_898, "non_trainable": 14_714_688}
    M.set_trainable_blocks(base, 1)
    # Stage 2: block 5 (3 x (3*3*512*512 + 512) = 7,079,424) trainable as well.
    assert M.count_params(model) == {"trainable": 133_898 + 7_079_424,
                                     "non_trainable": 14_714_688 - 7_079_424}
    M.set_trainable_blocks(base, 5)
    assert M.count_params(model) == {"trainable": 14_714_688 + 133_898, "non_trainable": 0}
    # The resize lives inside the model; the counts do not depend on it.
    big = M.build_vgg16_transfer(M.vgg16_base(64), M.build_head(4), 64)
    assert big.get_layer("resize").output.shape[1:3] == (64, 64)


def write_stand_in(path):
    """Random VGG16 notop weights in the legacy Keras .h5 layout of Keras' ImageNet file
    (layer_names / weight_names attributes), as keras.applications saved it."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    from apps.cifar_cnn.model import vgg16_base

    base = vgg16_base(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, base)
    return base


def test_vgg16_weights_from_a_stand_in_file(tmp_path, monkeypatch):
    from apps.cifar_cnn import data
    from apps.cifar_cnn.model import vgg16_base
    from shared.errors import UserError

    mirror = tmp_path / "mirror"
    stand_in = write_stand_in(mirror / VGG16_NOTOP)
    # --weights PATH: same name and layout as the ImageNet file -> loaded weight for weight.
    path = data.vgg16_weights_path(str(mirror / VGG16_NOTOP))
    fresh = vgg16_base(32)
    data.load_vgg16_weights(fresh, path)
    for a, b in zip(stand_in.weights, fresh.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A larger input size takes the same file (convolutions do not depend on it).
    data.load_vgg16_weights(vgg16_base(64), path)
    # --weights imagenet goes through the registry, which refuses a file whose md5 is not Keras'.
    monkeypatch.setenv("KSUITE_DATA_DIR", str(mirror))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(UserError, match="checksum mismatch"):
        data.vgg16_weights_path("imagenet")
    assert not (tmp_path / "keras_home" / "models" / VGG16_NOTOP).exists()
    # Missing offline: one line that says so and suggests --weights.
    monkeypatch.setenv("KSUITE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="not available here.*--weights none or --weights PATH"):
        data.vgg16_weights_path("imagenet")
    # A file of another architecture is one clear error too.
    other = tmp_path / "other.weights.h5"
    from apps.cifar_cnn.model import build_keras_classic

    build_keras_classic().save_weights(str(other))
    with pytest.raises(UserError, match="could not load VGG16 weights"):
        data.load_vgg16_weights(vgg16_base(32), other)


# ----------------------------------------------------------------------------------- end to end


def test_keras_classic_trains_and_exports(tmp_path, cifar):
    """The first scratch CNN (--model keras_classic): a few real steps reduce the loss; the run
    directory has its records and the augmented grid; the SavedModel takes raw uint8 and returns
    probabilities, ids and class names that match the Keras model."""
    import pandas as pd
    import tensorflow as tf

    from apps.cifar_cnn import train

    record = train.main(["--model", "keras_classic", "--epochs", "2", "--limit", "1200",
                         "--test-limit", "200",
                         "--batch-size", "64", "--learning-rate", "3e-3",
                         "--run-dir", str(tmp_path / "run"), "--export-dir",
                         str(tmp_path / "models"), "--verbose", "0"])
    run = tmp_path / "run"
    for name in ("config.json", "history.csv", "metrics.json", "augmented_batch.png"):
        assert (run / name).is_file(), name
    hist = pd.read_csv(run / "history.csv")
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    assert record["params"] == {"trainable": 1_342_186, "non_trainable": 1_920}
    assert record["flops_per_example"]["forward_macs"] > 30e6
    assert record["examples_per_sec"] > 0

    loaded = tf.saved_model.load(record["export"])
    sig = loaded.signatures["serving_default"]
    (spec,) = sig.structured_input_signature[1].values()
    assert spec.name == "images" and spec.dtype == tf.uint8
    assert spec.shape.as_list() == [None, 32, 32, 3]
    assert set(sig.structured_outputs) == {"probabilities", "class_ids", "class_names"}
    _, (_, _, (x_test, _), names) = cifar
    out = sig(images=tf.constant(x_test[:16]))
    probs = out["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    ids = out["class_ids"].numpy()
    np.testing.assert_array_equal(ids, probs.argmax(axis=1))
    assert [n.decode() for n in out["class_names"].numpy()] == [names[i] for i in ids]
    meta = json.loads((tmp_path / "models" / "cifar_cnn" / "1" / "assets.extra" /
                       "ksuite.json").read_text())
    assert meta["class_names"] == list(names)


VGG_COMMON = ["--limit", "400", "--test-limit", "40", "--epochs", "1", "--batch-size", "16",
              "--steps-per-epoch", "2", "--verbose", "0"]


def test_vgg16_transfer_stages_and_export(tmp_path):
    """--weights PATH (a .weights.h5 as --pretrain writes it) -> fast-path stage 1 -> stage 2 on
    the vehicle classes; parameter counts per stage in the record; the export names the four
    vehicle classes."""
    import tensorflow as tf

    from apps.cifar_cnn import train
    from apps.cifar_cnn.model import vgg16_base
    from apps.cifar_cnn.transfer import save_base_weights

    weights = save_base_weights(vgg16_base(32), tmp_path / "base.weights.h5")
    record = train.main(["--model", "vgg16", "--weights", str(weights), "--classes", "vehicles",
                         "--finetune-epochs", "1", "--run-dir", str(tmp_path / "tl"),
                         "--export-dir", str(tmp_path / "m"), *VGG_COMMON])
    head = 512 * 256 + 256 + 256 * 4 + 4
    assert record["params"]["stage1"] == {"trainable": head, "non_trainable": 14_714_688}
    assert record["params"]["stage2"] == {"trainable": 7_079_424 + head,
                                          "non_trainable": 14_714_688 - 7_079_424}
    assert {"stage1_accuracy", "accuracy"} <= set(record["metrics"])
    assert record["feature_extraction"]["images_per_sec"] > 0
    assert not (tmp_path / "tl" / "stage1" / "done.weights.h5").exists()
    # One metrics.json, the returned record; each stage has its own and a summary in it.
    on_disk = json.loads((tmp_path / "tl" / "metrics.json").read_text())
    assert on_disk["params"] == record["params"] and on_disk["metrics"] == record["metrics"]
    assert set(on_disk["stages"]) == {"stage1", "stage2"}
    for stage in ("stage1", "stage2"):
        assert on_disk["stages"][stage]["epochs_run"] == 1
        assert (tmp_path / "tl" / stage / "metrics.json").is_file()
    sig = tf.saved_model.load(record["export"]).signatures["serving_default"]
    out = sig(images=tf.zeros([3, 32, 32, 3], tf.uint8))
    assert out["probabilities"].shape == (3, 4)
    assert {n.decode() for n in out["class_names"].numpy()} <= {"airplane", "automobile",
                                                                "ship", "truck"}


@pytest.mark.slow
def test_vgg16_pretrain_saves_weights_usable_as_path(tmp_path):
    from apps.cifar_cnn import train

    weights = tmp_path / "animals.weights.h5"
    pre = train.main(["--model", "vgg16", "--pretrain", "--save-weights", str(weights),
                      "--run-dir", str(tmp_path / "pre"), "--export-dir", str(tmp_path / "m"),
                      *VGG_COMMON])
    assert weights.is_file() and pre["saved_weights"] == str(weights)
    assert pre["params"]["all"]["non_trainable"] == 0 and "export" not in pre
    record = train.main(["--model", "vgg16", "--weights", str(weights), "--classes", "vehicles",
                         "--finetune-blocks", "0", "--run-dir", str(tmp_path / "tl"),
                         "--no-export", *VGG_COMMON])
    assert record["metrics"]["accuracy"] == record["metrics"]["stage1_accuracy"]


# ----------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, message", [
    (["--pretrain"], "--pretrain trains the VGG16 base"),
    (["--train-all"], "--train-all trains VGG16"),
    (["--model", "vgg16", "--image-size", "16"], "--image-size must be at least 32"),
    (["--model", "vgg16", "--finetune-blocks", "6"], "--finetune-blocks must be in 0..5"),
    (["--model", "vgg16", "--finetune-lr-factor", "2"], "--finetune-lr-factor must be in"),
    (["--model", "vgg16", "--pretrain", "--save-weights", "w.h5"], "must end in .weights.h5"),
    (["--model", "vgg16", "--weights", "/nonexistent/w.h5"], "no such file"),
])
def test_bad_settings_give_one_clear_error(args, message, tmp_path, capsys):
    from apps.cifar_cnn import train

    with pytest.raises(SystemExit) as exc:
        train.main([*args, "--run-dir", str(tmp_path / "r"), "--no-export"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_imagenet_weights_offline_is_one_line(tmp_path, monkeypatch, capsys):
    """The default --model vgg16 --weights imagenet without the file: one line, exit 2."""
    from apps.cifar_cnn import train

    monkeypatch.setenv("KSUITE_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(SystemExit) as exc:
        train.main(["--model", "vgg16", "--run-dir", str(tmp_path / "r"), "--no-export"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert VGG16_NOTOP in err[0] and "--weights" in err[0]


@pytest.mark.parametrize("argv, expected", [
    (["--model", "keras_classic"], dict(epochs=60, batch_size=128, optimizer="adam",
                                        learning_rate=1e-3, schedule="cosine", patience=10,
                                        classes="all", export=True)),
    (["--model", "vgg16"], dict(epochs=20, batch_size=32, optimizer="rmsprop",
                                learning_rate=1e-3, schedule="constant", patience=5,
                                weights="imagenet", train_all=False)),
    (["--model", "vgg16", "--train-all"], dict(epochs=30, batch_size=64, optimizer="adam",
                                               learning_rate=1e-4, schedule="cosine",
                                               classes="all", weights="imagenet")),
    (["--model", "vgg16", "--pretrain"], dict(epochs=30, learning_rate=1e-4, train_all=True,
                                              classes="animals", weights="none", export=False)),
    (["--model", "vgg16", "--pretrain", "--epochs", "3", "--classes", "all"],
     dict(epochs=3, learning_rate=1e-4, classes="all")),
])
def test_model_presets_are_parser_defaults(argv, expected):
    """Each model's defaults are the parser's (so --help prints them); flags still win."""
    from apps.cifar_cnn.train import APP

    args = APP.parse(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.monitor == "val_accuracy"


def test_help_prints_the_chosen_models_defaults(capsys):
    from apps.cifar_cnn.train import APP

    with pytest.raises(SystemExit):
        APP.parse(["--model", "vgg16", "--pretrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "maximum number of epochs (default: 30)" in out
    assert "initial learning rate (default: 0.0001)" in out


def test_names_follow_the_model():
    from apps.cifar_cnn.train import APP

    assert APP.model_names == ("cifar_cnn", "cifar_vgg16")
    for argv, run, export in (([], "cifar_cnn", "cifar_cnn"),
                              (["--model", "vgg16"], "cifar_vgg16", "cifar_vgg16"),
                              (["--model", "vgg16", "--pretrain"], "cifar_vgg16_pretrain", None)):
        args = APP.parse(argv)
        assert APP.run_name(args) == run
        assert (APP.export_name(args) if args.export else None) == export


def test_epochs_bound_every_stage():
    """--epochs 1 is a one-epoch run in every stage (stage 2 defaulted to 10 before)."""
    from apps.cifar_cnn.train import APP
    from apps.cifar_cnn.transfer import stage2_epochs

    assert stage2_epochs(APP.parse(["--model", "vgg16", "--epochs", "1"])) == 1
    assert stage2_epochs(APP.parse(["--model", "vgg16"])) == 10  # the default: 20 and 10
    assert stage2_epochs(APP.parse(["--model", "vgg16", "--epochs", "5",
                                    "--finetune-epochs", "3"])) == 3


def test_transfer_benchmark_resume_reuses_finished_steps(tmp_path, monkeypatch):
    """benchmarks.cifar_transfer --resume: steps whose run directory holds metrics.json are not
    run again; the record has all three accuracies and every session's epoch time. Without
    --resume the old run directories are deleted first."""
    import json
    import subprocess

    from benchmarks import cifar_transfer
    from benchmarks import run as bench_run

    root = tmp_path / "runs" / "cifar_transfer-tiny"
    steps = {"pretrain": ({"accuracy": 0.8}, {"saved_weights": str(tmp_path / "w.h5")}),
             "scratch": ({"accuracy": 0.60}, {}),
             "transfer": ({"accuracy": 0.70, "stage1_accuracy": 0.65}, {})}
    for name, (metrics, extra) in steps.items():
        (root / name / "train_all").mkdir(parents=True)
        (root / name / "metrics.json").write_text(json.dumps({"metrics": metrics, **extra}))
        (root / name / "train_all" / "history.csv").write_text("epoch,epoch_seconds\n0,10\n1,5\n")

    real_run = subprocess.run

    def no_training(cmd, *args, **kwargs):
        if "apps.cifar_cnn.train" in cmd:
            raise AssertionError(f"a finished step was run again: {cmd}")
        return real_run(cmd, *args, **kwargs)  # git rev-parse for the record

    monkeypatch.setattr(subprocess, "run", no_training)
    monkeypatch.setattr(bench_run, "RESULTS", tmp_path / "results")
    record = cifar_transfer.main(["--budget", "tiny", "--runs-dir", str(tmp_path / "runs"),
                                  "--resume"])
    assert record["accuracy"] == {"scratch": 0.60, "frozen": 0.65, "fine_tuned": 0.70}
    assert record["fine_tuned_minus_scratch"] == pytest.approx(0.10)
    assert record["target_met"] is None  # tiny is a smoke run
    assert record["epoch_seconds_total"] == 45.0 and record["resumed"] is True
    assert record["weights"] == str(tmp_path / "w.h5")
    lines = (tmp_path / "results" / "cifar_transfer.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["accuracy"]["fine_tuned"] == 0.70

    # Without --resume the comparison starts over: the old directories go, the app is run.
    with pytest.raises(AssertionError, match="run again"):
        cifar_transfer.main(["--budget", "tiny", "--runs-dir", str(tmp_path / "runs")])
    assert not (root / "scratch").exists()
