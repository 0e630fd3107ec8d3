"""Distribution for every app (mnist_mlp is in test_distributed.py): each app trains a few steps
on small data under

(a) ``--strategy one_device`` with global batch B and ``--strategy mirrored --devices 2`` with
    ``--batch-size B/2`` (the flag is per replica), and
(b) ``--strategy multi_worker`` with two local worker processes (TF_CONFIG per process), each
    with one replica, ``--batch-size B/2``: the same global batch as (a).

Where the two computations are the same (same global batches, same gradient, no per-replica
randomness) the logged training loss must agree within a stated tolerance; where they are not,
a comment says why and the test asserts what is meaningful instead. Each run is a child process:
logical devices and collective ops can only be configured before TensorFlow initializes.

Tolerances. float32 sums run in a different order (two partial gradients all-reduced vs one batch;
a ring all-reduce vs reduction to one device), nothing else. Measured differences after these few
steps: word2vec, shakespeare_lstm, sentiment_gru and the DQN agree to ~1e-7 relative (single vs
mirrored) and multi_worker to ~1e-6 (DCGAN: mirrored vs multi_worker). ``RTOL = 1e-4`` leaves
two orders of magnitude for round-off on other CPUs and still fails on a real bug: training on the
wrong global batch (the per-replica flag taken as global) moves sentiment_gru's loss by 6% and
word2vec's by up to 14% when its summed gradient is averaged over replicas instead (as a halved
learning rate does, measured).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tests.helpers import read_history, read_json, run_module, run_modules, run_workers

RTOL = 1e-4  # see the module docstring
# Where the computation is *not* the same (per-replica batch-norm statistics, dropout masks or
# latent vectors), the two runs still train the same model from the same initial weights on the
# same batches: after these few steps their losses differ by 0.5-3% (measured). 15% only bounds
# gross errors (a replica diverging, a loss off by the replica count); it proves no equality.
LOOSE = 0.15
TIMEOUT = 300  # seconds per run (~10-40 s each on 2 shared cores)


# ------------------------------------------------------------------------------ the apps


def _tiny_corpus(path):
    """word2vec: 1,500 sentences over a 20-word vocabulary (as in test_word2vec.py)."""
    rng = random.Random(0)
    subjects = ["king", "queen", "prince", "princess", "man", "woman", "boy", "girl"]
    verbs = ["rules", "loves", "sees", "visits", "guards"]
    objects = ["kingdom", "castle", "city", "river", "forest", "garden"]
    path.write_text(" ".join(f"The {rng.choice(subjects)} {rng.choice(verbs)} the "
                             f"{rng.choice(objects)}." for _ in range(1500)), encoding="utf-8")
    return path


# app -> (module, flags shared by every run of it, global batch B). Small data, a few steps, no
# export, silent; dropout 0 where the app has the flag (masks are drawn per replica).
APPS = {
    "cifar_scratch": ("apps.cifar_cnn.train", [
        "--epochs", "2", "--steps-per-epoch", "2", "--limit", "200", "--val-size", "50",
        "--test-limit", "32", "--no-augment"], 32),
    "cifar_vgg16": ("apps.cifar_cnn.train", [
        "--model", "vgg16", "--weights", "none", "--epochs", "1", "--steps-per-epoch", "2",
        "--limit", "200", "--test-limit", "32", "--finetune-epochs", "1"], 16),
    # --steps-per-execution 1: one device would otherwise run whole executions of 8 steps (96
    # steps per 89-step epoch; under several replicas the app uses 1 anyway). The corpus comes
    # from the test (--corpus is added in _corpus_flags).
    "word2vec": ("apps.word2vec.train", [
        "--min-count", "2", "--dim", "16", "--epochs", "2", "--sample", "1e-3",
        "--steps-per-execution", "1"], 64),
    # --precision float32: the app's CPU default is mixed_bfloat16, whose rounding would magnify
    # the replicas' summation-order differences past RTOL.
    "shakespeare_lstm": ("apps.shakespeare_lstm.train", [
        "--mode", "stateless", "--limit", "20000", "--units", "32", "--embed-dim", "16",
        "--seq-len", "50", "--epochs", "2", "--steps-per-epoch", "5", "--dropout", "0",
        "--sample-chars", "0", "--precision", "float32"], 16),
    # Reviews cut to 8 words all fall into one length bucket, so every batch is full except the
    # last (360 = 11 x 32 + 8), which splits evenly: each replica's mean is half the global mean,
    # as Keras' loss scaling assumes (uneven partial batches would weight examples differently).
    # Learning rate 1e-2 so that the loss moves in two epochs (0.69 -> 0.60). No adversarial
    # training: its step length is scaled by the embeddings' spread in each replica's own half
    # batch (as batch norm's statistics are), so two replicas are not the same computation. No
    # language model first: its sampled softmax draws its candidates afresh in each replica.
    "sentiment_gru": ("apps.sentiment_gru.train", [
        "--limit", "400", "--val-size", "40", "--test-limit", "64", "--max-tokens", "2000",
        "--sequence-length", "8", "--embedding-dim", "16", "--units", "8",
        "--no-bidirectional", "--dropout", "0", "--embedding-dropout", "0", "--pooling", "last",
        "--embeddings", "random", "--learning-rate", "1e-2", "--epochs", "2",
        "--adversarial", "0", "--pretrain", "none"], 32),
    # dcgan.torch's smaller layout (--no-refine --disc-layers 2): with the default one at width
    # 64, Adam's first steps grew the round-off past RTOL by the second epoch (3.5e-4, measured).
    "dcgan": ("apps.dcgan.train", [
        "--epochs", "2", "--steps-per-epoch", "3", "--limit", "512", "--no-refine",
        "--disc-layers", "2", "--no-eval"], 32),
    # CartPole-v1: 400 env steps, 75 gradient steps on 3-step returns after a 100-step warm-up.
    "dqn": ("apps.dqn.train", [
        "--steps", "400", "--epochs", "2", "--learning-starts", "100", "--train-frequency", "4",
        "--n-step", "3",
        "--gradient-steps", "1", "--target-update", "50", "--hidden", "32", "32",
        "--eval-episodes", "2", "--final-eval-episodes", "3", "--no-gif"], 32),
}


def _cifar10():
    from shared.data import cifar10_folder

    cifar10_folder()


def _aclimdb():
    from shared.data import extract_archive, fetch

    extract_archive(fetch("aclImdb"), "aclImdb")


# Archives an app extracts into the (session's) Keras cache on first use.
ARCHIVES = {"cifar_scratch": _cifar10, "cifar_vgg16": _cifar10, "sentiment_gru": _aclimdb}
COMMON = ["--no-export", "--verbose", "0"]
SINGLE = ["--strategy", "one_device"]
MIRRORED = ["--strategy", "mirrored", "--devices", "2"]
MULTI_WORKER = ["--strategy", "multi_worker"]


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    """train(app, *strategies) -> their run directories. Each (app, strategy) runs once per
    module, so the mirrored run serves both the one-device and the multi-worker comparison; the
    one-device and mirrored runs of an app run side by side (two processes)."""
    root = tmp_path_factory.mktemp("distributed-apps")
    corpus = _tiny_corpus(root / "tiny.txt")
    done: dict = {}

    def command(app, strategy):
        module, flags, global_batch = APPS[app]
        if app == "word2vec":
            flags = [*flags, "--corpus", corpus]
        per_replica = global_batch if strategy == "one_device" else global_batch // 2
        strategy_flags = {"one_device": SINGLE, "mirrored": MIRRORED,
                          "multi_worker": MULTI_WORKER}[strategy]
        return module, [*flags, *COMMON, *strategy_flags, "--batch-size", per_replica,
                        "--run-dir", root / f"{app}-{strategy}"]

    def run(app: str, *strategies: str):
        todo = [s for s in strategies if (app, s) not in done]
        if todo and app in ARCHIVES:  # extract once, before two processes would both do it
            ARCHIVES[app]()
        local = [command(app, s) for s in todo if s != "multi_worker"]
        if local:
            run_modules(*local, timeout=TIMEOUT)
        if "multi_worker" in todo:
            module, args = command(app, "multi_worker")
            run_workers(module, *args, timeout=TIMEOUT)
        for s in todo:
            done[app, s] = root / f"{app}-{s}"
        dirs = [done[app, s] for s in strategies]
        return dirs if len(dirs) > 1 else dirs[0]

    return run


def _check_replicas(run_dir, app, replicas):
    """The run record: ``replicas`` replicas, and the same global batch B either way."""
    config = read_json(run_dir / "config.json")
    assert config["replicas"] == replicas, config
    assert config["global_batch_size"] == APPS[app][2], config


def _close(a, b, columns, rtol, where=""):
    for column in columns:
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        assert len(x) == len(y) and np.all(np.isfinite(x)), (where, column, x, y)
        np.testing.assert_allclose(y, x, rtol=rtol, err_msg=f"{where} {column}")


def _quality(metrics: dict) -> dict:
    """The metrics without the timings (which differ from worker to worker)."""
    return {k: v for k, v in metrics.items() if "seconds" not in k and "per_sec" not in k}


def _multi_worker_records(run_dir):
    """Both workers finished: the chief's record in the run dir, worker 1's in workers/1/."""
    chief, other = run_dir, run_dir / "workers" / "1"
    for d in (chief, other):
        assert (d / "metrics.json").is_file(), d
    config = read_json(chief / "config.json")
    assert config["strategy"] == "CollectiveAllReduceStrategy" and config["replicas"] == 2
    return read_json(chief / "metrics.json"), read_json(other / "metrics.json")


# ------------------------------------------------------------------------------ (a) mirrored


@pytest.mark.parametrize("app", ["word2vec", "shakespeare_lstm", "sentiment_gru", "dqn"])
def test_mirrored_matches_one_device(app, train, mirror):
    """The same computation on one device and on two replicas: the training loss agrees.
    (The DQN: one actor and one replay memory either way; each replica takes half of every
    sampled batch. Its trajectory stays the same as long as the weights agree, which the loss
    comparison checks.)"""
    single, mirrored = train(app, "one_device", "mirrored")
    _check_replicas(single, app, 1)
    _check_replicas(mirrored, app, 2)
    a, b = read_history(single), read_history(mirrored)
    _close(a, b, ["loss"], RTOL, app)
    assert a["loss"].iloc[-1] < a["loss"].iloc[0] or app == "dqn"  # it trained (TD loss: no)
    if app == "shakespeare_lstm":
        # Not val_loss: with two replicas the app keeps whole validation batches only (a last
        # partial batch would split unevenly), so its validation set is slightly smaller.
        assert np.all(np.isfinite(b["val_loss"]))
    if app == "sentiment_gru":
        _close(a, b, ["val_loss", "accuracy"], RTOL, app)
    if app == "dqn":
        _close(a, b, ["env_steps", "episodes"], 0, app)  # the same single actor


@pytest.mark.parametrize("app", ["cifar_scratch", "cifar_vgg16", "dcgan"])
def test_mirrored_trains_where_replicas_differ(app, train, mirror):
    """Not the same computation, so no equality: the scratch CNN (airbench94's) normalizes each
    replica's half batch with its own batch-norm statistics; VGG16's head has
    dropout 0.5 (the app has no dropout flag); the DCGAN draws its latent vectors per replica
    (tf.random.Generator in the strategy scope) and has batch norm in both players. Asserted
    instead: two replicas and the same global batch, finite losses of the same size as on one
    device (LOOSE), every stage trained and evaluated."""
    single, mirrored = train(app, "one_device", "mirrored")
    _check_replicas(single, app, 1)
    _check_replicas(mirrored, app, 2)
    stages = {"cifar_vgg16": ["stage1", "stage2"]}.get(app, [""])
    columns = ["d_loss", "g_loss"] if app == "dcgan" else ["loss", "val_loss"]
    for stage in stages:
        a, b = read_history(single / stage), read_history(mirrored / stage)
        for column in columns:
            x, y = a[column].to_numpy(float), b[column].to_numpy(float)
            assert len(x) == len(y) and np.all(np.isfinite(y)), (stage, column, y)
            assert np.all(np.abs(y - x) <= LOOSE * np.abs(x)), (stage, column, x, y)
    metrics = read_json(mirrored / "metrics.json")
    if app == "dcgan":
        # The discriminator learned to tell real from generated images in those 6 steps.
        last = read_history(mirrored).iloc[-1]
        assert last["d_real"] > last["d_fake"], last
    else:
        assert math.isfinite(metrics["metrics"]["loss"]) and metrics["replicas"] == 2


def test_shakespeare_stateful_refuses_several_replicas(tmp_path, mirror):
    """Stateful TBPTT keeps the LSTM state in per-row variables: one replica only."""
    module, flags, _ = APPS["shakespeare_lstm"]
    flags = [f for f in flags if f not in ("--mode", "stateless")]
    proc = run_module(module, *flags, *COMMON, *MIRRORED, "--mode", "stateful", "--batch-size",
                      "8", "--run-dir", tmp_path / "r", check=False, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--mode stateful" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------ (b) multi_worker


@pytest.mark.parametrize("app", [
    "word2vec", "dcgan",
    # Heavier (30-40 s a cluster on 2 shared cores): outside the CI budget.
    pytest.param("shakespeare_lstm", marks=pytest.mark.slow),
    pytest.param("sentiment_gru", marks=pytest.mark.slow),
    pytest.param("cifar_scratch", marks=pytest.mark.slow),
    pytest.param("cifar_vgg16", marks=pytest.mark.slow),
])
def test_multi_worker_matches_mirrored(app, train, mirror):
    """Two worker processes with one replica each compute what one process with two replicas
    computes: the same global batches split the same way (each worker keeps its share of every
    batch, AutoShardPolicy.DATA), the same per-replica randomness (dropout seeds, the GAN's
    per-replica noise streams are keyed by replica id), only a ring all-reduce instead of a
    reduction to one device. Both workers finish; the chief writes the run record."""
    run_dir = train(app, "multi_worker")
    chief, other = _multi_worker_records(run_dir)
    # Synchronous training: both workers hold the same model, so they measure the same.
    assert _quality(chief["metrics"]) == _quality(other["metrics"])
    mirrored = train(app, "mirrored")
    columns = ["d_loss", "g_loss"] if app == "dcgan" else ["loss"]
    for stage in {"cifar_vgg16": ["stage1", "stage2"]}.get(app, [""]):
        _close(read_history(mirrored / stage), read_history(run_dir / stage), columns, RTOL,
               f"{app} {stage}")


def test_multi_worker_dqn_actors_in_lockstep(train, mirror):
    """The DQN under multi_worker: each worker is an actor with its own environment and replay
    memory (seeded apart), the gradient steps are all-reduced in lockstep, the chief evaluates and
    every worker gets its result. So: both exit 0, the same number of env steps and periods, the
    same TD loss (all-reduced) and evaluation returns (broadcast) on both, but different training
    episodes (different actors). Not compared with the mirrored run: one actor there, two here."""
    run_dir = train("dqn", "multi_worker")
    chief, other = _multi_worker_records(run_dir)
    a, b = read_history(run_dir), read_history(run_dir / "workers" / "1")
    _close(a, b, ["loss", "q_mean"], 1e-6, "dqn workers")
    _close(a, b, ["eval_return", "env_steps"], 0, "dqn workers")
    assert not np.array_equal(a["train_return"].to_numpy(), b["train_return"].to_numpy())
    assert chief["metrics"]["eval_return"] == other["metrics"]["eval_return"]
    assert chief["metrics"]["env_steps"] == other["metrics"]["env_steps"] == 400
    assert (run_dir / "returns.png").is_file()  # the chief's record
    assert not (run_dir / "workers" / "1" / "returns.png").exists()
    # Every worker checkpointed its own memory during training and cleaned up at the end.
    assert not (run_dir / "workers" / "1" / "checkpoints").exists()
