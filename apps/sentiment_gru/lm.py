"""Language-model pretraining of the classifier's embedding and GRU (``--pretrain lm``).

Dai & Le (2015, "Semi-supervised Sequence Learning") first train the recurrent network to predict
the next word of review text, then start the classifier from those weights: their LSTM reached
92.4-92.8% on IMDB where the same LSTM from random weights stayed far lower. ULMFiT (Howard &
Ruder 2018) does the same with a bidirectional pair of language models. The words of a review
carry most of what its label needs, and 25,000 reviews hold ~6M of them: predicting them
teaches the GRU to read before it is asked to judge.

The model here is the classifier's own front half, layer for layer and name for name: the
``embedding`` and the (bidirectional) ``gru``. The forward GRU reads words 1..t and predicts word
t+1; the backward GRU reads words T..t and predicts word t-1 (ULMFiT trains a forward and a
backward model; sharing one embedding trains both at once, as the classifier shares it). The
output layer over the 30,000-word vocabulary is sampled (Jean et al. 2015, ``tf.nn.
sampled_softmax_loss``): a full softmax would cost ~2 x 30,000 x units multiply-adds per word
and a [batch, time, vocabulary] tensor per batch, which 2 CPU cores cannot afford; the sampled
loss estimates it with ``NUM_SAMPLED`` candidates drawn from the log-uniform (Zipf) distribution
that suits word frequencies. It serves for training and for the validation loss that early
stopping watches; the LM is never used to generate.

Only training reviews are read (never the validation or test ones), plus, where a user has them,
the 50,000 unlabelled reviews of the original archive (``--unlabelled aclImdb/train/unsup``).
The trained weights are kept as ``pretrain_lm/lm.weights.h5`` under the run directory: a re-run
(``--resume``) or another run given ``--pretrained-lm`` starts from them without pretraining
again.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from shared.errors import UserError
from shared.recurrent import HoistedGRU

# Candidates of the sampled softmax per batch: Jean et al. 2015 sample a subset of a 500k
# vocabulary; TensorFlow's sampled-softmax guidance (tf.nn.sampled_softmax_loss) and the
# "On Using Very Large Target Vocabulary" paper use ~1-5% of the vocabulary. 1,024 of 30,000
# (3%) keeps the output layer at ~1/30 of a full softmax's cost.
NUM_SAMPLED = 1024
WEIGHTS = "lm.weights.h5"  # the cache, in the stage directory
LM_LEARNING_RATE = 4e-3  # ULMFiT (Howard & Ruder 2018, §4): Adam, base rate 0.004 for the LM
# Reviews per LM batch: ~7,400 words a step, near ULMFiT's 64 windows of 70 words (AWD-LSTM's
# BPTT); the classifier's 128 reviews gave the LM only 182 steps an epoch (see the notes).
LM_BATCH_SIZE = 32
LM_CLIPNORM = 0.25  # gradient norm clipping of AWD-LSTM's language model (Merity et al. 2018)
LM_DROPOUT = 0.1  # before the output layer: AWD-LSTM's output dropout for its LM (Merity et al.
# 2018: 0.4 with 3 x 1,150 units; one epoch over ~6M words underfits rather than overfits)
LM_PATIENCE = 2  # early stopping on the sampled validation loss (Algorithm 7.1)
# With no validation reviews (--val-size 0), the language model holds out the last 500 training
# reviews (~120k words) for its own validation loss; the classifier still trains on them.
LM_HELDOUT = 500


@keras.saving.register_keras_serializable("sentiment_gru")
class SampledSoftmaxLM(keras.layers.Layer):
    """Hidden states [batch, time, units] and target ids [batch, time] (0 = padding: no loss) ->
    the mean sampled-softmax cross entropy over the real positions, added as the layer's loss.
    Returns the hidden states unchanged (the model's output is not used)."""

    def __init__(self, vocab_size: int, num_sampled: int = NUM_SAMPLED, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.num_sampled = int(vocab_size), int(num_sampled)
        self.supports_masking = True  # the targets' zeros mark the padding; no mask goes on

    def build(self, hidden_shape, targets_shape=None):
        units = int(hidden_shape[-1])
        self.kernel = self.add_weight(shape=(self.vocab_size, units), name="kernel",
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.vocab_size,), name="bias", initializer="zeros")

    def call(self, hidden, targets, mask=None):
        import tensorflow as tf

        units = tf.shape(hidden)[-1]
        real = tf.reshape(targets > 0, [-1])
        h = tf.boolean_mask(tf.reshape(tf.cast(hidden, tf.float32), [-1, units]), real)
        y = tf.boolean_mask(tf.reshape(tf.cast(targets, tf.int64), [-1, 1]), real)
        sampled = tf.random.log_uniform_candidate_sampler(
            y, 1, min(self.num_sampled, self.vocab_size - 1), unique=True,
            range_max=self.vocab_size)
        loss = tf.nn.sampled_softmax_loss(self.kernel, self.bias, y, h,
                                          min(self.num_sampled, self.vocab_size - 1),
                                          self.vocab_size, sampled_values=sampled)
        self.add_loss(tf.reduce_mean(loss))
        return hidden

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "num_sampled": self.num_sampled}


