"""The generator's export: its signatures and metadata (the runner writes the versioned
SavedModel atomically, behind the gate, with shared/export.py).

Signatures (what TensorFlow Serving and ``tf.saved_model.load`` see):

- ``serving_default``: ``latent`` float32 [batch, 100] -> ``images`` uint8 [batch, H, W, C]
  (pixels 0..255, ready to display or save; no postprocessing in the client).
- ``sample``: ``count`` int32 scalar, ``seed`` int64 scalar -> ``images`` uint8 [count, H, W, C]
  and the ``latent`` float32 [count, 100] they came from. The latent vectors are drawn by
  ``tf.random.stateless_normal`` from the seed, so the same seed always gives the same images
  (and ``serving_default(latent)`` reproduces them). ``count`` is limited to MAX_COUNT per call.

A generator trained with ``--labels`` (AC-GAN; metadata ``"conditional": true``, ``"categories":
10``) takes the same latent vectors, and the largest of their first 10 coordinates picks the
class: to ask for digit c, make coordinate c the largest (e.g. set it to 5).
"""

from __future__ import annotations

MAX_COUNT = 10_000


def model_name(dataset: str) -> str:
    """``dcgan`` for MNIST (the default), ``dcgan_<dataset>`` otherwise."""
    return "dcgan" if dataset == "mnist" else f"dcgan_{dataset}"


def endpoints(generator) -> dict:
    """The export's signatures (``serving_default`` and ``sample``) over ``generator``."""
    import tensorflow as tf

    latent_dim = int(generator.inputs[0].shape[-1])

    def to_uint8(images):  # generator output in [-1, 1] -> 0..255
        return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)

    def serve(latent):
        return {"images": to_uint8(generator(latent, training=False))}

    def sample(count, seed):
        checks = [tf.debugging.assert_non_negative(count, message="count must be >= 0"),
                  tf.debugging.assert_less_equal(count, MAX_COUNT,
                                                 message=f"count must be <= {MAX_COUNT}")]
        with tf.control_dependencies(checks):
            seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
            latent = tf.random.stateless_normal(tf.stack([count, latent_dim]), seed=seed_pair)
        return {"images": to_uint8(generator(latent, training=False)), "latent": latent}

    return {
        "serving_default": (serve, [tf.TensorSpec([None, latent_dim], tf.float32,
                                                  name="latent")]),
        "sample": (sample, [tf.TensorSpec([], tf.int32, name="count"),
                            tf.TensorSpec([], tf.int64, name="seed")]),
    }
