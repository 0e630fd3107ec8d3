"""Classify IMDB reviews as positive or negative with a GRU, from raw text in to polarity out.

    python -m apps.sentiment_gru.train                       # the default configuration
    python -m apps.sentiment_gru.train --epochs 2 --limit 5000
    python -m apps.sentiment_gru.train --no-bidirectional --units 128
    python -m apps.sentiment_gru.train --strategy mirrored --devices 2
    python -m apps.sentiment_gru.train --pretrain none        # no language model first

Reads top to bottom: data -> vocabulary -> language-model pretraining -> model -> train ->
evaluate -> export. The embedding and the GRU first learn to predict the words of the training
reviews (Dai & Le 2015; lm.py), and the classifier trains from them with its own recipe (or, with
``--fine-tune ulmfit``, as ULMFiT does: the new head first, then one layer more per epoch, each
lower layer at 1/2.6 of the rate above it, on slanted triangular rates). The exported
SavedModel's ``serving_default`` takes a batch of UTF-8 reviews and returns ``probability``
(P(positive)) and ``label`` ("positive"/"negative"): the vocabulary and the text standardization
travel inside it. Measurements of the options (pooling, embedding dropout, word2vec embeddings,
schedule) are in benchmarks/REPORT.md.
"""

from __future__ import annotations

import argparse

from shared.app import App, Data, UserError
from shared.flags import nonnegative_int, positive_int

# The settings recorded in the export's metadata (assets.extra/ksuite.json).
CONFIG_KEYS = ("max_tokens", "sequence_length", "embedding_dim", "units", "bidirectional",
               "dropout", "pooling", "embedding_dropout", "embeddings", "pretrain", "fine_tune")
# Discriminative fine-tuning, --fine-tune ulmfit (Howard & Ruder 2018, ULMFiT §3.2): each layer
# below the classifier's head learns at 1/2.6 of the rate of the layer above it; gradual
# unfreezing (§3.3) opens them one epoch at a time, top first.
LAYER_DECAY = 2.6  # ULMFiT eta^{l-1} = eta^l / 2.6
UNFREEZE_ORDER = ("bidirectional_gru", "gru", "embedding")  # top to bottom


