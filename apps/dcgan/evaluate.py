"""Sample quality of a generator, measured with a classifier trained on the same dataset.

    python -m apps.dcgan.evaluate --dataset mnist                       # classifier + ceiling
    python -m apps.dcgan.evaluate --model saved_models/dcgan/1          # an exported generator

- **Classifier-based Inception Score** (Salimans et al. 2016, with a dataset classifier in place
  of Inception): IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the samples.
  High when each sample is confidently one class and the classes are balanced; at most the
  number of classes (10).
- **Fréchet distance** (Heusel et al. 2017, "FID" with Inception features) between Gaussians
  fitted to the classifier's penultimate-layer features of generated and of real test images:
  ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).
- **The ceiling**: the same two numbers for 10,000 real *training* images against the real test
  images -- what a generator that reproduced the data distribution would score.

The classifier is a small CNN (keras-io "Simple MNIST convnet": two conv 3x3 + max-pool blocks,
dropout 0.5, with a 128-unit penultimate "features" layer as in Keras' examples/mnist_cnn.py),
trained once with the suite's shared callbacks (early stopping, Algorithm 7.1, on validation
accuracy) and cached with its test accuracy. The cache is keyed by the classifier's settings:
one folder per (dataset, epochs, seed, training-image limit) under ``--classifier-dir`` (default
``runs/dcgan_classifier/``), e.g. ``mnist-epochs12-seed42``, so a run with other settings
trains its own and never finds another's. It trains on the whole training set whatever the
GAN's ``--limit``, unless ``--classifier-limit N`` asks for the first N images (quick checks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from shared.errors import UserError, exit_on_user_error

CLASSIFIER_DIR = Path("runs") / "dcgan_classifier"
WEIGHTS = "classifier.weights.h5"
RECORD = "classifier.json"
EVAL_SAMPLES = 10_000  # the issue: 10,000 generated vs 10,000 real test images
CLASSIFIER_EPOCHS = 12  # keras examples/mnist_cnn.py: epochs = 12
BATCH = 500


# ----------------------------------------------------------------------------------------------
# The metrics (pure NumPy; unit-tested)
# ----------------------------------------------------------------------------------------------


def entropy_terms(probs: np.ndarray, eps: float = 1e-12) -> dict:
    """The two halves of the Inception Score, log IS = H(y) - E_x H(y|x) (in nats):
    ``marginal_entropy`` H(p(y)), at most log(classes) when the samples cover the classes evenly
    (a low value means missing or over-represented classes), and ``conditional_entropy``
    E_x H(p(y|x)), 0 when the classifier is sure of every sample (a high value means ambiguous,
    malformed samples). They tell which of the two keeps a score down."""
    per_sample = sample_entropies(probs, eps)  # checks the shape
    p_y = np.asarray(probs, dtype=np.float64).mean(axis=0)
    return {"marginal_entropy": float(-np.sum(p_y * np.log(p_y + eps))),
            "conditional_entropy": float(per_sample.mean())}


def sample_entropies(probs: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """H(p(y|x)) of each sample [n] (nats): 0 for a sample the classifier is sure of, log(10)
    for one it cannot tell apart from any class."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"probs must be [n, classes] with n > 0, got shape {probs.shape}")
    return -np.sum(probs * np.log(probs + eps), axis=1)


# A sample is "unsure" when the classifier gives its most likely class less than this
# probability: the share of such samples is the plain-words reading of E H(y|x).
UNSURE_BELOW = 0.9


def unsure_fraction(probs: np.ndarray) -> float:
    """The fraction of samples whose most likely class has probability < ``UNSURE_BELOW``."""
    return float((np.asarray(probs).max(axis=1) < UNSURE_BELOW).mean())


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for class probabilities ``probs`` [n, classes]: since p(y)
    is the mean of p(y|x), the mean KL is H(y) - E_x H(y|x) (``entropy_terms``)."""
    return _score_of(entropy_terms(probs, eps))


def _score_of(terms: dict) -> float:
    return float(np.exp(terms["marginal_entropy"] - terms["conditional_entropy"]))


def _class_stats(probs) -> dict:
    """The Inception Score and its two entropy terms, the terms computed once."""
    terms = entropy_terms(probs)
    return {"inception_score": _score_of(terms), **terms}


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [n, d].

    Tr((S_1 S_2)^(1/2)) is computed as the trace of (S_1^(1/2) S_2 S_1^(1/2))^(1/2), a symmetric
    positive semi-definite matrix with the same eigenvalues as S_1 S_2, through ``eigh`` -- no
    complex round-off from a general matrix square root, even when some features are constant
    (dead ReLUs make covariances singular)."""
    f1 = np.asarray(features_1, dtype=np.float64)
    f2 = np.asarray(features_2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"need two feature sets [n >= 2, d] of equal d, got {f1.shape} and "
                         f"{f2.shape}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root1 = _sqrt_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross)
    return max(fd, 0.0)  # exact 0 for identical sets up to round-off


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------


def build_classifier(image_shape=(28, 28, 1), num_classes: int = 10):
    """Raw pixels (0..255) -> class probabilities; the layer ``features`` is the penultimate
    one whose activations the Fréchet distance compares."""
    import keras

    inputs = keras.Input(image_shape, name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv_1")(x)  # keras-io mnist_convnet
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv_2")(x)  # keras-io mnist_convnet
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)  # keras-io mnist_convnet
    x = keras.layers.Dense(128, activation="relu", name="features")(x)  # keras mnist_cnn.py
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="dcgan_classifier")


