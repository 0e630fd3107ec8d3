"""Corpus, vocabulary, subsampling and the skip-gram window pipeline (``tf.data``, vectorized).

1. **Corpus.** text8 (online, ``text8.zip``), the offline Gutenberg corpus (``corpus_gutenberg``,
   158 books, ~10.1M words) or any text file (``--corpus PATH``; ``.gz`` and ``.zip`` are read
   too). Tokens are lower-cased words: runs of letters/digits, with inner apostrophes kept
   (``don't``), so text8 (already ``[a-z ]``) tokenizes exactly as word2vec.c reads it.
2. **Vocabulary.** Words seen at least ``min_count`` times (word2vec.c / gensim: 5), sorted by
   decreasing count (ties: first occurrence), id 0 = most frequent. Out-of-vocabulary tokens are
   removed from the stream before windowing, as word2vec.c and gensim do.
3. **Subsampling** of frequent words (Mikolov et al. 2013b, eq. 5): each occurrence of word w is
   discarded with probability ``1 - sqrt(t / f(w))`` (``f`` = relative frequency), redrawn every
   epoch. word2vec.c and gensim use a slightly gentler variant, keep = sqrt(t/f) + t/f
   (``rule="word2vec"``), offered for like-for-like benchmarks.
4. **Windows** (inside ``tf.data``, no Python loop per pair): chunks of 65,536 consecutive
   corpus positions at a time; their surviving tokens are the centres. For each centre a window
   size b is drawn uniformly from 1..window (word2vec.c's ``b = rand() % window``, effective
   window ``window - b``); its contexts are the surviving tokens at offsets -b..-1, 1..b in the
   subsampled stream, gathered with one tensor op for the whole chunk. Each b has its own stream
   of batches of exactly ``batch`` centres (``Dataset.rebatch``) with windows [batch, 2b], and
   the batches come in turn for b = 1..window: no empty window slots, and the training step
   has static shapes (one XLA program per b). A window slot is one (centre, context) pair.
5. **Negatives**: ``k`` per centre, shared by its 2b pairs (Ji et al. 2016; see model.py), from
   the unigram distribution raised to 0.75 (Mikolov et al. 2013b). They are drawn inside the
   compiled training step, not here (``SkipGram.draw_negatives``), by Walker's alias method
   (``alias_table``): exact, two table lookups per draw, no 1e8-entry table as in word2vec.c.
   Drawn in the pipeline (a binary search per draw) they cost 0.26 ms of CPU per batch, about
   half of the pipeline's work, taken from the core that runs the step
   (benchmarks/notes/word2vec.md).

All randomness is stateless, seeded from (``--seed``, epoch, step), so a run is reproducible and
each epoch draws fresh subsampling and windows (and the step fresh negatives).
"""

from __future__ import annotations

import collections
import gzip
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.data import DataError, fetch
from shared.errors import UserError

MIN_COUNT = 5  # word2vec.c `-min-count 5`; gensim Word2Vec(min_count=5)
UNIGRAM_POWER = 0.75  # Mikolov et al. 2013b, section 2.2: U(w)^(3/4)

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """Lower-case word tokens: letters/digits, inner apostrophes kept (curly ones normalized);
    only the first ``limit`` when given (read in slices, so a small limit is fast)."""
    if limit is None:
        return _TOKEN.findall(text.lower().replace("\u2019", "'"))
    tokens: list[str] = []
    start, step = 0, 1 << 20
    while start < len(text) and len(tokens) < limit:
        end = min(len(text), start + step)
        while end < len(text) and not text[end].isspace():  # never cut a word in two
            end += 1
        tokens.extend(_TOKEN.findall(text[start:end].lower().replace("\u2019", "'")))
        start = end
    return tokens[:limit]


