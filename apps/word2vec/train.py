"""Train skip-gram word vectors with negative sampling (Mikolov et al. 2013b), evaluate, export.

    python -m apps.word2vec.train                               # text8 if available, else Gutenberg
    python -m apps.word2vec.train --dataset gutenberg --limit 3000000 --epochs 5
    python -m apps.word2vec.train --corpus my_book.txt --min-count 2 --dim 50

Reads top to bottom: corpus -> vocabulary and subsampling -> the pair pipeline -> the model ->
training -> evaluation (analogies, WordSim-353, neighbours, vectors on disk) -> export.

How it trains, and why. word2vec.c makes one tiny SGD update per (centre, context) pair, from
several threads at once without locks (Hogwild). A Keras ``fit()`` step instead takes a batch of
``--batch-size`` centre words from a ``tf.data`` pipeline that cuts their windows out of the
subsampled stream with tensor ops, one reduced window size b per batch (no empty slots). The
custom ``train_step`` (``model.py``) draws k negatives per centre, shared by the centre's pairs as
in Ji et al. (2016)'s pWord2Vec, gathers only the rows of the words in the batch, computes
word2vec.c's gradients for every pair as small matrix products per centre, and applies plain SGD
to those rows (one XLA scatter per table), at the learning rate of the shared optimizer factory:
linear decay from 0.025, as word2vec.c's. The step has static shapes per b and is compiled with
XLA (``jit_compile``), which fuses the gathers, the products and the scatters (where the time
goes: benchmarks/notes/word2vec.md). We keep ``fit()`` rather than a hand-written loop because
it drives the shared callbacks as in every app: learning-rate and throughput logging,
CSV/TensorBoard, early stopping and BackupAndRestore. Under a multi-replica strategy the step
hands the same sparse gradients to the Keras SGD optimizer, which aggregates them across
replicas.
"""

from __future__ import annotations

import json
import time

from shared.app import App, Data, UserError
from shared.flags import positive_float, positive_int


def backup_epoch(run) -> int:
    """The epoch a killed run resumes from (BackupAndRestore's metadata), so the pipeline starts
    with that epoch's subsampling and windows."""
    meta = run.dir / "checkpoints" / "backup" / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text()).get("epoch", -1)) + 1 if meta.exists() else 0
    except (OSError, ValueError):
        return 0


def final_vectors(model, which: str):
    """The vectors a run publishes: centre vectors v (word2vec.c, gensim) or (u + v) / 2."""
    import numpy as np

    v = np.asarray(model.centre_vectors.numpy())
    return v if which == "v" else (v + np.asarray(model.context_vectors.numpy())) / 2


