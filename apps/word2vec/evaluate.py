"""Evaluate and save word vectors: analogies, WordSim-353, neighbours, file formats, a 2-D map.

- Word analogies (Mikolov et al. 2013a, ``questions-words.txt``): "a is to b as c is to ?" is
  answered by the word d maximizing cos(d, b - a + c) over unit vectors (3CosAdd), the question
  words excluded, searching only the 30,000 most frequent words and counting only questions whose
  four words are among them -- exactly gensim's ``evaluate_word_analogies(restrict_vocab=30000)``.
- WordSim-353 (Finkelstein et al. 2002): Spearman correlation between human scores and cosine
  similarities, over the pairs whose two words are among the 30,000 most frequent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.io import atomic_write_bytes, atomic_write_text

RESTRICT_VOCAB = 30_000  # gensim evaluate_word_analogies(restrict_vocab=30000), the custom
PROBE_WORDS = ("king", "woman", "france", "london", "war", "love", "good", "river", "horse",
               "ship", "god", "money", "three", "quickly")


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def analogy_accuracy(words: list[str], vectors: np.ndarray, sections,
                     restrict_vocab: int = RESTRICT_VOCAB, batch: int = 2048) -> dict:
    """Accuracy overall, on the semantic and syntactic halves (sections named ``gram*`` are
    syntactic), and the number of questions evaluated / skipped."""
    top = min(restrict_vocab, len(words))
    index = {w: i for i, w in enumerate(words[:top])}
    normed = unit(vectors[:top])
    correct = {"semantic": 0, "syntactic": 0}
    total = {"semantic": 0, "syntactic": 0}
    skipped = 0
    for name, questions in sections:
        kind = "syntactic" if name.startswith("gram") else "semantic"
        rows = [[index[w] for w in q] for q in questions if all(w in index for w in q)]
        skipped += len(questions) - len(rows)
        if not rows:
            continue
        q = np.asarray(rows)
        for s in range(0, len(q), batch):
            a, b, c, d = q[s:s + batch].T
            scores = (normed[b] - normed[a] + normed[c]) @ normed.T
            r = np.arange(len(a))
            scores[r, a] = scores[r, b] = scores[r, c] = -np.inf
            correct[kind] += int(np.sum(scores.argmax(axis=1) == d))
        total[kind] += len(q)
    n = total["semantic"] + total["syntactic"]
    out = {
        "analogy_accuracy": (correct["semantic"] + correct["syntactic"]) / n if n else 0.0,
        "analogy_questions": n,
        "analogy_skipped": skipped,
    }
    for kind in ("semantic", "syntactic"):
        out[f"analogy_{kind}"] = correct[kind] / total[kind] if total[kind] else 0.0
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def wordsim_spearman(words: list[str], vectors: np.ndarray, pairs,
                     restrict_vocab: int = RESTRICT_VOCAB) -> dict:
    top = min(restrict_vocab, len(words))
    index = {w: i for i, w in enumerate(words[:top])}
    normed = unit(vectors[:top])
    found = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
    if len(found) < 3:
        return {"wordsim_spearman": 0.0, "wordsim_pairs": len(found)}
    ia, ib, human = map(np.asarray, zip(*found))
    cos = np.sum(normed[ia] * normed[ib], axis=1)
    return {"wordsim_spearman": spearman(human, cos), "wordsim_pairs": len(found)}


def nearest_neighbours(words: list[str], vectors: np.ndarray, probes, k: int = 10) -> dict:
    index = {w: i for i, w in enumerate(words)}
    normed = unit(vectors)
    out = {}
    for p in probes:
        if p not in index:
            continue
        scores = normed @ normed[index[p]]
        scores[index[p]] = -np.inf
        best = np.argsort(-scores)[:k]
        out[p] = [(words[i], float(scores[i])) for i in best]
    return out


def write_neighbours(path, neighbours: dict) -> Path:
    lines = []
    for word, near in neighbours.items():
        lines.append(f"{word}: " + ", ".join(f"{w} ({s:.3f})" for w, s in near))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def save_word2vec_format(path, words: list[str], vectors: np.ndarray, binary: bool) -> Path:
    """word2vec.c's format: a header ``V d``, then per word ``word v1 .. vd`` (text) or
    ``word `` + d little-endian float32 (binary), each record ending in a newline. gensim's
    ``KeyedVectors.load_word2vec_format`` reads both."""
    vectors = np.asarray(vectors, dtype="<f4")
    parts = [f"{len(words)} {vectors.shape[1]}\n".encode()]
    if binary:
        for w, v in zip(words, vectors):
            parts.append(w.encode("utf-8") + b" " + v.tobytes() + b"\n")
    else:
        for w, v in zip(words, vectors):
            parts.append((w + " " + " ".join(f"{x:.6f}" for x in v) + "\n").encode("utf-8"))
    return atomic_write_bytes(path, b"".join(parts))


def save_projector(folder, words: list[str], vectors: np.ndarray, n: int = 10_000) -> Path:
    """TensorBoard projector files: vectors.tsv (one vector per line) and metadata.tsv (one word
    per line, no header since there is a single column); load them at projector.tensorflow.org
    or in TensorBoard's projector."""
    folder = Path(folder)
    n = min(n, len(words))
    atomic_write_text(folder / "vectors.tsv",
                      "".join("\t".join(f"{x:.5f}" for x in v) + "\n" for v in vectors[:n]))
    atomic_write_text(folder / "metadata.tsv", "".join(w + "\n" for w in words[:n]))
    return folder


def pca_map(path, words: list[str], vectors: np.ndarray, n: int = 250, skip: int = 50) -> Path:
    """The ``n`` most frequent words after the first ``skip`` (mostly function words), projected
    on the first two principal components of their vectors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.io import atomic_savefig

    skip = min(skip, max(0, len(words) - n))
    sel = slice(skip, skip + n)
    x = unit(vectors[sel])
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(12, 12))
    ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5)
    for (px, py), w in zip(xy, words[sel]):
        ax.annotate(w, (px, py), fontsize=7)
    ax.set_title(f"word vectors: PCA of words {skip + 1}-{skip + len(xy)} by frequency")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def write_vectors(folder, words: list[str], vectors: np.ndarray, probes,
                  projector_words: int = 10_000) -> Path:
    """A run's vectors on disk: neighbours of ``probes``, word2vec text and binary files (gensim
    loads both), TensorBoard projector files and a PCA map."""
    folder = Path(folder)
    write_neighbours(folder / "neighbours.txt", nearest_neighbours(words, vectors, probes))
    save_word2vec_format(folder / "vectors.txt", words, vectors, binary=False)
    save_word2vec_format(folder / "vectors.bin", words, vectors, binary=True)
    save_projector(folder / "projector", words, vectors, projector_words)
    pca_map(folder / "pca_map.png", words, vectors)
    return folder
