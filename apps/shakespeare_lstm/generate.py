"""Text generation with the loop inside the TensorFlow graph.

The keras-io character LSTM example generates one character per ``model.predict`` call, feeding
the last 40 characters back in each time: every character pays Python, ``predict``'s setup and a
40-step LSTM pass. Here the trained LSTM cells run one step per character inside a
``tf.while_loop``, carrying (h, c) of every layer from step to step, so a whole continuation is
one graph call -- and one REST or gRPC request once exported.

Every input is batched (dimension 0), as TensorFlow Serving's row format and server-side batching
expect: ``prompt`` [B] UTF-8 strings, ``num_chars`` [B] int32, ``temperature`` [B] float32
(<= 0 means greedy argmax decoding), ``top_k`` [B] int32 (<= 0 means no truncation), ``seed`` [B]
int64 (the same seed gives the same text). The unknown-character id is never sampled.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from apps.shakespeare_lstm.data import UNK
from apps.shakespeare_lstm.model import lstm_layers

MAX_NEW_CHARS = 20_000  # refuse longer requests: one call must stay bounded


class CharSampler:
    """Generation and next-character probabilities from a trained model's layers (the weights
    are shared, so a sampler built on the training model follows its training)."""

    def __init__(self, model: keras.Model, vocab: list[str]):
        self.vocab = list(vocab)
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in lstm_layers(model)]
        self.units = [cell.units for cell in self.cells]
        self.dense = model.get_layer("logits")
        self.num_ids = len(self.vocab) + 1
        # Raw strings <-> ids, the same mapping as data.encode (unknown -> 0).
        self.to_ids = keras.layers.StringLookup(vocabulary=self.vocab, num_oov_indices=1,
                                                mask_token=None, oov_token=UNK, name="char_to_id")
        self.to_chars = keras.layers.StringLookup(vocabulary=self.vocab, num_oov_indices=1,
                                                  mask_token=None, oov_token=UNK, invert=True,
                                                  name="id_to_char")
        self.to_ids(tf.constant(["a"]))  # build both lookups (an export needs built layers)
        self.to_chars(tf.constant([1], tf.int64))

    # -- one step of the stacked LSTM ---------------------------------------------------------
    def step(self, ids, states):
        """ids [B] -> logits [B, num_ids]; states: [(h, c) per layer]."""
        x = self.embedding(ids)
        new_states = []
        for cell, (h, c) in zip(self.cells, states):
            x, (h, c) = cell(x, [h, c], training=False)
            new_states.append((h, c))
        return self.dense(x), new_states

    def zero_states(self, batch):
        # In the cells' compute dtype: bfloat16/float16 under a mixed --precision policy.
        return [(tf.zeros([batch, c.units], c.compute_dtype),
                 tf.zeros([batch, c.units], c.compute_dtype)) for c in self.cells]

    def prime(self, prompt):
        """Run the prompts through the LSTM; returns the logits after each prompt's last
        character and the states there. Prompts of different lengths are padded; a row's state
        stops changing after its last character."""
        chars = tf.strings.unicode_split(prompt, "UTF-8")
        lengths = tf.cast(chars.row_lengths(), tf.int32)
        tf.debugging.assert_positive(lengths, message="prompt must not be empty")
        ids = tf.cast(self.to_ids(chars).to_tensor(0), tf.int32)  # [B, P]
        batch = tf.shape(ids)[0]
        states = self.zero_states(batch)
        logits = tf.zeros([batch, self.num_ids])

        def body(t, logits, states):
            new_logits, new_states = self.step(ids[:, t], states)
            live = (t < lengths)[:, None]
            logits = tf.where(live, new_logits, logits)
            states = [(tf.where(live, h1, h0), tf.where(live, c1, c0))
                      for (h1, c1), (h0, c0) in zip(new_states, states)]
            return t + 1, logits, states

        _, logits, states = tf.while_loop(lambda t, *_: t < tf.shape(ids)[1], body,
                                          (tf.constant(0), logits, states))
        return logits, states

    # -- sampling -------------------------------------------------------------------------------
    def choose(self, logits, temperature, top_k, seed, step):
        """Next ids [B]: greedy where temperature <= 0, else a sample from softmax(logits / T)
        restricted to the top_k most likely ids (Gumbel-max with per-row stateless noise)."""
        never = tf.range(self.num_ids) == 0  # the unknown-character slot
        logits = tf.where(never[None, :], -float("inf"), logits)
        greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
        scaled = logits / tf.maximum(temperature, 1e-6)[:, None]
        k = tf.where((top_k <= 0) | (top_k > self.num_ids), self.num_ids, top_k)
        kth = tf.gather(tf.sort(scaled, direction="DESCENDING"), k - 1, batch_dims=1)
        scaled = tf.where(scaled < kth[:, None], -float("inf"), scaled)
        step = tf.cast(step, tf.int64)
        noise = tf.map_fn(
            lambda s: tf.random.stateless_uniform([self.num_ids], tf.stack([s, step]),
                                                  minval=1e-20, maxval=1.0),
            seed, fn_output_signature=tf.float32)
        sampled = tf.argmax(scaled - tf.math.log(-tf.math.log(noise)), axis=-1,
                            output_type=tf.int32)
        return tf.where(temperature > 0, sampled, greedy)

    def generate(self, prompt, num_chars, temperature, top_k, seed):
        """-> {"generated": [B] exactly num_chars characters each, "text": prompt + generated}."""
        prompt = tf.convert_to_tensor(prompt, tf.string)
        num_chars = tf.cast(num_chars, tf.int32)
        temperature = tf.cast(temperature, tf.float32)
        top_k = tf.cast(top_k, tf.int32)
        seed = tf.cast(seed, tf.int64)
        batch = tf.shape(prompt)[0]
        for name, value in (("num_chars", num_chars), ("temperature", temperature),
                            ("top_k", top_k), ("seed", seed)):
            tf.debugging.assert_equal(tf.shape(value)[0], batch,
                                      message=f"{name} must have one value per prompt")
        tf.debugging.assert_non_negative(num_chars, message="num_chars must be >= 0")
        tf.debugging.assert_less_equal(num_chars, MAX_NEW_CHARS,
                                       message=f"num_chars must be <= {MAX_NEW_CHARS}")
        logits, states = self.prime(prompt)
        steps = tf.reduce_max(tf.concat([num_chars, [0]], 0))
        # Slot 0 is a placeholder so that stack() works when no character is asked for.
        out = tf.TensorArray(tf.int32, size=steps + 1, element_shape=[None])
        out = out.write(0, tf.zeros([batch], tf.int32))

        def body(i, logits, states, out):
            ids = self.choose(logits, temperature, top_k, seed, i)
            out = out.write(i + 1, ids)
            logits, states = self.step(ids, states)
            return i + 1, logits, states, out

        _, _, _, out = tf.while_loop(lambda i, *_: i < steps, body,
                                     (tf.constant(0), logits, states, out))
        ids = tf.transpose(out.stack()[1:])  # [B, steps]
        ids = tf.RaggedTensor.from_tensor(ids, lengths=num_chars)
        generated = tf.strings.reduce_join(self.to_chars(ids), axis=-1)
        return {"generated": generated, "text": prompt + generated}

    def next_char(self, prompt, top: int = 5):
        """-> probabilities [B, num_ids] of the character after each prompt (id order: the
        unknown slot, then the vocabulary), and the ``top`` most likely characters."""
        prompt = tf.convert_to_tensor(prompt, tf.string)
        logits, _ = self.prime(prompt)
        probabilities = tf.nn.softmax(logits)
        top_p, top_ids = tf.math.top_k(probabilities, k=min(top, self.num_ids))
        return {"probabilities": probabilities,
                "top_characters": self.to_chars(tf.cast(top_ids, tf.int64)),
                "top_probabilities": top_p}

    # -- convenience for Python callers ---------------------------------------------------------
    def compiled(self):
        """tf.functions with the serving signatures (also used by the per-epoch samples)."""
        if not hasattr(self, "_fns"):
            self._fns = (
                tf.function(self.generate, input_signature=GENERATE_SIGNATURE),
                tf.function(self.next_char, input_signature=NEXT_CHAR_SIGNATURE),
            )
        return self._fns

    def sample_text(self, prompt: str, num_chars: int, temperature: float = 1.0,
                    top_k: int = 0, seed: int = 0) -> str:
        gen, _ = self.compiled()
        out = gen(tf.constant([prompt]), tf.constant([num_chars], tf.int32),
                  tf.constant([temperature], tf.float32), tf.constant([top_k], tf.int32),
                  tf.constant([seed], tf.int64))
        return out["generated"].numpy()[0].decode("utf-8")


GENERATE_SIGNATURE = [
    tf.TensorSpec([None], tf.string, name="prompt"),
    tf.TensorSpec([None], tf.int32, name="num_chars"),
    tf.TensorSpec([None], tf.float32, name="temperature"),
    tf.TensorSpec([None], tf.int32, name="top_k"),
    tf.TensorSpec([None], tf.int64, name="seed"),
]
NEXT_CHAR_SIGNATURE = [tf.TensorSpec([None], tf.string, name="prompt")]


class SampleTexts(keras.callbacks.Callback):
    """After each epoch, write ``samples/epoch_NNN.txt`` into the run directory: one continuation
    of the same prompt at each temperature (0.2, 0.5, 1.0 as in the keras-io example's "diversity"
    loop and Karpathy's blog post), with a fixed seed so epochs are comparable."""

    def __init__(self, sampler: CharSampler, out_dir, prompt: str = "ROMEO:\n",
                 num_chars: int = 300, temperatures=(0.2, 0.5, 1.0), seed: int = 42):
        super().__init__()
        self.sampler, self.out_dir, self.prompt = sampler, out_dir, prompt
        self.num_chars, self.temperatures, self.seed = num_chars, tuple(temperatures), seed

    def on_epoch_end(self, epoch, logs=None):
        from pathlib import Path

        from shared.io import atomic_write_text

        parts = []
        for t in self.temperatures:
            text = self.sampler.sample_text(self.prompt, self.num_chars, t, 0, self.seed)
            parts.append(f"=== temperature {t} (seed {self.seed}) ===\n{self.prompt}{text}\n")
        atomic_write_text(Path(self.out_dir) / "samples" / f"epoch_{epoch + 1:03d}.txt",
                          "\n".join(parts))
