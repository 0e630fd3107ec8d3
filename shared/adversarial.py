"""Adversarial training, written once: ``--adversarial EPS`` on any app whose model marks a point.

The course (Goodfellow et al. 2016, §7.13) trains on adversarial examples as a regularizer: a
small perturbation in the direction that raises the loss the most, found from the gradient.
Goodfellow, Shlens & Szegedy (2015, §5-6) train on

    J~(theta, x, y) = alpha J(theta, x, y) + (1 - alpha) J(theta, x + r, y)

with the fast gradient sign method ``r = eps sign(grad_x J)`` and alpha = 0.5: on MNIST a
maxout net's test error fell from 0.94% to 0.84%. Miyato, Dai & Goodfellow (2017) carry it to
text, where the input is a sequence of word ids that cannot move by eps: the perturbation is
added to the *embeddings*, in the L2 direction ``r = eps g / ||g||_2`` over the whole sequence
(g the gradient of the loss at the embeddings), with eps in units of normalised embeddings.

Where the perturbation goes is the app's choice: its model places a :class:`PerturbationPoint`
(an identity layer) there, after MNIST's pixel scaling or after the review's embedding. The
runner then rebuilds the same graph as an :class:`AdversarialModel`, whose ``train_step``
makes two passes over each batch:

1. the clean pass: predictions, loss, and the gradient of the loss both at the point and at the
   weights (one backward pass gives both);
2. the adversarial pass: the same batch with ``r`` added at the point (``r`` held constant, as
   in both papers), and the gradient of its loss at the weights.

The optimizer gets ``alpha g_clean + (1 - alpha) g_adv``, so a step costs about two plain steps.
The metrics (and the logged ``loss``) are the clean pass's; ``adversarial_loss`` is logged
beside them. Evaluation, prediction and the export see the plain model: outside training the
point is the identity.

``norm``:

- ``"sign"``: ``r = eps sign(g)`` (the fast gradient sign method), eps in the point's own units
  (MNIST pixels in [0, 1]: Goodfellow et al. 2015 use 0.25).
- ``"l2"``: ``r = eps s g / ||g||_2`` per example, over every axis but the batch's, where s is
  the standard deviation of the values at the point over the batch's unmasked positions. Miyato
  et al. normalise the embeddings to unit variance per dimension (weighted by word frequency)
  and take eps there; the tokens of a batch are drawn by frequency, so ``s`` rescales eps to
  embeddings that are not normalised.
"""

from __future__ import annotations

import contextlib

import keras

from shared.errors import UserError

ALPHA = 0.5  # Goodfellow, Shlens & Szegedy 2015, §6: "we used alpha = 0.5 in all experiments"
NORMS = ("sign", "l2")
POINT = "adversarial_point"  # the PerturbationPoint's layer name


class _Hook:
    """What the train step tells the point (a plain object: Keras does not track it)."""

    def __init__(self):
        self.tape = None  # set: watch the input and keep it (the clean pass)
        self.delta = None
        self.value = None
        self.mask = None


@contextlib.contextmanager
def _set(hook: _Hook, **state):
    """The hook's fields set for one forward pass, cleared after it (even if it raises)."""
    for key, value in state.items():
        setattr(hook, key, value)
    try:
        yield hook
    finally:
        for key in state:
            setattr(hook, key, None)


@keras.saving.register_keras_serializable("shared")
class PerturbationPoint(keras.layers.Layer):
    """The identity, except inside :class:`AdversarialModel`'s train step: there it hands its
    input to the clean pass and adds the perturbation in the adversarial pass. Passes the mask
    through (after an ``Embedding(mask_zero=True)``)."""

    def __init__(self, name: str = POINT, **kwargs):
        super().__init__(name=name, **kwargs)
        self.supports_masking = True
        self.hook = _Hook()

    def call(self, x, mask=None):
        hook = self.hook
        if hook.tape is not None:  # an input from the data is not on the tape by itself
            hook.tape.watch(x)
            hook.value, hook.mask = x, mask
        if hook.delta is not None:
            return x + keras.ops.cast(hook.delta, x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def direction(gradient, value, mask, epsilon: float, norm: str):
    """The perturbation r for the gradient ``gradient`` of the loss at the point's ``value``
    ([batch, ...]; ``mask`` [batch, time] or None), as the module docstring defines it."""
    import tensorflow as tf

    gradient = tf.cast(gradient, tf.float32)  # bfloat16/float16 under a mixed policy
    if norm == "sign":
        return epsilon * tf.sign(gradient)
    axes = list(range(1, len(gradient.shape)))
    value = tf.cast(value, tf.float32)
    if mask is not None:  # padded steps carry no gradient and do not count in s
        keep = tf.cast(mask, tf.float32)[..., None]
    else:
        keep = tf.ones_like(value[..., :1])
    count = tf.maximum(tf.reduce_sum(keep), 1.0)  # unmasked positions
    flat = list(range(len(value.shape) - 1))
    mean = tf.reduce_sum(value * keep, axis=flat) / count
    variance = tf.reduce_sum(tf.square((value - mean) * keep), axis=flat) / count
    scale = tf.sqrt(tf.reduce_mean(variance))
    length = tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=axes, keepdims=True))
    return tf.stop_gradient(epsilon * scale * gradient / tf.maximum(length, 1e-12))