def build_lm(vocab_size: int, embedding_dim: int, units: int, bidirectional: bool = True,
             embedding_dropout: float = 0.0, dropout: float = 0.0) -> keras.Model:
    """Token ids [batch, time] -> the sampled LM loss of predicting each next word (and, when
    bidirectional, each previous word). Its ``embedding`` and ``gru`` / ``bidirectional_gru``
    layers have the classifier's names and shapes (model.py), so their weights carry over."""
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(ids)
    if embedding_dropout:
        x = keras.layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    gru = HoistedGRU(units, return_sequences=True, name="gru")
    ops = keras.ops
    # Targets: the next word for the forward GRU (0 after a review's last word: no loss there).
    nxt = ops.concatenate([ids[:, 1:], ops.zeros_like(ids[:, :1])], axis=1)
    if bidirectional:
        fwd, bwd = keras.layers.Bidirectional(gru, merge_mode=None, name="bidirectional_gru")(x)
        prev = ops.concatenate([ops.zeros_like(ids[:, :1]), ids[:, :-1]], axis=1)
        streams = [("forward", fwd, nxt), ("backward", bwd, prev)]
    else:
        streams = [("forward", gru(x), nxt)]
    outs = []
    for name, h, targets in streams:  # dropout between the GRU and the output layer (ULMFiT)
        if dropout:
            h = keras.layers.Dropout(dropout, name=f"{name}_dropout")(h)
        outs.append(SampledSoftmaxLM(vocab_size, name=f"{name}_lm")(h, targets))
    return keras.Model(ids, outs, name="sentiment_gru_lm")


def log_unigram(vectorizer, texts: np.ndarray, batch: int = 512) -> np.ndarray:
    """log P(word) over the vocabulary in ``texts`` (add-one smoothed): the output layer's
    starting bias, so the LM starts from the unigram model instead of a uniform one (Karpathy,
    "A Recipe for Training Neural Networks", 2019: initialise the last layer's bias to the
    data's prior). Without it, the sampled loss spends its first thousands of steps learning
    word frequencies, which 2 CPU cores cannot afford."""
    vocab = vectorizer.vocabulary_size()
    counts = np.ones(vocab, np.float64)
    for i in range(0, len(texts), batch):
        ids = np.asarray(vectorizer(texts[i:i + batch]))
        counts += np.bincount(ids[ids > 0], minlength=vocab)[:vocab]
    return np.log(counts / counts.sum()).astype(np.float32)


def heldout_nats(lm: keras.Model, vectorizer, texts: np.ndarray, batch: int = 32) -> float:
    """The forward LM's full-softmax cross entropy (nats per word) on ``texts``: the number the
    sampled training loss only estimates. exp() of it is the perplexity. One compiled function
    per batch; its logits ([batch, words, vocabulary]) are made 8 reviews at a time."""
    import tensorflow as tf

    names = {layer.name for layer in lm.layers}
    gru = lm.get_layer("bidirectional_gru" if "bidirectional_gru" in names else "gru")
    embedding, out = lm.get_layer("embedding"), lm.get_layer("forward_lm")

    @tf.function(reduce_retracing=True)
    def summed(ids):
        h = gru(embedding(ids), mask=ids != 0)
        h = tf.cast(h[0] if isinstance(h, (list, tuple)) else h, tf.float32)  # forward only
        targets = tf.concat([ids[:, 1:], tf.zeros_like(ids[:, :1])], axis=1)
        total, words = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(0, tf.shape(ids)[0], 8):
            logits = tf.matmul(h[i:i + 8], out.kernel, transpose_b=True) + out.bias
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(targets[i:i + 8], logits)
            real = tf.cast(targets[i:i + 8] > 0, tf.float32)
            total += tf.reduce_sum(nll * real)
            words += tf.reduce_sum(real)
        return total, words

    total, words = 0.0, 0.0
    for i in range(0, len(texts), batch):
        t, w = summed(tf.convert_to_tensor(np.asarray(vectorizer(texts[i:i + batch])), tf.int64))
        total, words = total + float(t), words + float(w)
    return total / max(words, 1.0)


def lm_dataset(vectorizer, texts: np.ndarray, batch_size: int, shuffle: bool = False,
               seed: int = 42):
    """Token-id batches of whole reviews (no labels), length-bucketed like the classifier's."""
    import tensorflow as tf

    from apps.sentiment_gru.data import make_dataset

    ds = make_dataset(vectorizer, texts, np.zeros(len(texts), np.int32), batch_size,
                      shuffle=shuffle, seed=seed)
    return ds.map(lambda ids, _: ids, num_parallel_calls=tf.data.AUTOTUNE)


def read_unlabelled(folder: str | Path) -> np.ndarray:
    """The reviews (``*.txt``) of a folder such as aclImdb/train/unsup, as bytes."""
    folder = Path(folder).expanduser()
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise UserError(f"--unlabelled {folder}: no *.txt reviews there (expected a folder "
                        "such as aclImdb/train/unsup)")
    return np.asarray([f.read_bytes() for f in files], dtype=object)