class SentimentGRU(App):
    name = "sentiment_gru"
    description = "IMDB review polarity from raw text with a GRU"
    order = 5
    metric = "accuracy"  # on all 25,000 test reviews
    adversarial_norm = "l2"  # --adversarial: on the embeddings (Miyato, Dai & Goodfellow 2017)
    # --precision auto. CPU: mixed_bfloat16 where the CPU has AVX512-BF16/AMX (float32
    # elsewhere, shared/precision.py). At 64 units it was 0.99x float32's examples/s at the same
    # accuracy (device_check, 2026-12-04); at 256-512 units the GRU's matmuls gain from it:
    # 1.17x a training epoch at 256, 1.43x a BiGRU step at 512 (2026-12-06, notes). GPU:
    # mixed_float16 (TensorFlow mixed-precision guide; unmeasured).
    precision_defaults = {"cpu": "mixed_bfloat16", "gpu": "mixed_float16"}
    loss = "binary_crossentropy"
    defaults = dict(
        # 4 epochs of a cosine to zero: 90.50% test at 256 units and eps 5; 8 epochs peaked in
        # validation at epoch 4 (mid-schedule) and gave 90.22% (benchmarks/notes/sentiment_gru.md).
        # The best epoch on the 2,500 validation reviews was the 4th of 4 in every 4-epoch run,
        # so the default trains those 4 on all 25,000 reviews (Algorithm 7.2).
        # keras-io's bidirectional IMDB example trains 2; Chollet DLwP ch. 11: overfits after 2-4.
        epochs=4,
        batch_size=128,  # for CPU throughput; keras-io's IMDB examples use 32 (GPU-sized steps)
        optimizer="adam",  # Kingma & Ba 2015; Géron ch. 16 trains his IMDB GRU with Nadam
        learning_rate=1e-3,  # Adam's default (Kingma & Ba 2015; Keras)
        schedule="cosine",  # decay to zero over the run (Loshchilov & Hutter 2017)
        clipnorm=1.0,  # gradient clipping for RNNs (Pascanu et al. 2013; Géron ch. 11: 1.0)
        # Nothing held out by default (--val-size 0, Algorithm 7.2), so nothing to stop on: the
        # cosine ends the run. With --val-size N, --patience 3 stops after 3 epochs without
        # progress (mid-run plateaus of 1-2 epochs end before the cosine's low rates; notes).
        patience=None,
        # Adversarial training on the embeddings (the course's §7.13): Miyato, Dai & Goodfellow
        # 2017 use eps 5.0 on IMDB; +0.7 points at 64 units (notes).
        adversarial=5.0,
        monitor="val_accuracy",  # Algorithm 7.1 watches the validation error
    )
    # --fine-tune ulmfit fine-tunes as ULMFiT does (Howard & Ruder 2018): slanted triangular
    # rates (§3.2, cut_frac 0.1, ratio 32) and one more epoch per layer opened by gradual
    # unfreezing (head, + GRU, + embedding: 3 epochs) before 2 epochs of the whole network; its
    # early stopping reads the 2,500 validation reviews. --fine-tune all (the default) trains the
    # pretrained classifier with the default recipe: at 64 units 88.38% test against ULMFiT's
    # 75.40% from the same language model (benchmarks/notes/sentiment_gru.md).
    presets = {"fine_tune": {"all": {}, "ulmfit": {"schedule": "slanted", "epochs": 5,
                                                   "val_size": 2500, "patience": 3}}}
    anchor = {"value": 0.9122, "metric": "test accuracy", "target": ">= 0.913, above NBSVM",
              "source": "NBSVM-bigram, Wang & Manning 2012 (measured beside the GRU: "
                        "benchmarks/sentiment_vs_nbsvm.py)",
              "previous": {"value": 0.87, "metric": "test accuracy",
                           "source": "Géron, GRU with masking (86.96-87.00%; target >= 0.89)"}}
    # The contract test's tiny run (tests/test_apps_contract.py).
    smoke = ["--epochs", "1", "--limit", "1000", "--test-limit", "200",
             "--no-bidirectional", "--units", "16", "--embedding-dim", "32",
             "--sequence-length", "40", "--max-tokens", "2000", "--embeddings", "random"]
    budgets = {
        "default": [],
        "small": ["--epochs", "3", "--embeddings", "random", "--pretrain", "none"],  # quicker
        "tiny": ["--epochs", "1", "--limit", "5000", "--no-bidirectional", "--units", "32",
                 "--sequence-length", "200"],
    }

    def add_flags(self, a):
        a.add_argument("--data-dir", default=None,
                       help="an extracted aclImdb/ folder (default: the registry's archive)")
        # 30,000: Johnson & Zhang 2016's LSTM vocabulary (91.86% on IMDB without unlabelled
        # data); 2.0% of the test words fall outside it, 3.0% outside keras-io's 20,000.
        a.add_argument("--max-tokens", type=positive_int, default=30000,
                       help="vocabulary size incl. padding and OOV (Johnson & Zhang 2016)")
        # 1,000 words cut 0.4% of the test reviews (500: 7.9%); +0.16 points over 500 (90.66%
        # against 90.50%, notes). keras-io's text_classification_from_scratch keeps 500, Chollet
        # DLwP ch. 11 600; Johnson & Zhang (2016) read whole reviews.
        a.add_argument("--sequence-length", type=positive_int, default=1000,
                       help="words kept per review, from its start")
        a.add_argument("--embedding-dim", type=positive_int, default=128,
                       help="embedding size (keras-io; Géron ch. 16: 128)")
        # 512 per direction: each doubling from 64 added ~0.25 points under --adversarial 5
        # (notes); Miyato et al. 2017 read IMDB with one 1,024-unit LSTM.
        a.add_argument("--units", type=positive_int, default=512,
                       help="GRU units per direction")
        a.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True,
                       help="read the review in both directions (keras-io bidirectional_lstm_imdb)")
        a.add_argument("--dropout", type=float, default=0.5,
                       help="dropout before the classifier (Chollet DLwP ch. 11: 0.5)")
        a.add_argument("--pooling", choices=("last", "mean", "max", "meanmax"), default="meanmax",
                       help="GRU's last state, or masked mean/max/both of its outputs (ULMFiT)")
        a.add_argument("--embedding-dropout", type=float, default=0.4,
                       help="SpatialDropout1D on the embeddings (Gal & Ghahramani 2016); 0 = off")
        a.add_argument("--embeddings", default="word2vec", metavar="word2vec|random|PATH",
                       help="initial embeddings: word2vec on the training reviews, random, or a "
                            "word2vec text file")
        # A language model first: 92.75% test against 91.10% without it, the same run's NBSVM
        # 91.40% (benchmarks/notes/sentiment_gru.md); Dai & Le 2015: 92.4-92.8% on IMDB.
        a.add_argument("--pretrain", choices=("none", "lm"), default="lm",
                       help="lm: pretrain embedding and GRU as a language model on the training "
                            "reviews, then fine-tune (Dai & Le 2015; ULMFiT); none: word2vec only")
        a.add_argument("--fine-tune", choices=("all", "ulmfit"), default="all",
                       help="after --pretrain lm: all layers at the default recipe, or ULMFiT's "
                            "per-layer rates and gradual unfreezing")
        # One epoch: measured on the full training split, the sampled-softmax LM reaches 5.59
        # nats/word after 1 epoch (unigram: 6.72) and 7.07 after 4, its sampled loss still
        # falling (benchmarks/notes/sentiment_gru.md); ULMFiT fine-tunes its LM for ~10 epochs.
        a.add_argument("--lm-epochs", type=positive_int, default=1,
                       help="--pretrain lm: language-model epochs over the reviews")
        a.add_argument("--unlabelled", default=None, metavar="DIR",
                       help="--pretrain lm: also read the unlabelled reviews in DIR "
                            "(aclImdb/train/unsup, 50,000 reviews)")
        a.add_argument("--pretrained-lm", default=None, metavar="PATH",
                       help="--pretrain lm: start from this lm.weights.h5 of an earlier run "
                            "instead of pretraining")
        # 0: all 25,000 reviews train (Goodfellow et al. 2016, Algorithm 7.2: the epoch count was
        # chosen on a 22,500 / 2,500 split; --val-size 2500 holds that split out again).
        a.add_argument("--val-size", type=nonnegative_int, default=0,
                       help="training reviews held out for validation (0: train on all 25,000)")
        a.add_argument("--test-limit", type=positive_int, default=None,
                       help="evaluate on the first N test reviews of a seeded shuffle")

    def check(self, args):
        if not 0 <= args.dropout < 1 or not 0 <= args.embedding_dropout < 1:
            raise UserError("--dropout and --embedding-dropout must be in [0, 1)")
        if args.max_tokens < 3:
            raise UserError("--max-tokens must be at least 3 (padding, OOV and one word)")
        if args.pretrain != "lm" and (args.unlabelled or args.pretrained_lm):
            raise UserError("--unlabelled and --pretrained-lm need --pretrain lm")
        if args.pretrain != "lm" and args.fine_tune == "ulmfit":
            raise UserError("--fine-tune ulmfit needs --pretrain lm")

    # 1. Data: raw reviews read by text_dataset_from_directory, all 25,000 training reviews
    #    (or a seeded train/validation split, --val-size), the 25,000 test reviews kept aside.
    def load_data(self, args, run):
        from apps.sentiment_gru import data
        from apps.sentiment_gru.embeddings import initial_embeddings

        (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = data.load(
            args.limit, args.seed, args.val_size, args.data_dir, args.test_limit)
        print(f"data: {len(x_tr)} train ({y_tr.mean():.1%} positive), {len(x_val)} validation, "
              f"{len(x_test)} test reviews")

        # The vocabulary is adapted on the training reviews only, so no word statistics leak
        # from the validation or test sets. Id 0 is padding, id 1 an out-of-vocabulary word.
        vectorizer = data.make_vectorizer(x_tr, args.max_tokens, args.sequence_length)
        print(f"vocabulary: {vectorizer.vocabulary_size()} tokens (max {args.max_tokens})")
        initial = initial_embeddings(args, run, vectorizer, x_tr)  # embeddings.py

        # With --pretrain lm, the embedding and GRU first learn to predict the words of the
        # training reviews (lm.py: the run's stage pretrain_lm, resumable and cached).
        language_model = None
        if args.pretrain == "lm":
            from apps.sentiment_gru import lm

            language_model = lm.pretrain(args, run, vectorizer, x_tr, x_val, initial)

        batch = run.global_batch(args.batch_size)
        train = data.make_dataset(vectorizer, x_tr, y_tr, batch, shuffle=True, seed=args.seed)
        steps = len(train)  # length-bucketed batches: a few more than len(x_tr) / batch
        val = data.make_dataset(vectorizer, x_val, y_val, batch) if len(x_val) else None
        return Data(train=train, val=val,
                    steps_per_epoch=steps, examples_per_step=len(x_tr) / steps,
                    vectorizer=vectorizer, initial=initial, batch=batch, lm=language_model,
                    x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val, x_test=x_test,
                    y_test=y_test)

    # 2. Model: Embedding(mask_zero) -> (Bi)GRU -> masked mean+max pooling -> P(positive)
    #    (model.py). The runner compiles it with the shared optimizer factory (Adam, gradients
    #    clipped to norm --clipnorm) inside the strategy's scope.
    def build_model(self, args, data, run):
        model = self._classifier(args, data)
        if data.lm is not None:
            from apps.sentiment_gru.lm import transfer

            print(f"language model -> classifier: {', '.join(transfer(data.lm, model))}")
        elif data.initial is not None:
            model.get_layer("embedding").set_weights([data.initial])
        return model

    @staticmethod
    def _classifier(args, data):
        from apps.sentiment_gru.model import build_classifier

        return build_classifier(data.vectorizer.vocabulary_size(), args.embedding_dim,
                                args.units, args.bidirectional, args.dropout, args.pooling,
                                args.embedding_dropout, bool(args.adversarial))

    # With --fine-tune ulmfit, the optimizer gives each pretrained layer its own (lower) rate.
    def compile(self, args, model, data, run):
        if args.fine_tune != "ulmfit":
            return super().compile(args, model, data, run)
        from shared.layer_rates import LayerRateAdam
        from shared.optim import learning_rate
        from shared.precision import jit_compile

        config = self.optimizer_config(args, data)
        if config.name != "adam":
            raise UserError("--fine-tune ulmfit trains with Adam and per-layer rates: use "
                            "--optimizer adam")
        names = {layer.name for layer in model.layers}
        layers = [n for n in UNFREEZE_ORDER if n in names]
        rates = {n: LAYER_DECAY ** -(i + 1) for i, n in enumerate(layers)}
        model.compile(optimizer=LayerRateAdam(learning_rate(config), layer_rates=rates,
                                              beta_1=config.beta_1, beta_2=config.beta_2,
                                              epsilon=config.epsilon, clipnorm=config.clipnorm),
                      loss=self.loss, metrics=list(self.compile_metrics),
                      jit_compile=jit_compile(args))

    # 3. Train with the shared callbacks, plus the gradient norm on a fixed validation batch
    #    (an exploding or vanishing recurrent gradient shows there first).
    def callbacks(self, args, model, data, run):
        from apps.sentiment_gru.data import make_dataset
        from shared.callbacks import GradientNormMonitor

        x, y = (data.x_val, data.y_val) if len(data.x_val) else (data.x_train, data.y_train)
        probe_x, probe_y = next(iter(make_dataset(data.vectorizer, x[:256], y[:256], 256,
                                                  bucket=False)))
        extra = [GradientNormMonitor(probe_x, probe_y)]
        if args.fine_tune == "ulmfit":  # the head alone first, then one more layer per epoch
            from shared.callbacks import GradualUnfreezing

            extra.append(GradualUnfreezing(list(model.optimizer.layer_rates)))
        return extra

    # 4. Evaluate once on the test reviews.
    def evaluate(self, args, model, data, run):
        from apps.sentiment_gru.data import make_dataset

        test = model.evaluate(make_dataset(data.vectorizer, data.x_test, data.y_test, data.batch),
                              return_dict=True, verbose=0)
        return {"accuracy": float(test["accuracy"]), "loss": float(test["loss"]),
                "test_reviews": int(len(data.x_test))}

    # Per-class evaluation (the runner's): negative / positive reviews, P(positive) >= 0.5.
    def class_names(self, args, data):
        from apps.sentiment_gru.data import LABELS

        return list(LABELS)

    def test_predictions(self, args, model, data):
        from apps.sentiment_gru.data import make_dataset
        from shared.evaluation import predict_dataset

        return predict_dataset(model, make_dataset(data.vectorizer, data.x_test, data.y_test,
                                                   data.batch))

    def headline(self, metrics, record):
        return (f"test accuracy {metrics['accuracy']:.4f}, test loss {metrics['loss']:.4f} on "
                f"{metrics['test_reviews']} reviews ({record.get('epochs_run', '?')} epochs, "
                f"{record['wall_seconds']:.0f} s)")

    # 5. Export vectorizer + model as one SavedModel: ``reviews`` (tf.string [batch]) in,
    #    ``probability`` (float32 [batch]) and ``label`` (tf.string [batch]) out.
    def endpoints(self, args, model, data):
        import tensorflow as tf

        vectorizer, model = data.vectorizer, self._served(args, model, data)

        def serve(reviews):
            # The vectorizer pads every review to --sequence-length; the padding is masked
            # anyway, so the batch is cut to its longest review and a short review costs a
            # short GRU run.
            ids = vectorizer(reviews)
            longest = tf.reduce_max(tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1))
            ids = ids[:, : tf.maximum(longest, 1)]
            probability = model(ids, training=False)[:, 0]
            label = tf.where(probability >= 0.5, tf.constant("positive"), tf.constant("negative"))
            return {"probability": probability, "label": label}

        serve(tf.constant([""]))  # builds every layer (ExportArchive tracks built layers only)
        return {"serving_default": (serve, [tf.TensorSpec([None], tf.string, name="reviews")])}

    def tracked(self, args, model, data):
        return [data.vectorizer, self._served(args, model, data)]

    def _served(self, args, model, data):
        """The classifier as served, built once: the trained one, or under a 16-bit training
        policy a float32 copy of it (the same weights; the variables are float32 either way).
        One review at a time, the GRU's steps are [1, units] products, which bfloat16 slows
        down: 215 ms against 74-96 ms for a 434-word review at 512 units (notes)."""
        if getattr(data, "served_model", None) is None:
            served = model
            if model.get_layer("embedding").compute_dtype != "float32":
                from shared.precision import dtype_policy

                with dtype_policy("float32"):
                    served = self._classifier(args, data)
                served.set_weights(model.get_weights())
            data.served_model = served
        return data.served_model

    def export_metadata(self, args, data):
        return {"config": {k: getattr(args, k) for k in CONFIG_KEYS}}

    # The pipeline's first stage: the reviews this run would train and test on.
    def validate_data(self, args):
        from apps.sentiment_gru.data import dataset_dir, read_reviews
        from shared.validate import Report, check_labels, check_texts

        root = dataset_dir(args.data_dir)
        report = Report(self.name, str(root))
        for split in ("train", "test"):
            x, y = read_reviews(root / split, args.seed, shuffle=split == "train")
            if split == "train" and args.limit:  # the first N of the seeded shuffle, as load
                x, y = x[: args.limit], y[: args.limit]
            check_texts(report, split, x, min_count=20 if split == "train" else 1)
            check_labels(report, split, y, 2, n=len(x))
        return report

    # What `ksuite skew` compares logged requests with: the training reviews, as served (text).
    def reference_inputs(self, model_name, limit=None):
        from apps.sentiment_gru.data import dataset_dir, read_reviews

        x, _ = read_reviews(dataset_dir() / "train", seed=42, shuffle=True)
        return {"reviews": [r.decode("utf-8", "replace") if isinstance(r, bytes) else r
                            for r in x[:limit]]}


APP = SentimentGRU()
main = APP.main

if __name__ == "__main__":
    main()