def _mix(a, b, alpha: float):
    """alpha a + (1 - alpha) b for two gradients of one variable (embedding tables' gradients
    are IndexedSlices: they stay sparse)."""
    import tensorflow as tf

    if a is None and b is None:  # a variable the loss does not reach (as Keras' own step)
        return None
    if a is None or b is None:  # reached by one pass only: the other contributes zero
        return alpha * a if b is None else (1 - alpha) * b
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([alpha * a.values, (1 - alpha) * b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return alpha * tf.convert_to_tensor(a) + (1 - alpha) * tf.convert_to_tensor(b)


@keras.saving.register_keras_serializable("shared")
class AdversarialModel(keras.Model):
    """A functional model trained on clean and adversarial examples (module docstring)."""

    adds_model_losses = True  # the train step's loss includes model.losses (shared/regularizers)

    def __init__(self, *args, epsilon: float = 0.25, norm: str = "sign", alpha: float = ALPHA,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}")
        if not epsilon > 0 or not 0 <= alpha <= 1:
            raise ValueError("need epsilon > 0 and 0 <= alpha <= 1")
        self.epsilon, self.norm, self.alpha = float(epsilon), norm, float(alpha)
        self.point = self.get_layer(POINT)
        self.adversarial_tracker = keras.metrics.Mean(name="adversarial_loss")

    def _loss(self, x, y, y_pred, sample_weight):
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=True)
        return loss, self.optimizer.scale_loss(loss)

    def train_step(self, data):
        import tensorflow as tf
        from keras.src.losses import loss as loss_module

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        hook, weights = self.point.hook, self.trainable_weights
        with tf.GradientTape() as tape:
            with _set(hook, tape=tape, value=None, mask=None):
                y_pred = self(x, training=True)
                value, mask = hook.value, hook.mask
            loss, scaled = self._loss(x, y, y_pred, sample_weight)
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                        sample_weight=batch)
        at_point, *clean = tape.gradient(scaled, [value, *weights])
        r = direction(at_point, value, mask, self.epsilon, self.norm)
        with tf.GradientTape() as tape:
            with _set(hook, delta=r):
                y_adversarial = self(x, training=True)
            adversarial, scaled = self._loss(x, y, y_adversarial, sample_weight)
        self.adversarial_tracker.update_state(
            loss_module.unscale_loss_for_distribution(adversarial), sample_weight=batch)
        perturbed = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(
            (_mix(a, b, self.alpha), w) for a, b, w in zip(clean, perturbed, weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):  # evaluation is clean: no adversarial loss to report
        logs = super().test_step(data)
        return {k: v for k, v in logs.items() if k != self.adversarial_tracker.name}

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "norm": self.norm,
                "alpha": self.alpha}


def make_adversarial(model, epsilon: float, norm: str, alpha: float = ALPHA):
    """The same layers (and weights) as ``model``, trained adversarially. Raises UserError when
    the model has no :class:`PerturbationPoint`."""
    if not isinstance(model, keras.Model) or not any(
            isinstance(layer, PerturbationPoint) for layer in model.layers):
        raise UserError("--adversarial: this app's model has no perturbation point")
    return AdversarialModel(model.inputs, model.outputs, name=model.name, epsilon=epsilon,
                            norm=norm, alpha=alpha)


__all__ = ["ALPHA", "AdversarialModel", "NORMS", "POINT", "PerturbationPoint", "direction",
           "make_adversarial"]
