"""sentiment_gru: raw reviews in, polarity out.

One small model is trained once per module on 2,700 real training reviews from the offline
mirror (first 40 words of each, a 16-unit GRU, 3 epochs: ~20 s of CPU) through the real command
line ``main()``, exported, and reloaded with ``tf.saved_model.load`` as TensorFlow Serving does.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from apps.sentiment_gru import data  # noqa: E402
from apps.sentiment_gru.model import build_classifier  # noqa: E402
from apps.sentiment_gru.train import APP, main  # noqa: E402
from shared.errors import UserError  # noqa: E402

POSITIVE = ("This movie was wonderful. Brilliant acting, a beautiful story, I loved every minute "
            "of it: a masterpiece, one of the best films I have ever seen.")
NEGATIVE = ("This movie was terrible. Awful acting, a boring story, I hated every minute of it: "
            "the worst film I have ever seen, a complete waste of time.")
LONG = " ".join(["the film goes on and on"] * 1667)  # 10,002 words
NON_ASCII = "Très bien ! 🎬 Ein großartiger Film, 素晴らしい映画 — «chef-d'œuvre» <br /><br />"
REVIEWS = [POSITIVE, NEGATIVE, "", LONG, NON_ASCII]

SMALL = ["--limit", "3000", "--val-size", "300", "--test-limit", "200", "--epochs", "3",
         "--patience", "3",
         "--no-bidirectional", "--units", "16", "--embedding-dim", "32",
         "--sequence-length", "40", "--max-tokens", "5000", "--batch-size", "32",
         "--learning-rate", "0.005", "--embeddings", "random", "--verbose", "0",
         "--adversarial", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mirror):
    root = tmp_path_factory.mktemp("sentiment_gru")
    record = main([*SMALL, "--run-dir", str(root / "run"), "--export-dir", str(root / "export")])
    return record, root


@pytest.fixture(scope="module")
def serve(trained):
    record, _ = trained
    loaded = tf.saved_model.load(record["export"])
    return loaded.signatures["serving_default"]


# -- text standardization and the pipeline ----------------------------------------------------


def test_standardize_lowercases_strips_br_and_punctuation():
    out = data.standardize(tf.constant(["Great<br />MOVIE!! It's <br/>TRÈS bien."]))
    assert out.numpy()[0].decode() == "great movie its  très bien"


def test_bucketed_pipeline_keeps_every_review_once_and_pads_per_batch():
    texts = np.array([" ".join(["word"] * n) for n in range(1, 61)] + [""], dtype=object)
    labels = np.arange(len(texts)) % 2
    vec = data.make_vectorizer(texts, max_tokens=10, sequence_length=48)
    batches = list(data.make_dataset(vec, texts, labels, batch_size=8, shuffle=True, seed=1))
    seen = np.concatenate([(b[0].numpy() != 0).sum(axis=1) for b in batches])
    assert sorted(seen) == sorted([min(n, 48) for n in range(1, 61)] + [0])
    for ids, y in batches:  # padded to the batch's longest review (cut at 48), not to 48
        assert ids.shape[1] == max(1, int((ids.numpy() != 0).sum(axis=1).max()))
        assert ids.dtype == tf.int64 and y.dtype == tf.int32


# -- the model: masking really applies --------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_the_output(bidirectional):
    keras.utils.set_random_seed(0)
    model = build_classifier(50, 8, 6, bidirectional=bidirectional, dropout=0.5)
    review = [[5, 17, 3, 42, 8]]
    outputs = [model(np.array([r + [0] * pad for r in review]), training=False).numpy()
               for pad in (0, 3, 40)]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-6)
    # The check has teeth: the same weights without the mask do see the padding.
    rnn = model.get_layer("bidirectional_gru" if bidirectional else "gru")
    unmasked = keras.Sequential([keras.Input((None,), dtype="int64"),
                                 keras.layers.Embedding(50, 8, mask_zero=False), rnn,
                                 model.get_layer("p_positive")])  # the trained layers, shared
    unmasked.layers[0].set_weights(model.get_layer("embedding").get_weights())
    plain = [unmasked(np.array([r + [0] * pad for r in review]), training=False).numpy()
             for pad in (0, 40)]
    assert not np.allclose(plain[0], plain[1], atol=1e-4)


# -- train -> export -> reload -> raw reviews --------------------------------------------------


def test_training_run_record_and_loss_decreases(trained):
    record, root = trained
    assert record["metrics"]["test_reviews"] == 200
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert record["epochs_run"] == 3 and record["examples_per_sec"] > 0
    for f in ("config.json", "history.csv", "metrics.json", "learning_curves.png"):
        assert (root / "run" / f).exists(), f
    history = (root / "run" / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in history[1:]]
    assert losses[-1] < losses[0]
    meta = json.loads((root / "export" / "sentiment_gru" / "1" / "assets.extra" /
                       "ksuite.json").read_text())
    assert meta["app"] == "sentiment_gru" and meta["config"]["sequence_length"] == 40


def test_a_bfloat16_trained_classifier_is_served_in_float32():
    """Single reviews are [1, units] GRU steps, slower in bfloat16 (notes): the export serves a
    float32 copy holding exactly the trained weights."""
    from shared.app import Data
    from shared.precision import dtype_policy

    texts = np.array([POSITIVE, NEGATIVE, NON_ASCII], dtype=object)
    vec = data.make_vectorizer(texts, max_tokens=60, sequence_length=30)
    args = APP.parse(["--units", "8", "--embedding-dim", "4", "--embeddings", "random"])
    state = Data(vectorizer=vec, initial=None, lm=None)
    with dtype_policy("mixed_bfloat16"):
        trained = APP.build_model(args, state, run=None)
    served = APP._served(args, trained, state)
    assert trained.get_layer("embedding").compute_dtype == "bfloat16"
    assert {layer.compute_dtype for layer in served.layers if layer.weights} == {"float32"}
    for a, b in zip(trained.get_weights(), served.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    ids = vec(tf.constant(texts))
    np.testing.assert_allclose(served(ids).numpy(), trained(ids).numpy(), atol=0.02)
    assert APP._served(args, trained, state) is served  # built once for endpoints and tracking


def test_signature_takes_strings_and_names_its_outputs(serve):
    inputs = serve.structured_input_signature[1]
    assert list(inputs) == ["reviews"]
    assert inputs["reviews"].dtype == tf.string and inputs["reviews"].shape.as_list() == [None]
    outs = serve.structured_outputs
    assert outs["probability"].dtype == tf.float32 and outs["label"].dtype == tf.string


def test_raw_reviews_through_the_reloaded_savedmodel(serve):
    out = serve(reviews=tf.constant(REVIEWS))
    p, labels = out["probability"].numpy(), [s.decode() for s in out["label"].numpy()]
    assert p.shape == (5,) and np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert labels == ["positive" if x >= 0.5 else "negative" for x in p]
    assert labels[0] == "positive", p
    assert labels[1] == "negative", p


def test_long_review_is_cut_to_the_sequence_length_and_batching_does_not_matter(serve):
    first_40 = " ".join(LONG.split()[:40])
    alone = serve(reviews=tf.constant([LONG]))["probability"].numpy()
    cut = serve(reviews=tf.constant([first_40]))["probability"].numpy()
    batched = serve(reviews=tf.constant(REVIEWS))["probability"].numpy()
    np.testing.assert_allclose(alone, cut, atol=1e-6)
    # A short review batched with a long one is padded, and the mask hides the padding.
    short = serve(reviews=tf.constant([POSITIVE]))["probability"].numpy()
    np.testing.assert_allclose(batched[[0, 3]], np.concatenate([short, alone]), atol=1e-5)
    empty = serve(reviews=tf.constant([""]))["probability"].numpy()
    np.testing.assert_allclose(batched[2], empty[0], atol=1e-5)


def test_served_by_the_local_model_server(trained):
    pytest.importorskip("tensorflow_serving")
    server_mod = pytest.importorskip("serving.server")
    from serving.client import GrpcClient, RestClient

    record, root = trained
    server = server_mod.ModelServer(server_mod.ServerOptions(
        port=0, rest_api_port=0, model_name="sentiment_gru",
        model_base_path=str(root / "export" / "sentiment_gru"))).start()
    try:
        with RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=30, retries=0) as rest:
            rows = rest.predict("sentiment_gru", instances=REVIEWS)["predictions"]
        with GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=30, retries=0) as grpc:
            pred = grpc.predict("sentiment_gru", {"reviews": np.array(REVIEWS, dtype=object)})
    finally:
        server.stop()
    assert [r["label"] for r in rows[:2]] == ["positive", "negative"]
    direct = tf.saved_model.load(record["export"]).signatures["serving_default"](
        reviews=tf.constant(REVIEWS))
    np.testing.assert_allclose([r["probability"] for r in rows], direct["probability"].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(pred["probability"], direct["probability"].numpy(), atol=1e-5)
    assert [s.decode() for s in pred["label"][:2]] == ["positive", "negative"]


# -- errors a user can cause ------------------------------------------------------------------


def test_defaults():
    args = APP.parse([])
    assert (args.max_tokens, args.sequence_length, args.embedding_dim, args.units) == (
        30000, 1000, 128, 512)
    assert args.bidirectional and args.clipnorm == 1.0
    assert (args.epochs, args.schedule, args.monitor) == (4, "cosine", "val_accuracy")
    # All 25,000 training reviews, nothing held out, nothing to stop on (Algorithm 7.2).
    assert (args.adversarial, args.val_size, args.patience) == (5.0, 0, None)
    # The language model first (Dai & Le 2015), then the classifier's own recipe.
    assert (args.pretrain, args.fine_tune, args.lm_epochs) == ("lm", "all", 1)
    # After --pretrain lm the classifier trains with the default recipe on all 25,000 reviews;
    # ULMFiT's fine-tuning keeps its measured split for its early stopping.
    lm = APP.parse(["--pretrain", "lm"])
    assert (lm.val_size, lm.patience, lm.schedule, lm.epochs, lm.fine_tune) == (
        0, None, "cosine", 4, "all")
    ulmfit = APP.parse(["--pretrain", "lm", "--fine-tune", "ulmfit"])
    assert (ulmfit.val_size, ulmfit.patience, ulmfit.schedule, ulmfit.epochs) == (
        2500, 3, "slanted", 5)
    assert APP.parse(["--val-size", "2500", "--patience", "3"]).patience == 3
    assert APP.parse(["--no-bidirectional"]).bidirectional is False


@pytest.mark.parametrize("argv, message", [
    (["--dropout", "1.5"], "--dropout and --embedding-dropout must be in [0, 1)"),
    (["--embedding-dropout", "-0.1"], "--dropout and --embedding-dropout must be in [0, 1)"),
    (["--max-tokens", "2"], "--max-tokens must be at least 3"),
    (["--patience", "3"], "--patience watches the validation set: add --val-size N"),
    (["--val-size", "-1"], "--val-size"),
])
def test_settings_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_bad_data_dir_and_tiny_limit(tmp_path, capsys, mirror):
    (tmp_path / "aclImdb" / "train" / "neg").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main(["--data-dir", str(tmp_path / "aclImdb"), "--run-dir", str(tmp_path / "r1")])
    assert e.value.code == 2
    assert "train/pos not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--limit", "5", "--run-dir", str(tmp_path / "r2")])
    assert e.value.code == 2
    assert "--limit 5 is too small" in capsys.readouterr().err


def test_val_size_zero_trains_on_every_review_and_n_holds_out_the_last_n(tmp_path):
    for label in ("neg", "pos"):
        folder = tmp_path / "aclImdb" / "train" / label
        folder.mkdir(parents=True)
        for i in range(15):
            (folder / f"{i}_1.txt").write_text(f"{label} review number {i}")
    test = tmp_path / "aclImdb" / "test"
    for label in ("neg", "pos"):
        (test / label).mkdir(parents=True)
        (test / label / "0_1.txt").write_text(f"a {label} test review")
    root = tmp_path / "aclImdb"
    (x_all, y_all), (x_val, y_val), (x_test, _) = data.load(val_size=0, data_dir=root)
    assert len(x_all) == 30 and len(x_val) == len(y_val) == 0 and len(x_test) == 2
    (x_tr, _), (x_val, _), _ = data.load(val_size=5, data_dir=root)
    assert len(x_tr) == 25 and list(x_val) == list(x_all[-5:])  # same seeded order
    with pytest.raises(UserError, match="between 0 and 29"):
        data.load(val_size=30, data_dir=root)


@pytest.mark.parametrize("pooling", ["mean", "max", "meanmax"])
def test_pooling_is_masked(pooling):
    """--pooling mean/max/meanmax look only at the review's own steps: padding changes nothing
    (and the max does not pick a padded step's zero output)."""
    keras.utils.set_random_seed(1)
    model = build_classifier(50, 8, 4, bidirectional=True, dropout=0.0, pooling=pooling,
                             embedding_dropout=0.3)
    ids = np.array([[5, 7, 9, 0, 0, 0]], dtype="int64")
    short = model(ids[:, :3], training=False)
    padded = model(ids, training=False)
    np.testing.assert_allclose(np.asarray(short), np.asarray(padded), atol=1e-6)


def test_masked_pooling_ignores_padded_steps_and_empty_reviews():
    from apps.sentiment_gru.model import MaskedGlobalPooling1D

    x = np.array([[[-1.0, 2.0], [-3.0, 1.0], [0.0, 0.0]],
                  [[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]], dtype="float32")
    mask = np.array([[True, True, False], [False, False, False]])  # 2nd: an empty review
    top = MaskedGlobalPooling1D("max")(x, mask=mask)
    mean = MaskedGlobalPooling1D("mean")(x, mask=mask)
    np.testing.assert_allclose(np.asarray(top), [[-1.0, 2.0], [0.0, 0.0]])  # not 0 from padding
    np.testing.assert_allclose(np.asarray(mean), [[-2.0, 1.5], [0.0, 0.0]])  # no NaN


def test_pretrained_embeddings_file_and_matrix(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 2\ngood 3 4\nbad -1 0\nodd 1\n")  # 'odd' is malformed: skipped
    vectors = data.read_word2vec_text(path)
    assert set(vectors) == {"good", "bad"}
    matrix, covered = data.embedding_matrix(["", "[UNK]", "good", "plot", "bad"], vectors, 2)
    np.testing.assert_allclose(matrix[2], [0.6, 0.8])  # unit norm
    np.testing.assert_allclose(matrix[4], [-1.0, 0.0])
    assert np.all(np.abs(matrix[[0, 1, 3]]) <= 0.05)  # Keras' default uniform(-0.05, 0.05)
    assert covered == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="2 dimensions but --embedding-dim is 8"):
        data.embedding_matrix(["", "[UNK]", "good"], vectors, 8)
    with pytest.raises(UserError, match="no such file"):
        data.read_word2vec_text(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("not a header\n")
    with pytest.raises(UserError, match="not word2vec text format"):
        data.read_word2vec_text(tmp_path / "bad.txt")


def test_write_corpus_is_what_the_vectorizer_sees(tmp_path):
    path = data.write_corpus(np.array([b"Great<br />MOVIE!!", b"Bad,  bad."]), tmp_path / "c.txt")
    assert path.read_text() == "great movie\nbad bad\n"
