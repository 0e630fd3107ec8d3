"""Data validation, the first stage of ``ksuite pipeline``: look at the data an app is about to
train on and stop, with a clear report, when it is not what the app expects.

Each app's check loads its data exactly as its train script would (same flags) and runs three
kinds of checks, the ones TFX's ExampleValidator makes against a schema:

- **schema**: shapes, dtypes, split sizes, that train and test agree;
- **value ranges**: pixels in 0..255 and not blank, labels in 0..K-1, finite rewards, text that is
  non-empty UTF-8, characters and words of the held-out text mostly in the training vocabulary;
- **label balance**: every class present, and the rarest class at least ``min_balance`` times as
  frequent as the commonest (default 0.5: a 2:1 skew. MNIST's is 0.80, CIFAR-10's and IMDB's 1.0;
  a corrupted or truncated file usually drops whole classes, far below that).

    ksuite pipeline mnist_mlp --validate-only
    ksuite pipeline dqn --validate-only -- --env ALE/Pong-v5
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from shared.errors import UserError

MIN_BALANCE = 0.5  # rarest/commonest class count; see the module docstring


class DataValidationError(UserError):
    """The data failed validation: the pipeline stops before training."""

    exit_code = 4


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    app: str
    data: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def text(self) -> str:
        lines = [f"data validation: {self.app} on {self.data}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        lines.append(f"  {len(self.checks) - len(self.failed)}/{len(self.checks)} checks passed")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"app": self.app, "data": self.data, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


# -- generic checks ----------------------------------------------------------------------------


def check_images(report: Report, split: str, x: np.ndarray, shape: tuple[int, ...],
                 min_count: int = 1) -> None:
    """uint8 images of the given per-image ``shape``, in 0..255 and not blank."""
    report.add(f"{split} images: schema", x.dtype == np.uint8 and tuple(x.shape[1:]) == shape,
               f"dtype {x.dtype}, shape {tuple(x.shape)} (expected uint8 [N, "
               f"{', '.join(map(str, shape))}])")
    report.add(f"{split} images: count", len(x) >= min_count, f"{len(x)} (need >= {min_count})")
    if len(x) == 0:
        return
    lo, hi = int(x.min()), int(x.max())
    per_image_max = x.reshape(len(x), -1).max(axis=1)
    blank = float(np.mean(per_image_max == 0))
    report.add(f"{split} images: value range", 0 <= lo and hi <= 255 and hi > lo and blank < 0.01,
               f"pixels {lo}..{hi}, {blank:.2%} blank images (need a non-constant 0..255 range, "
               "< 1% blank)")


def check_labels(report: Report, split: str, y: np.ndarray, num_classes: int,
                 min_balance: float = MIN_BALANCE, n: int | None = None) -> None:
    """Integer labels in 0..K-1, one per example, every class present, balance >= min_balance."""
    y = np.asarray(y).reshape(-1)
    if n is not None:
        report.add(f"{split} labels: schema", len(y) == n, f"{len(y)} labels for {n} examples")
    if not np.issubdtype(y.dtype, np.integer):
        report.add(f"{split} labels: value range", False, f"dtype {y.dtype} is not an integer type")
        return
    if len(y) == 0:
        report.add(f"{split} labels: value range", False, "no labels")
        return
    lo, hi = int(y.min()), int(y.max())
    report.add(f"{split} labels: value range", 0 <= lo and hi < num_classes,
               f"labels {lo}..{hi} (expected 0..{num_classes - 1})")
    counts = np.bincount(np.clip(y, 0, num_classes - 1), minlength=num_classes)[:num_classes]
    missing = [int(c) for c in np.flatnonzero(counts == 0)]
    balance = float(counts.min() / counts.max()) if counts.max() else 0.0
    report.add(f"{split} labels: balance", not missing and balance >= min_balance,
               f"per-class counts {counts.min()}..{counts.max()}, rarest/commonest {balance:.2f} "
               f"(need >= {min_balance})" + (f"; classes missing: {missing}" if missing else ""))


def check_texts(report: Report, split: str, texts: np.ndarray, min_count: int = 1) -> None:
    """Raw reviews: UTF-8, mostly non-empty."""
    report.add(f"{split} texts: count", len(texts) >= min_count, f"{len(texts)} (need >= {min_count})")
    if len(texts) == 0:
        return
    bad_utf8 = 0
    lengths = np.empty(len(texts), np.int64)
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError:
                bad_utf8 += 1
                t = t.decode("utf-8", "replace")
        lengths[i] = len(str(t).split())
    empty = float(np.mean(lengths == 0))
    report.add(f"{split} texts: value range", bad_utf8 == 0 and empty < 0.01,
               f"{bad_utf8} not UTF-8, {empty:.2%} empty, median {int(np.median(lengths))} words "
               "(need valid UTF-8 and < 1% empty)")


# -- one check per app -------------------------------------------------------------------------


def _image_app(report: Report, train, test, shape, num_classes, min_train=20) -> None:
    (x_train, y_train), (x_test, y_test) = train, test
    check_images(report, "train", x_train, shape, min_train)
    check_labels(report, "train", y_train, num_classes, n=len(x_train))
    check_images(report, "test", x_test, shape)
    check_labels(report, "test", y_test, num_classes, n=len(x_test))


def validate_mnist_mlp(args) -> Report:
    from shared.data import load_image_dataset

    report = Report("mnist_mlp", args.dataset)
    train, test = load_image_dataset(args.dataset, getattr(args, "data_source", "auto"))
    if args.limit:
        train = (train[0][: args.limit], train[1][: args.limit])
    _image_app(report, train, test, (28, 28), 10)
    return report


def validate_dcgan(args) -> Report:
    from apps.dcgan.data import load

    report = Report("dcgan", args.dataset)
    train, test = load(args.dataset, args.limit, getattr(args, "data_source", "auto"))
    shape = (32, 32, 3) if args.dataset == "cifar10" else (28, 28, 1)
    _image_app(report, train, test, shape, 10)
    return report


def validate_cifar_cnn(args) -> Report:
    from shared.data import load_cifar10

    report = Report("cifar_cnn", "cifar10")
    train, test = load_cifar10()
    if args.limit:
        train = (train[0][: args.limit], train[1][: args.limit])
    _image_app(report, train, test, (32, 32, 3), 10)
    return report


def validate_sentiment_gru(args) -> Report:
    from apps.sentiment_gru.data import dataset_dir, read_reviews

    root = dataset_dir(getattr(args, "data_dir", None))
    report = Report("sentiment_gru", str(root))
    for split in ("train", "test"):
        x, y = read_reviews(root / split, args.seed, shuffle=split == "train")
        if split == "train" and args.limit:  # the first N of the seeded shuffle, as data.load
            x, y = x[: args.limit], y[: args.limit]
        check_texts(report, split, x, min_count=20 if split == "train" else 1)
        check_labels(report, split, y, 2, n=len(x))
    return report


def validate_shakespeare_lstm(args) -> Report:
    from apps.shakespeare_lstm.data import read_text, split

    report = Report("shakespeare_lstm", "tiny-shakespeare")
    text = read_text(None, args.limit)
    report.add("text: count", len(text) >= 400, f"{len(text):,} characters (need >= 400)")
    train, val, test = split(text)
    vocab = set(train)
    report.add("text: vocabulary", 2 <= len(vocab) <= 256,
               f"{len(vocab)} distinct characters in the training text (expected 2..256)")
    held_out = val + test
    oov = sum(ch not in vocab for ch in held_out) / max(1, len(held_out))
    report.add("held-out text: value range", oov < 0.01,
               f"{oov:.3%} of validation/test characters not in the training vocabulary "
               "(need < 1%)")
    return report


def validate_word2vec(args) -> Report:
    from apps.word2vec.data import resolve_corpus, read_text, tokenize

    path, name = resolve_corpus(args.dataset, args.corpus)
    report = Report("word2vec", name)
    tokens = tokenize(read_text(path), args.limit)
    need = 2 * args.window + 2
    report.add("corpus: count", len(tokens) >= need, f"{len(tokens):,} tokens (need >= {need})")
    counts = np.fromiter(Counter(tokens).values(), dtype=np.int64)
    kept = counts >= args.min_count
    coverage = float(counts[kept].sum() / max(1, counts.sum()))
    report.add("corpus: vocabulary", kept.sum() >= 2 and coverage >= 0.5,
               f"{int(kept.sum()):,} words with >= {args.min_count} occurrences cover "
               f"{coverage:.1%} of tokens (need >= 2 words and >= 50%)")
    return report


def validate_dqn(args) -> Report:
    """The 'data' of an RL agent is its environment: check the observations and rewards it
    produces under a random policy against what the Q-network expects."""
    from apps.dqn import data

    atari = data.is_atari(args.env)
    report = Report("dqn", args.env)
    env = data.make_env(args.env, args.seed, training=True)
    space = env.observation_space
    expected = (84, 84, 4) if atari else tuple(space.shape)
    obs, _ = env.reset(seed=args.seed)
    obs = np.asarray(obs)
    ok = tuple(obs.shape) == expected and (obs.dtype == np.uint8 if atari else True)
    report.add("observations: schema", ok, f"dtype {obs.dtype}, shape {tuple(obs.shape)} "
               f"(expected {'uint8 ' if atari else ''}{list(expected)})")
    report.add("actions: schema", hasattr(env.action_space, "n") and env.action_space.n >= 2,
               f"{env.action_space}")
    rng = np.random.default_rng(args.seed)
    steps, episodes, rewards, outside = 500, 0, [], 0
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        rewards.append(float(reward))
        if not space.contains(np.asarray(obs, dtype=space.dtype)):
            outside += 1
        if terminated or truncated:
            episodes += 1
            env.reset()
    env.close()
    rewards = np.asarray(rewards)
    report.add("observations: value range", outside == 0,
               f"{outside} of {steps} random-policy observations outside {space}")
    finite = bool(np.all(np.isfinite(rewards)))
    clipped = bool(np.all(np.abs(rewards) <= 1)) if atari else True
    report.add("rewards: value range", finite and clipped,
               f"{steps} random steps, {episodes} episode ends, rewards {rewards.min():g}.."
               f"{rewards.max():g}" + (" (clipped to [-1, 1] for training)" if atari else ""))
    return report


VALIDATORS = {
    "mnist_mlp": validate_mnist_mlp,
    "cifar_cnn": validate_cifar_cnn,
    "word2vec": validate_word2vec,
    "shakespeare_lstm": validate_shakespeare_lstm,
    "sentiment_gru": validate_sentiment_gru,
    "dcgan": validate_dcgan,
    "dqn": validate_dqn,
}


def validate(app: str, args: argparse.Namespace) -> Report:
    """Run ``app``'s checks on the data its train script would load with ``args``."""
    if app not in VALIDATORS:
        raise UserError(f"no data validation for app {app!r}; apps: {', '.join(VALIDATORS)}")
    return VALIDATORS[app](args)