class Word2Vec(App):
    name = "word2vec"
    description = "skip-gram word embeddings with negative sampling"
    order = 3
    metric = "analogy_accuracy"
    defaults = dict(
        epochs=5,  # word2vec.c -iter 5; gensim Word2Vec(epochs=5)
        # Centre words per step, each with its 2b context words (b uniform in 1..window: window
        # + 1 = 6 pairs per centre on average), so 683 centres are ~4,096 pairs: the pairs per
        # step of the earlier pair-per-row step, which matched gensim's analogy accuracy on 2.5M
        # Gutenberg words. The rows a word touches several times in a batch get the sum of those
        # updates, as word2vec.c's sequence of updates would to first order; keep it small next
        # to the vocabulary (the tests train a 20-word toy corpus with 64). Larger steps were no
        # faster per centre (benchmarks/notes/word2vec.md).
        batch_size=683,
        optimizer="sgd",  # word2vec.c: plain SGD on the rows a pair touches
        learning_rate=0.025,  # word2vec.c skip-gram -alpha 0.025; gensim alpha=0.025
        schedule="linear",  # word2vec.c: alpha decays linearly with the words processed
        patience=2,  # only with --early-stopping (off by default, see add_flags)
        monitor="loss",  # word2vec has no held-out set: the training loss
        # Keras turns XLA off when TensorFlow's op determinism is on. Our step stays
        # reproducible without it: the pipeline's randomness is stateless (seeded per epoch and
        # step), tf.data runs in order, and XLA's CPU scatter-add is sequential.
        deterministic=False,
        # XLA fuses the gathers, dot products and scatters of the step (benchmarks/REPORT.md
        # measures the speed-up); --no-jit-compile or the older --no-xla turn it off.
        jit_compile=True,
    )
    # --precision: the step gathers and scatters rows of the two float32 tables itself (no Keras
    # layer to cast), so a mixed policy would change nothing but the record; float32 everywhere.
    precision_defaults = {"cpu": "float32", "gpu": "float32"}
    float32_only = ("word2vec's sparse SGD step reads and updates its float32 embedding rows "
                    "directly (no layer to cast); use --precision float32")
    plot_metrics = ()  # the loss alone: there is no accuracy during training
    anchor = {"value": 0.40, "metric": "analogy accuracy on text8",
              "target": "within 2 points of gensim on the same corpus",
              "source": "gensim skip-gram on text8 (dim 100, window 5, 5 epochs)"}
    # The side-by-side comparison with gensim is benchmarks/word2vec_vs_gensim.py.
    # The contract test's tiny run (tests/test_apps_contract.py).
    smoke = ["--dataset", "gutenberg", "--limit", "100000", "--epochs", "1", "--dim", "16"]
    budgets = {
        "default": [],
        "small": ["--dataset", "gutenberg", "--limit", "3000000"],
        "tiny": ["--dataset", "gutenberg", "--limit", "500000", "--epochs", "1"],
    }

    def add_flags(self, a):
        a.add_argument("--dataset", choices=("auto", "text8", "gutenberg"), default="auto",
                       help="auto: text8 when it can be had, else the offline Gutenberg corpus")
        a.add_argument("--corpus", default=None, help="train on this text file (.txt, .gz, .zip)")
        a.add_argument("--min-count", type=positive_int, default=5,
                       help="ignore words seen fewer times (word2vec.c -min-count 5; gensim 5)")
        a.add_argument("--dim", type=positive_int, default=100,
                       help="vector size (gensim vector_size=100; word2vec.c demo: 200)")
        a.add_argument("--window", type=positive_int, default=5,
                       help="maximum window; each centre draws 1..window (gensim window=5)")
        a.add_argument("--negatives", type=positive_int, default=5,
                       help="negatives per pair (gensim negative=5; Mikolov et al. 2013b: 5-20)")
        # Subsampling threshold t. Mikolov et al. (2013b) use 1e-5 (on billions of words);
        # gensim's default is 1e-3 and word2vec.c's demo-word.sh uses 1e-4 for text8. We take
        # 1e-4: on a corpus of 10-17M words (text8, Gutenberg) 1e-5 throws away most of the
        # corpus while 1e-3 keeps spending most updates on "the", "of", "and" -- 1e-4 is also
        # the setting of gensim's published text8 skip-gram figure the issue targets.
        a.add_argument("--sample", type=float, default=1e-4,
                       help="subsampling threshold t: discard with prob. 1 - sqrt(t/f); 0 = off")
        a.add_argument("--subsample-rule", choices=("paper", "word2vec"), default="paper",
                       help="keep sqrt(t/f) (paper) or sqrt(t/f) + t/f (word2vec.c, gensim)")
        a.add_argument("--final-learning-rate", type=positive_float, default=1e-4,
                       help="learning rate at the end of training (gensim min_alpha=0.0001)")
        a.add_argument("--vectors", choices=("v", "mean"), default="v",
                       help="final vectors: centre vectors v (word2vec.c, gensim) or (u + v) / 2")
        a.add_argument("--analogies", default=None,
                       help="analogy file (default: gensim's questions-words.txt)")
        a.add_argument("--wordsim", default=None,
                       help="word-pair file (default: gensim's wordsim353.tsv)")
        a.add_argument("--restrict-vocab", type=positive_int, default=30_000,
                       help="evaluate among the N most frequent words (gensim restrict_vocab)")
        a.add_argument("--probe", nargs="+", default=None,
                       help="words whose neighbours are written")
        a.add_argument("--projector-words", type=positive_int, default=10_000,
                       help="words written to the TensorBoard projector files")
        # word2vec.c and gensim train a fixed number of epochs while the rate decays to ~0; the
        # epoch loss is noisy at the 0.5% level (fresh subsampling and negatives), so restoring
        # a "best" earlier epoch would throw away the end of the schedule. Hence opt-in.
        a.add_argument("--early-stopping", action="store_true",
                       help="stop when --monitor has not improved for --patience epochs")
        a.add_argument("--no-xla", dest="jit_compile", action="store_false",
                       help="do not compile the training step with XLA (= --no-jit-compile)")
        a.add_argument("--steps-per-execution", type=positive_int, default=8,
                       help="training steps per call into the compiled graph")

    def check(self, args):
        if not 0 <= args.sample < 1:
            raise UserError("--sample must be in [0, 1)")
        if args.optimizer != "sgd":
            raise UserError("word2vec trains with plain sparse SGD (--optimizer sgd), as "
                            "word2vec.c")
        if args.l2 or args.l1 or args.max_norm or args.clip_global_norm:  # embedding tables
            raise UserError("word2vec's sparse SGD: no --l2/--l1/--max-norm/--clip-global-norm")
        if args.clipnorm is not None:
            raise UserError("word2vec's sparse SGD does not clip gradients (no --clipnorm), as "
                            "word2vec.c")

    # 1. Data: corpus -> lower-case tokens -> the first --limit tokens -> vocabulary (min_count);
    #    subsampling, the noise distribution and the pair pipeline (data.py). An epoch is the
    #    expected number of pairs of one pass over the corpus, cut into batches of exactly B.
    def load_data(self, args, run):
        from apps.word2vec import data

        # Evaluation files first: a wrong path should fail before minutes of training.
        analogies = data.read_analogies(args.analogies
                                        or data.gensim_datapath("questions-words.txt"))
        word_pairs = data.read_word_pairs(args.wordsim or data.gensim_datapath("wordsim353.tsv"))
        t0 = time.time()
        corpus = data.load_corpus(args.dataset, args.corpus, args.limit, args.min_count)
        print(f"corpus {corpus.name}: {corpus.raw_tokens:,} tokens, {len(corpus.ids):,} in a "
              f"vocabulary of {len(corpus.vocab):,} words (min count {args.min_count}) "
              f"[{time.time() - t0:.0f} s]")
        keep = data.keep_probabilities(corpus.vocab.counts, args.sample, args.subsample_rule)
        noise = data.noise_distribution(corpus.vocab.counts)
        batch = run.global_batch(args.batch_size)
        steps = data.steps_per_epoch(corpus.ids, keep, batch)
        # Keras runs whole blocks of --steps-per-execution steps: an epoch of 89 steps in blocks
        # of 8 would really be 96. Round up so the schedule and words/s count the steps run.
        execution = args.steps_per_execution if run.replicas == 1 else 1
        steps = -(-steps // execution) * execution
        start_epoch = backup_epoch(run)  # a resumed run continues that epoch's pairs
        train = data.make_dataset(corpus.ids, keep, window=args.window, batch=batch,
                                  seed=args.seed, start_epoch=start_epoch)
        print(f"subsampling t={args.sample:g} ({args.subsample_rule}) keeps "
              f"{float(keep[corpus.ids].mean()):.1%} of the tokens; {steps:,} steps of "
              f"{batch:,} centre words (~{batch * (args.window + 1):,} pairs) per epoch")
        # Throughput is counted in corpus words per second, as word2vec.c and gensim count it.
        return Data(train=train, steps_per_epoch=steps,
                    examples_per_step=corpus.raw_tokens / steps,
                    corpus=corpus, noise=noise, analogies=analogies, word_pairs=word_pairs,
                    execution=execution, start_epoch=start_epoch)

    # 2. Model: two tables, v (centre) and u (context), initialized as word2vec.c (model.py).
    def build_model(self, args, data, run):
        from apps.word2vec.model import build_skipgram

        model = build_skipgram(len(data.corpus.vocab), args.dim)
        model.set_noise(data.noise, args.negatives, args.seed + 2)  # U(w)^0.75, drawn in the step
        return model

    # Plain SGD from the shared factory: --schedule linear decays to --final-learning-rate over
    # the run, as word2vec.c's alpha; XLA and several steps per call into the compiled graph.
    def compile(self, args, model, data, run):
        from shared.optim import make_optimizer

        config = self.optimizer_config(args, data, name="sgd",
                                       final_learning_rate=args.final_learning_rate)
        model.compile(optimizer=make_optimizer(config),
                      jit_compile=bool(args.jit_compile) and run.replicas == 1,
                      steps_per_execution=data.execution)

    # 3. Train: the pair stream is endless, so an epoch is steps_per_epoch batches; no
    #    validation set; early stopping only with --early-stopping.
    def train(self, args, model, data, run):
        start = time.time()
        model.fit(
            data.train,
            epochs=args.epochs,
            steps_per_epoch=data.steps_per_epoch,
            callbacks=run.callbacks(monitor=args.monitor, examples_per_step=data.examples_per_step,
                                    patience=args.patience if args.early_stopping else 0),
            shuffle=False,  # the pipeline draws fresh pairs each epoch
            verbose=args.verbose,
        )
        data.train_seconds = time.time() - start

    # 4. Evaluate among the 30,000 most frequent words (evaluate.py), then the vectors on disk
    #    (chief only): neighbours of probe words, word2vec text and binary files gensim loads,
    #    TensorBoard projector files, a PCA map.
    def evaluate(self, args, model, data, run):
        from apps.word2vec import evaluate as ev

        words, vectors = data.corpus.vocab.words, final_vectors(model, args.vectors)
        epochs_trained = max(1, args.epochs - data.start_epoch)
        metrics = {
            **ev.analogy_accuracy(words, vectors, data.analogies, args.restrict_vocab),
            **ev.wordsim_spearman(words, vectors, data.word_pairs, args.restrict_vocab),
            "vocab_size": len(words),
            "corpus_tokens": data.corpus.raw_tokens,
            "train_seconds": round(data.train_seconds, 2),
            "words_per_sec": data.corpus.raw_tokens * epochs_trained / max(data.train_seconds,
                                                                           1e-9),
            "xla": bool(model.jit_compile),
        }
        if run.is_chief:
            ev.write_vectors(run.dir, words, vectors, args.probe or ev.PROBE_WORDS,
                             args.projector_words)
        return metrics

    def headline(self, metrics, record):
        return (f"analogy accuracy {metrics['analogy_accuracy']:.4f} on "
                f"{metrics['analogy_questions']} questions (semantic "
                f"{metrics['analogy_semantic']:.4f}, syntactic "
                f"{metrics['analogy_syntactic']:.4f}); WordSim-353 Spearman "
                f"{metrics['wordsim_spearman']:.4f} on {metrics['wordsim_pairs']} pairs; "
                f"{metrics['words_per_sec']:,.0f} words/s")

    # 5. Export: raw words in; vectors (embed, serving_default) or neighbours (nearest) out.
    def word_vectors(self, args, model, data):
        """The exported layer (one per run, shared by the endpoints and the tracked list)."""
        if getattr(data, "word_vectors", None) is None:
            from apps.word2vec.export import WordVectors

            data.word_vectors = WordVectors(data.corpus.vocab.words,
                                            final_vectors(model, args.vectors),
                                            name="word_vectors")
        return data.word_vectors

    def endpoints(self, args, model, data):
        from apps.word2vec.export import endpoints

        return endpoints(self.word_vectors(args, model, data))

    def tracked(self, args, model, data):
        return [self.word_vectors(args, model, data)]

    # The config names the corpus actually read (--dataset auto: text8 or gutenberg).
    def export_metadata(self, args, data):
        return {"config": {"dim": args.dim, "window": args.window, "vectors": args.vectors,
                           "corpus": data.corpus.name}}

    # The pipeline's first stage: enough tokens for a window, and a vocabulary at --min-count
    # that covers most of the corpus.
    def validate_data(self, args):
        from collections import Counter

        import numpy as np

        from apps.word2vec.data import read_text, resolve_corpus, tokenize
        from shared.validate import Report

        path, name = resolve_corpus(args.dataset, args.corpus)
        report = Report(self.name, name)
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


APP = Word2Vec()
main = APP.main

if __name__ == "__main__":
    main()