def read_text(path: str | Path) -> str:
    """Text of a plain, ``.gz`` or ``.zip`` (first member, e.g. text8.zip's ``text8``) file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"corpus file not found: {path}")
    if path.is_dir():
        raise UserError(f"corpus path is a directory, not a text file: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                if not names:
                    raise UserError(f"{path} holds no file")
                raw = z.read(names[0])
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read corpus {path}: {exc}") from None
    return raw.decode("utf-8", errors="replace")


def resolve_corpus(dataset: str = "auto", corpus: str | None = None) -> tuple[Path, str]:
    """(path, name) of the corpus: ``--corpus`` if given, else text8 or Gutenberg; ``auto`` =
    text8 when it can be had (mirror, cache or download), else the offline Gutenberg corpus."""
    if corpus:
        path = Path(corpus).expanduser()
        if not path.is_file():
            raise UserError(f"corpus file not found: {path}")
        return path, path.name
    if dataset == "text8":
        return fetch("text8"), "text8"
    if dataset == "gutenberg":
        return fetch("corpus_gutenberg"), "gutenberg"
    try:
        return fetch("text8"), "text8"
    except DataError as exc:
        print(f"text8 unavailable ({exc}); using the offline Gutenberg corpus")
        return fetch("corpus_gutenberg"), "gutenberg"


@dataclass
class Vocabulary:
    words: list[str]  # id -> word, most frequent first
    counts: np.ndarray  # int64 [V]

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def build(cls, tokens: list[str], min_count: int = MIN_COUNT) -> "Vocabulary":
        counter = collections.Counter(tokens)  # insertion order = first occurrence
        kept = [(w, c) for w, c in counter.items() if c >= min_count]
        kept.sort(key=lambda wc: -wc[1])  # stable: ties keep first-occurrence order
        if not kept:
            raise UserError(f"no word occurs at least {min_count} times (--min-count) in a "
                            f"corpus of {len(tokens)} tokens")
        return cls([w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64))

    def encode(self, tokens: list[str]) -> np.ndarray:
        """Token ids (int32), out-of-vocabulary tokens dropped."""
        get = self.index.get
        ids = [i for i in map(get, tokens) if i is not None]
        return np.asarray(ids, dtype=np.int32)


def keep_probabilities(counts: np.ndarray, sample: float, rule: str = "paper") -> np.ndarray:
    """Probability of keeping each occurrence of each word. ``paper``: 1 - P(discard) with
    P(discard) = 1 - sqrt(t/f) (Mikolov et al. 2013b, eq. 5); ``word2vec``: sqrt(t/f) + t/f
    (word2vec.c and gensim). Clipped to [0, 1]; ``sample=0`` keeps everything."""
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones(len(counts), dtype=np.float32)
    ratio = sample / (counts / counts.sum())  # t / f
    if rule == "paper":
        keep = np.sqrt(ratio)
    elif rule == "word2vec":
        keep = np.sqrt(ratio) + ratio
    else:
        raise UserError(f"unknown subsampling rule {rule!r}; use paper or word2vec")
    return np.minimum(keep, 1.0).astype(np.float32)


def noise_distribution(counts: np.ndarray, power: float = UNIGRAM_POWER) -> np.ndarray:
    """The negative-sampling distribution: unigram counts raised to ``power``, normalized."""
    p = np.asarray(counts, dtype=np.float64) ** power
    return p / p.sum()


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias method (Vose's construction) for drawing from ``p`` in O(1): draw i
    uniformly from 0..V-1 and u from U[0, 1); the draw is i when u < prob[i], else alias[i].
    Exact: word w comes out with probability (prob[w] + sum over i with alias[i] = w of
    (1 - prob[i])) / V = p[w]."""
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    scaled = p / p.sum() * n
    prob, alias = np.ones(n), np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]  # g gives the rest of s's column
        (small if scaled[g] < 1.0 else large).append(g)
    # Left over (round-off): columns that are full on their own.
    return prob.astype(np.float32), alias.astype(np.int32)


@dataclass
class Corpus:
    name: str
    path: str
    vocab: Vocabulary
    ids: np.ndarray  # int32 token ids, out-of-vocabulary tokens removed
    raw_tokens: int  # tokens before removing out-of-vocabulary ones


def load_corpus(dataset: str = "auto", corpus: str | None = None, limit: int | None = None,
                min_count: int = MIN_COUNT) -> Corpus:
    """Tokenize, keep the first ``limit`` tokens, build the vocabulary, encode."""
    path, name = resolve_corpus(dataset, corpus)
    tokens = tokenize(read_text(path), limit)
    if len(tokens) < 2:
        raise UserError(f"corpus {path} has {len(tokens)} word token(s); need at least 2")
    vocab = Vocabulary.build(tokens, min_count)
    ids = vocab.encode(tokens)
    if len(vocab) < 2:
        raise UserError(f"the vocabulary of {path} has a single word at --min-count {min_count}")
    return Corpus(name, str(path), vocab, ids, len(tokens))


def expected_pairs(ids: np.ndarray, keep_prob: np.ndarray, window: int) -> float:
    """Expected (centre, context) pairs in one epoch: each surviving token has 2b contexts with
    b uniform in 1..window, so window + 1 on average (edge effects ignored)."""
    return float(keep_prob[ids].astype(np.float64).sum() * (window + 1))


def steps_per_epoch(ids: np.ndarray, keep_prob: np.ndarray, batch: int) -> int:
    """Steps of ``batch`` centre words in one pass over the subsampled corpus (in expectation)."""
    return max(1, int(round(float(keep_prob[ids].astype(np.float64).sum()) / batch)))


def window_offsets(window: int) -> np.ndarray:
    """The offsets of the slots of a window of size b: -b..-1, 1..b (column j of ``windows``)."""
    return np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)]).astype(np.int32)


CHUNK = 1 << 16  # raw corpus positions turned into windows at once inside the pipeline


