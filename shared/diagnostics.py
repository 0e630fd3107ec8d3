"""Diagnostics on a fixed probe batch, logged each epoch by the shared callbacks: the fraction of
dead ReLU units, the loss gradient's norm (and curvature), activation histograms.

Re-exported by ``shared.callbacks``, where users import them.
"""

from __future__ import annotations

import keras
import numpy as np


def _relu_layers(model):
    out = []
    for layer in (model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers")
                  else model.layers):
        act = getattr(layer, "activation", None)
        if isinstance(layer, keras.layers.ReLU) or act in (keras.activations.relu,) or (
            getattr(act, "__name__", "") == "relu"
        ):
            out.append(layer)
    return out


class DeadReLUMonitor(keras.callbacks.Callback):
    """Fraction of ReLU units that output 0 for every example of a fixed probe batch ("dead"
    units, Goodfellow et al. §6.3.1): ``dead_relu_fraction`` in the logs each epoch, and per
    layer in ``per_layer``. Works for Sequential and functional models."""

    def __init__(self, probe_x, every: int = 1):
        super().__init__()
        self.probe_x, self.every = probe_x, every
        self._probe_model = None
        self.per_layer: dict[str, float] = {}

    def _build(self):
        layers = _relu_layers(self.model)
        if not layers:
            return None
        inputs = self.model.inputs
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                           [layer.output for layer in layers])

    def compute(self) -> float:
        if self._probe_model is None:
            self._probe_model = self._build()
        if self._probe_model is None:
            return float("nan")
        acts = self._probe_model(self.probe_x, training=False)
        acts = acts if isinstance(acts, (list, tuple)) else [acts]
        dead = total = 0
        for layer, a in zip(_relu_layers(self.model), acts):
            a = keras.ops.convert_to_numpy(a).reshape(len(self.probe_x), -1)
            d = int(np.sum(np.all(a <= 0, axis=0)))
            self.per_layer[layer.name] = d / a.shape[1]
            dead, total = dead + d, total + a.shape[1]
        return dead / max(total, 1)

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every == 0 and logs is not None:
            logs["dead_relu_fraction"] = self.compute()


class GradientNormMonitor(keras.callbacks.Callback):
    """Global L2 norm of the loss gradient on a fixed probe batch, ``grad_norm`` in the logs each
    epoch (a vanishing or exploding gradient shows here first).

    ``curvature=True`` also logs the curvature along the gradient, ``grad_curvature`` = g'Hg (one
    Hessian-vector product, forward over backward), and the step size it implies,
    ``curvature_step`` = g'g / g'Hg: the second-order Taylor expansion f(x - eg) ~ f(x) - e g'g
    + e^2 g'Hg / 2 is smallest there (Goodfellow et al. §4.3.1, eqs. 4.9-4.10; §8.2.1). A
    learning rate far above it overshoots along the gradient; g'Hg <= 0 means no such bound."""

    def __init__(self, probe_x, probe_y, every: int = 1, curvature: bool = False):
        super().__init__()
        self.probe_x, self.probe_y, self.every = probe_x, probe_y, every
        self.curvature = curvature

    def _variables(self):
        return [w.value if hasattr(w, "value") else w for w in self.model.trainable_weights]

    def _loss(self, x, y):
        y_pred = self.model(x, training=False)
        return self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)

    def compute(self) -> float:
        """The norm, in a graph traced once per set of trainable variables: eager execution
        steps a recurrent layer through time one Python call at a time (a 1,000-word review
        batch took minutes); gradual unfreezing changes the set, and with it the graph."""
        import tensorflow as tf

        variables = self._variables()
        key = tuple(id(v) for v in variables)
        if getattr(self, "_traced_for", None) != key:
            self._traced_for = key

            def norm(x, y):
                with tf.GradientTape() as tape:
                    loss = self._loss(x, y)
                grads = [g for g in tape.gradient(loss, variables) if g is not None]
                return tf.linalg.global_norm(grads) if grads else tf.constant(0.0)

            self._norm = tf.function(norm)
        x = tf.convert_to_tensor(self.probe_x)
        y = tf.convert_to_tensor(self.probe_y)
        return float(self._norm(x, y).numpy())

    def compute_curvature(self) -> tuple[float, float]:
        """(g'Hg, g'g) on the probe batch."""
        import tensorflow as tf

        x = tf.convert_to_tensor(self.probe_x)
        y = tf.convert_to_tensor(self.probe_y)
        variables = self._variables()
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = self._loss(x, y)
            grads = inner.gradient(loss, variables)
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            fixed = [tf.stop_gradient(g) for g, _ in pairs]
            g_dot_g = tf.add_n([tf.reduce_sum(g * f) for (g, _), f in zip(pairs, fixed)])
        hv = outer.gradient(g_dot_g, [v for _, v in pairs])
        ghg = tf.add_n([tf.reduce_sum(f * h) for f, h in zip(fixed, hv) if h is not None])
        return float(ghg.numpy()), float(g_dot_g.numpy())

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every == 0 and logs is not None:
            logs["grad_norm"] = self.compute()
            if self.curvature:
                ghg, gg = self.compute_curvature()
                logs["grad_curvature"] = ghg
                logs["curvature_step"] = gg / ghg if ghg > 0 else float("inf")


class ActivationHistograms(keras.callbacks.Callback):
    """Histograms of every layer's output on a fixed probe batch, written to TensorBoard every
    ``every`` epochs (``--histograms N``, beside Keras' weight histograms): saturated or dead
    units and exploding activations show as a histogram piled at a bound (Goodfellow et al.
    §6.3, §8.2). Functional and Sequential models; layers with several outputs are skipped."""

    def __init__(self, probe_x, log_dir, every: int = 1):
        super().__init__()
        self.probe_x, self.log_dir, self.every = probe_x, str(log_dir), every
        self._probe_model = None
        self._layers: list = []
        self._writer = None

    def _build(self):
        inputs = getattr(self.model, "inputs", None)
        if not inputs:
            return None
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            try:
                out = layer.output
            except (AttributeError, ValueError):
                continue
            if not isinstance(out, (list, tuple, dict)):
                self._layers.append((layer.name, out))
        if not self._layers:
            return None
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                           [out for _, out in self._layers])

    def compute(self) -> dict:
        """Layer name -> its output on the probe batch, as a NumPy array."""
        if self._probe_model is None:
            self._probe_model = self._build() or False
        if not self._probe_model:
            return {}
        outs = self._probe_model(self.probe_x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {name: keras.ops.convert_to_numpy(o) for (name, _), o in zip(self._layers, outs)}

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:  # the epochs Keras' TensorBoard writes weight histograms
            return
        import tensorflow as tf

        activations = self.compute()
        if not activations:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in activations.items():
                tf.summary.histogram(f"activations/{name}", value, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