def classifier_dir(dataset: str, epochs: int = CLASSIFIER_EPOCHS, seed: int = 42,
                   limit: int | None = None, root=None) -> Path:
    """The cache folder of one classifier setting: ``<root>/<dataset>-epochs<E>-seed<S>``, with
    ``-limit<N>`` for one trained on the first N images."""
    name = f"{dataset}-epochs{epochs}-seed{seed}" + ("" if limit is None else f"-limit{limit}")
    return (Path(root) if root else CLASSIFIER_DIR) / name


def _validation_size(n: int) -> int:
    return min(5000, max(10, n // 10))  # the usual 55,000 / 5,000 split


def cached_classifier(dataset, x_train, y_train, x_test, y_test, epochs=CLASSIFIER_EPOCHS,
                      seed=42, limit=None, root=None, verbose: int = 2):
    """The classifier of this setting (its cache entry under ``root``): loaded, or trained on
    the first ``limit`` training images (all by default) and cached. Returns (model, record)."""
    n = limit or len(x_train)
    return load_or_train_classifier(x_train[:n], y_train[:n], x_test, y_test,
                                    classifier_dir(dataset, epochs, seed, limit, root), epochs,
                                    seed, verbose)


def _pixels_dataset(x, y=None, batch=128, shuffle=False, seed=0):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")) if y is not None else x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    cast = (lambda a, b: (tf.cast(a, tf.float32), b)) if y is not None else (
        lambda a: tf.cast(a, tf.float32))
    return ds.batch(batch).map(cast).prefetch(tf.data.AUTOTUNE)


def train_classifier(x_train, y_train, x_test, y_test, folder, epochs: int = CLASSIFIER_EPOCHS,
                     seed: int = 42, verbose: int = 2):
    """Train the classifier with the shared callbacks and cache it in ``folder`` (weights and a
    record with its test accuracy, each written atomically). Returns (model, record)."""
    import keras

    from shared import callbacks as cb
    from shared.data import train_val_split
    from shared.io import atomic_write_json
    from shared.optim import OptimizerConfig, make_optimizer

    keras.utils.set_random_seed(seed)  # the same classifier whatever ran before in the process
    val = _validation_size(len(x_train))
    (x_tr, y_tr), (x_val, y_val) = train_val_split(x_train, y_train, val, seed)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    model = build_classifier(x_train.shape[1:], num_classes)
    # keras-io mnist_convnet: Adam at 1e-3, through the suite's one optimizer factory
    model.compile(make_optimizer(OptimizerConfig("adam", 1e-3)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    early = cb.EarlyStopping(monitor="val_accuracy", patience=3, restore_best=True, verbose=0)
    throughput = cb.Throughput(128)
    print(f"classifier: training on {len(x_tr)} images for up to {epochs} epochs "
          f"(cached in {folder})")
    model.fit(_pixels_dataset(x_tr, y_tr, 128, shuffle=True, seed=seed),  # batch 128 (keras-io)
              validation_data=_pixels_dataset(x_val, y_val, 500), epochs=epochs,
              callbacks=[early, cb.TerminateOnNaN(), throughput], verbose=verbose)
    test = model.evaluate(_pixels_dataset(x_test, y_test, 500), return_dict=True, verbose=0)
    record = {"test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
              "best_epoch": early.best_epoch, "epochs": epochs, "train_images": len(x_tr),
              "seed": seed, "image_shape": list(x_train.shape[1:]), "num_classes": num_classes,
              "examples_per_sec": throughput.history[-1] if throughput.history else None}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp.weights.h5"
    model.save_weights(str(tmp))
    os.replace(tmp, folder / WEIGHTS)
    atomic_write_json(folder / RECORD, record)
    print(f"classifier: test accuracy {record['test_accuracy']:.4f}")
    return model, record


def load_or_train_classifier(x_train, y_train, x_test, y_test, folder,
                             epochs: int = CLASSIFIER_EPOCHS, seed: int = 42, verbose: int = 2):
    """The classifier cached in ``folder`` if it was trained with these settings (image shape,
    epochs, seed, number of training images), else a newly trained one written over it: a
    classifier trained otherwise is another instrument, never used in silence, and never a
    reason to stop a run. Returns (model, record)."""
    folder = Path(folder)
    weights, record_path = folder / WEIGHTS, folder / RECORD
    if weights.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        wanted = {"image_shape": list(x_train.shape[1:]), "epochs": epochs, "seed": seed,
                  "train_images": len(x_train) - _validation_size(len(x_train))}
        differ = [f"{key} {record.get(key)} (asked for {value})"
                  for key, value in wanted.items() if record.get(key) != value]
        if not differ:
            model = build_classifier(x_train.shape[1:], int(record.get("num_classes", 10)))
            try:
                model.load_weights(str(weights))
                print(f"classifier: cached in {folder}, test accuracy "
                      f"{record['test_accuracy']:.4f}")
                return model, record
            except ValueError as exc:
                differ = [f"unreadable weights ({exc})"]
        print(f"classifier: the one in {folder} has {', '.join(differ)}; training anew")
    return train_classifier(x_train, y_train, x_test, y_test, folder, epochs, seed, verbose)


class Scorer:
    """The classifier's probabilities and penultimate features for uint8 images, with the
    real test images' features computed once: all of them, or a seeded random ``n`` -- not the
    first ``n``, since MNIST's first 5,000 test digits are the cleaner half (LeCun et al.)."""

    def __init__(self, classifier, x_test, n: int = EVAL_SAMPLES, seed: int = 0):
        import keras

        self.model = keras.Model(classifier.input,
                                 [classifier.get_layer("features").output, classifier.output])
        self.n = min(n, len(x_test))
        pick = np.sort(np.random.default_rng(seed).permutation(len(x_test))[: self.n])
        self.test_features, self.test_probs = self.features(x_test[pick])

    def features(self, images_uint8):
        feats, probs = [], []
        for i in range(0, len(images_uint8), BATCH):
            f, p = self.model(images_uint8[i:i + BATCH].astype("float32"), training=False)
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)

    def score(self, images_uint8, class_fractions: bool = False) -> dict:
        """IS, FD and the IS's two entropy terms; with ``class_fractions``, also the fraction
        of the images the classifier assigns to each class (argmax) and ``unsure_fraction``."""
        return self.score_outputs(*self.features(images_uint8), class_fractions)

    def score_outputs(self, feats, probs, class_fractions: bool = False) -> dict:
        """``score`` from the classifier's outputs for the images (``features``)."""
        out = {**_class_stats(probs),
               "frechet_distance": frechet_distance(feats, self.test_features)}
        if class_fractions:
            counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
            out["class_fractions"] = (counts / len(probs)).round(4).tolist()
            out["unsure_fraction"] = unsure_fraction(probs)
        return out

    def ceiling(self, x_train, seed: int = 0) -> dict:
        """Real training images (a seeded random n of them) against the real test images."""
        pick = np.random.default_rng(seed).permutation(len(x_train))[: self.n]
        real = self.score(x_train[np.sort(pick)])
        return {"real_train_inception_score": real["inception_score"],
                "real_train_frechet_distance": real["frechet_distance"],
                "real_test_unsure_fraction": unsure_fraction(self.test_probs),
                **{f"real_test_{k}": v for k, v in _class_stats(self.test_probs).items()}}


def latents(n: int, latent_dim: int, seed: int) -> np.ndarray:
    """n latent vectors from N(0, I), float32, drawn by a seeded NumPy generator."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype("float32")


def generate(generator_fn, z: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """uint8 images ``generator_fn(latent float32) -> uint8 images`` of the latent vectors z,
    in batches."""
    return np.concatenate([np.asarray(generator_fn(z[i: i + batch]))
                           for i in range(0, len(z), batch)])


def code_label_accuracy(codes: np.ndarray, probs: np.ndarray) -> float:
    """[AC] The fraction of samples the classifier puts in the class their code asks for."""
    codes = np.asarray(codes)
    return float(np.mean(np.asarray(probs).argmax(axis=1) == codes)) if len(codes) else 0.0


def sample_quality(generator_fn, latent_dim, scorer: Scorer, x_train, seed: int = 0,
                   figure=None, classes: int = 0) -> dict:
    """IS and FD of n generated images, the ceiling, and the ratios the issue's targets use.
    ``figure``: a PNG path for the samples the classifier is least sure of, beside random ones
    (``progress.confidence_grid``) -- what a low E H(y|x) is made of. ``classes`` > 0 (AC-GAN):
    also ``code_label_accuracy``."""
    z = latents(scorer.n, latent_dim, seed)
    images = generate(generator_fn, z)
    feats, probs = scorer.features(images)
    out = scorer.score_outputs(feats, probs, class_fractions=True)
    if classes:
        out["code_label_accuracy"] = code_label_accuracy(z[:, :classes].argmax(axis=1), probs)
    if figure:
        from apps.dcgan.progress import confidence_grid

        confidence_grid(images, probs, figure, seed=seed)
    out.update(scorer.ceiling(x_train, seed))
    out["eval_samples"] = scorer.n
    ceiling_fd = out["real_train_frechet_distance"]
    out["frechet_ratio"] = out["frechet_distance"] / ceiling_fd if ceiling_fd > 0 else None
    return out


def summary(metrics: dict, run_dir) -> str:
    """The evaluation in a few lines: both scores against the real images', the IS's two
    entropy terms, AC-GAN's code accuracy, and where the least sure samples are."""
    m = metrics
    lines = [(f"Inception Score {m['inception_score']:.3f} (real train "
              f"{m['real_train_inception_score']:.3f}, real test "
              f"{m['real_test_inception_score']:.3f}); Fréchet distance "
              f"{m['frechet_distance']:.4f} (real train vs test "
              f"{m['real_train_frechet_distance']:.4f}, ratio "
              f"{m['frechet_ratio'] or float('nan'):.2f})"),
             (f"log IS = H(y) {m['marginal_entropy']:.3f} (real test "
              f"{m['real_test_marginal_entropy']:.3f}) - E H(y|x) "
              f"{m['conditional_entropy']:.3f} (real test "
              f"{m['real_test_conditional_entropy']:.3f}); samples per class "
              f"{m['class_fractions']}")]
    if "code_label_accuracy" in m:
        lines.append(f"AC-GAN: {m['code_label_accuracy']:.1%} of the samples are classified as "
                     "the class their code asks for")
    lines.append(f"classifier less than {UNSURE_BELOW:.0%} sure of {m['unsure_fraction']:.1%} "
                 f"of the samples (real test images: {m['real_test_unsure_fraction']:.1%}); the "
                 f"least sure are in {Path(run_dir) / 'samples_by_confidence.png'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line: the classifier and its ceiling, and an exported generator's score
# ----------------------------------------------------------------------------------------------


@exit_on_user_error
def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m apps.dcgan.evaluate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "fashion_mnist", "cifar10"),
                        default="mnist")
    parser.add_argument("--model", default=None,
                        help="an exported generator SavedModel folder (saved_models/dcgan/N)")
    parser.add_argument("--classifier-dir", default=None,
                        help=f"root of the classifier cache, one folder per setting (default "
                             f"{CLASSIFIER_DIR})")
    parser.add_argument("--classifier-epochs", type=int, default=CLASSIFIER_EPOCHS,
                        help=f"maximum epochs (keras mnist_cnn.py: {CLASSIFIER_EPOCHS})")
    parser.add_argument("--classifier-limit", type=int, default=None,
                        help="train the classifier on the first N training images only")
    parser.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--figure", default=None,
                        help="with --model: a PNG of the samples the classifier is least sure "
                             "of, beside random ones")
    args = parser.parse_args(argv)
    if args.figure and not args.model:
        parser.error("--figure needs --model (it shows generated samples)")
    if args.eval_samples < 2:
        parser.error("--eval-samples must be at least 2")
    if args.model and not (Path(args.model) / "saved_model.pb").exists():
        raise UserError(f"{args.model} is not a SavedModel folder (no saved_model.pb)")

    from apps.dcgan import data

    (x_train, y_train), (x_test, y_test) = data.load(args.dataset)
    classifier, record = cached_classifier(args.dataset, x_train, y_train, x_test, y_test,
                                           args.classifier_epochs, args.seed,
                                           args.classifier_limit, args.classifier_dir)
    scorer = Scorer(classifier, x_test, args.eval_samples)
    result = {"classifier_test_accuracy": record["test_accuracy"],
              **scorer.ceiling(x_train, args.seed)}
    if args.model:
        import tensorflow as tf

        serve = tf.saved_model.load(args.model).signatures["serving_default"]
        latent_dim = serve.structured_input_signature[1]["latent"].shape[-1]
        meta = Path(args.model) / "assets.extra" / "ksuite.json"
        classes = json.loads(meta.read_text()).get("categories", 0) if meta.exists() else 0
        quality = sample_quality(lambda z: serve(latent=tf.constant(z))["images"].numpy(),
                                 latent_dim, scorer, x_train, args.seed, figure=args.figure,
                                 classes=classes)
        result.update(quality)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