def make_dataset(ids: np.ndarray, keep_prob: np.ndarray, *, window: int, batch: int, seed: int,
                 start_epoch: int = 0):
    """An endless stream of batches ``(centres [batch], windows [batch, 2b])`` (int32),
    ``batch`` centre words each: epoch ``start_epoch``'s, then the next epoch's, and so on.
    Every centre draws its reduced window b uniformly from 1..window (word2vec.c); the batches
    come in turn for b = 1, 2, .., window, each holding only centres of that b, so that a batch
    has no empty window slots (a [batch, 2 window] layout would leave 40% of its slots empty for
    window 5 and pay for them in every gather, product and scatter). ``windows[i, j]`` is the
    word at offset ``window_offsets(b)[j]`` from centre i in the subsampled stream, or -1 past
    either end of the corpus; each other slot is one (centre, context) pair. The training step
    draws each centre's negatives (model.py). Every batch has exactly ``batch`` centres
    (``rebatch`` across chunk and epoch boundaries), so the training step compiles once per b
    with static shapes (XLA); an "epoch" of training is ``steps_per_epoch(...)`` batches, one
    pass over the corpus in expectation."""
    import tensorflow as tf

    from shared.distribute import shard_policy_data

    n = len(ids)
    ids_t = tf.constant(ids, tf.int32)
    keep_t = tf.constant(keep_prob, tf.float32)
    chunks = -(-n // CHUNK)
    seed = int(seed) % (2**31 - 1)

    def stream(reduced: int):
        """The batches of the centres whose reduced window is ``reduced``."""
        offsets_t = tf.constant(window_offsets(reduced))

        @tf.autograph.experimental.do_not_convert  # plain tensor code
        def epoch_windows(epoch):
            epoch = tf.cast(epoch, tf.int32)
            # Subsampling for this epoch (the same draw in every stream): the surviving stream,
            # and where each chunk of raw positions starts in it.
            u = tf.random.stateless_uniform([n], seed=tf.stack([seed, epoch]))
            keep = u < tf.gather(keep_t, ids_t)
            kept = tf.boolean_mask(ids_t, keep)
            m = tf.size(kept)
            before = tf.cumsum(tf.cast(keep, tf.int32), exclusive=True)
            bounds = tf.concat([tf.gather(before, tf.range(0, n, CHUNK, dtype=tf.int32)), [m]],
                               0)

            @tf.autograph.experimental.do_not_convert  # plain tensor code
            def chunk_windows(chunk):
                chunk = tf.cast(chunk, tf.int32)
                lo, hi = bounds[chunk], bounds[chunk + 1]
                # word2vec.c: b = rand() % window, effective window window - b, i.e. 1..window
                # (the same draw in every stream, so each centre is in exactly one).
                chunk_seed = tf.stack([seed + 1, epoch * chunks + chunk])
                b = tf.random.stateless_uniform([hi - lo], seed=chunk_seed, minval=1,
                                                maxval=window + 1, dtype=tf.int32)
                centre_pos = lo + tf.cast(tf.where(tf.equal(b, reduced))[:, 0], tf.int32)
                ctx_pos = centre_pos[:, None] + offsets_t[None, :]
                valid = (ctx_pos >= 0) & (ctx_pos < m)
                windows = tf.where(valid, tf.gather(kept, tf.clip_by_value(ctx_pos, 0, m - 1)),
                                   -1)
                return tf.gather(kept, centre_pos), windows

            return tf.data.Dataset.range(chunks).map(chunk_windows)

        ds = tf.data.Dataset.range(start_epoch, 2**31 - 1).flat_map(epoch_windows)
        return ds.rebatch(batch, drop_remainder=True)

    # b = 1, 2, .., window in turn: each b holds 1/window of the centres in expectation.
    ds = tf.data.Dataset.choose_from_datasets(
        [stream(b) for b in range(1, window + 1)],
        tf.data.Dataset.range(window).repeat())
    # Several workers: each makes the same stream (it has no files to split) and keeps its share
    # of every global batch.
    return shard_policy_data(ds.prefetch(tf.data.AUTOTUNE))


def window_pairs(windows: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (centre, context) pairs a batch's windows stand for, in order (NumPy; tests, tools)."""
    valid = windows >= 0
    return np.broadcast_to(centres[:, None], windows.shape)[valid], windows[valid]


# --------------------------------------------------------------------------------------------
# Evaluation data (shipped inside gensim's test data; any file in the same format works)
# --------------------------------------------------------------------------------------------


def gensim_datapath(name: str) -> str:
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise UserError(f"{name} ships with gensim, which is not installed; pass the file "
                        "with --analogies / --wordsim") from None
    return datapath(name)


def read_analogies(path: str | Path) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """``questions-words.txt`` (Mikolov et al. 2013a): sections ``: name`` of ``a b c d`` lines."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"analogy file not found: {path}")
    sections: list[tuple[str, list]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
        elif line.strip():
            words = line.lower().split()
            if len(words) == 4 and sections:
                sections[-1][1].append(tuple(words))
    return sections


def read_word_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """WordSim-353 as gensim ships it: ``word1<TAB>word2<TAB>score``, ``#`` comments."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"word-pair file not found: {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            try:
                out.append((parts[0].lower(), parts[1].lower(), float(parts[2])))
            except ValueError:
                continue
    return out
