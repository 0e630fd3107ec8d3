"""Discriminative fine-tuning: a learning rate per layer (Howard & Ruder 2018, ULMFiT §3.2).

A network fine-tuned from pretrained weights should change its lower layers, which hold general
features, less than its new top layer. ULMFiT gives layer l the rate eta_l = eta_{l+1} / 2.6 and
unfreezes the layers one at a time from the top ("gradual unfreezing", §3.3): a frozen layer is a
layer whose rate is 0. ``LayerRateAdam`` is Keras' Adam with one multiplier per named layer,
held in variables so that a callback (``shared.callbacks.GradualUnfreezing``) can change them
between epochs without retracing the train step::

    from shared.layer_rates import LayerRateAdam
    from shared.callbacks import GradualUnfreezing

    opt = LayerRateAdam(1e-3, layer_rates={"gru": 1 / 2.6, "embedding": 1 / 2.6**2})
    model.compile(optimizer=opt, loss="binary_crossentropy")
    model.fit(..., callbacks=[GradualUnfreezing(["gru", "embedding"])])

A variable belongs to a layer when the layer's name is one of the components of its path (e.g.
``bidirectional_gru/forward_gru/gru_cell/kernel`` belongs to ``bidirectional_gru``); variables of
other layers keep the full rate.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable("ksuite")
class LayerRateAdam(keras.optimizers.Adam):
    """Adam whose step for a variable of layer L is scaled by ``layer_rates[L]`` (1 for layers
    not named). ``set_multiplier(L, x)`` changes a layer's factor at any time (0 freezes it)."""

    def __init__(self, learning_rate=1e-3, layer_rates: dict | None = None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.layer_rates = {str(k): float(v) for k, v in (layer_rates or {}).items()}
        self._factors: dict[str, keras.Variable] = {}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        for layer, rate in self.layer_rates.items():
            self._factors[layer] = self.add_variable(
                shape=(), initializer=keras.initializers.Constant(rate), dtype="float32",
                name=f"rate_factor_{layer}")

    def layer_of(self, variable) -> str | None:
        """The named layer a variable belongs to (None: the full rate)."""
        parts = str(getattr(variable, "path", variable.name)).split("/")
        return next((p for p in parts if p in self.layer_rates), None)

    def set_multiplier(self, layer: str, value: float) -> None:
        if layer not in self._factors:
            raise KeyError(f"no rate for layer {layer!r} (layers: {sorted(self.layer_rates)})")
        self._factors[layer].assign(float(value))

    def multiplier(self, layer: str) -> float:
        return float(keras.ops.convert_to_numpy(self._factors[layer]))

    def update_step(self, gradient, variable, learning_rate):
        layer = self.layer_of(variable)
        if layer is not None:
            factor = self._factors[layer]
            learning_rate = learning_rate * keras.ops.cast(factor, learning_rate.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "layer_rates": dict(self.layer_rates)}
