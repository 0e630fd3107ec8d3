"""Initial embeddings learnt without labels (``--embeddings word2vec|PATH``).

Unsupervised pretraining (Goodfellow et al. §15.1; Dai & Le 2015 on IMDB): skip-gram vectors of
the training reviews, trained first by the suite's own word2vec app, so that rare words start
near words used alike instead of at random. Only the training reviews are read, so nothing leaks
from the validation or test sets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from shared.errors import UserError


def pretrain_word2vec(reviews, folder, embedding_dim: int, seed: int) -> str:
    """Skip-gram vectors of the training reviews, with the word2vec app's own defaults (5
    epochs, window 5, 5 negatives) and this model's embedding size. Run as a child process: the
    word2vec app sets up its own distribution strategy. Reused when the folder has them."""
    import subprocess
    import sys

    from apps.sentiment_gru import data

    folder = Path(folder)
    vectors = folder / "run" / "vectors.txt"
    if vectors.exists():
        return str(vectors)
    corpus = data.write_corpus(reviews, folder / "corpus.txt")
    cmd = [sys.executable, "-m", "apps.word2vec.train", "--corpus", str(corpus),
           "--dim", str(embedding_dim), "--seed", str(seed), "--run-dir",
           str(folder / "run"), "--no-export", "--verbose", "2"]
    print("embeddings: python -m " + " ".join(cmd[2:]), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}  # a single-process job
    if subprocess.call(cmd, env=env) != 0 or not vectors.exists():
        raise UserError(f"word2vec pretraining failed; see {folder / 'run'}")
    return str(vectors)


def initial_embeddings(args, run, vectorizer, reviews) -> np.ndarray | None:
    """The Embedding layer's initial weights [vocabulary, dim], or None for Keras' own random
    initialization (``--embeddings random``). Under multi_worker only the chief computes them and
    broadcasts the matrix, so that every worker starts from the same weights."""
    if args.embeddings == "random":
        return None
    from apps.sentiment_gru import data
    from shared.distribute import chief_values

    vocab_size = vectorizer.vocabulary_size()
    initial = np.zeros((vocab_size, args.embedding_dim), np.float32)
    if run.is_chief:
        source = args.embeddings
        if source == "word2vec":
            source = pretrain_word2vec(reviews, run.dir / "word2vec", args.embedding_dim,
                                       args.seed)
        initial, covered = data.embedding_matrix(vectorizer.get_vocabulary(),
                                                 data.read_word2vec_text(source),
                                                 args.embedding_dim, args.seed)
        print(f"embeddings: {covered:.1%} of the vocabulary initialized from {source}")
    if args.strategy == "multi_worker":
        initial = np.asarray(chief_values(run.strategy, initial.ravel()),
                             np.float32).reshape(initial.shape)
    return initial