def transfer(lm: keras.Model, classifier: keras.Model) -> list[str]:
    """Copy the LM's embedding and GRU weights into the classifier's layers of the same names;
    returns the names copied."""
    copied = []
    for name in ("embedding", "bidirectional_gru", "gru"):
        try:
            src, dst = lm.get_layer(name), classifier.get_layer(name)
        except ValueError:
            continue
        dst.set_weights(src.get_weights())
        copied.append(name)
    if "embedding" not in copied or len(copied) < 2:
        raise UserError("the pretrained language model does not match the classifier (embedding "
                        "and GRU layers of the same names and shapes are needed)")
    return copied


def held_out(texts: np.ndarray, val_texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The language model's training and held-out reviews: the classifier's validation reviews
    where it has some, else the last ``LM_HELDOUT`` training reviews (a tenth of a small run)."""
    if len(val_texts):
        return texts, val_texts
    n = max(1, min(LM_HELDOUT, len(texts) // 10))
    return texts[:-n], texts[-n:]


def pretrain(args, run, vectorizer, texts: np.ndarray, val_texts: np.ndarray,
             initial: np.ndarray | None) -> keras.Model:
    """The stage ``pretrain_lm`` of the run: the language model trained on ``texts`` (the
    training reviews, plus ``--unlabelled``), its sampled loss on the held-out reviews
    (``held_out``) watched by early stopping; resumable from its own backup like any run, and
    cached as ``lm.weights.h5``. ``--pretrained-lm PATH`` loads such a file instead of training."""
    from shared.io import atomic_write_bytes
    from shared.optim import OptimizerConfig, make_optimizer
    from shared.precision import dtype_policy

    texts, val_texts = held_out(texts, val_texts)
    stage = run.stage("pretrain_lm")
    cache = Path(args.pretrained_lm) if args.pretrained_lm else stage.dir / WEIGHTS
    if args.pretrained_lm and not cache.is_file():
        raise UserError(f"--pretrained-lm {cache}: no such file (a {WEIGHTS} of an earlier "
                        "run's pretrain_lm/ folder)")
    with run.strategy.scope(), dtype_policy(args.precision):
        lm = build_lm(vectorizer.vocabulary_size(), args.embedding_dim, args.units,
                      args.bidirectional, args.embedding_dropout, LM_DROPOUT)
        if cache.is_file():
            lm.load_weights(str(cache))
            print(f"language model: weights from {cache} (pretraining skipped)")
            return lm
        if initial is not None:  # word2vec vectors as the LM's starting embedding
            lm.get_layer("embedding").set_weights([initial])
        if args.unlabelled:
            extra = read_unlabelled(args.unlabelled)
            print(f"language model: + {len(extra):,} unlabelled reviews from {args.unlabelled}")
            texts = np.concatenate([texts, extra])
        prior = log_unigram(vectorizer, texts)
        for name in ("forward_lm", "backward_lm"):
            if name in {layer.name for layer in lm.layers}:
                lm.get_layer(name).bias.assign(prior)
        batch = run.global_batch(LM_BATCH_SIZE)
        train = lm_dataset(vectorizer, texts, batch, shuffle=True, seed=args.seed)
        val = lm_dataset(vectorizer, val_texts, batch)
        config = OptimizerConfig(name="adam", learning_rate=LM_LEARNING_RATE, schedule="cosine",
                                 epochs=args.lm_epochs, steps_per_epoch=len(train),
                                 global_clipnorm=LM_CLIPNORM)
        lm.compile(optimizer=make_optimizer(config))
    print(f"language model: {len(texts):,} reviews, {args.lm_epochs} epochs of {len(train)} "
          f"batches ({NUM_SAMPLED} sampled classes of {vectorizer.vocabulary_size():,})")
    history = lm.fit(train, validation_data=val, epochs=args.lm_epochs, shuffle=False,
                     verbose=args.verbose,
                     callbacks=stage.callbacks(monitor="val_loss", patience=LM_PATIENCE,
                                               examples_per_step=len(texts) / len(train)))
    tmp = stage.dir / f".{WEIGHTS}.tmp.weights.h5"
    lm.save_weights(str(tmp))  # then moved into place: the cache is never half-written
    atomic_write_bytes(cache, tmp.read_bytes())
    tmp.unlink()
    nats = heldout_nats(lm, vectorizer, val_texts)
    unigram = float(-np.mean(np.take(prior, _targets(vectorizer, val_texts))))
    print(f"language model: validation {nats:.3f} nats/word (perplexity {np.exp(nats):,.0f}; "
          f"the unigram model: {unigram:.3f}, {np.exp(unigram):,.0f})")
    stage.finish({"val_loss": float(min(history.history.get("val_loss", [float("nan")]))),
                  "val_nats_per_word": nats, "unigram_nats_per_word": unigram},
                 extra={"reviews": int(len(texts)), "num_sampled": NUM_SAMPLED})
    return lm


def _targets(vectorizer, texts: np.ndarray) -> np.ndarray:
    """Every word of ``texts`` the forward LM predicts (all but each review's first)."""
    ids = np.asarray(vectorizer(texts))
    return ids[:, 1:][ids[:, 1:] > 0]
