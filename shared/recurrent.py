"""LSTM and GRU layers whose input projection runs once per sequence instead of once per step.

Each LSTM step computes ``z = x_t W + h_{t-1} U + b`` for its four gates (a GRU for its three).
Only the ``h U`` half depends on the previous step; ``x_t W + b`` can be computed for every step
of the sequence at once, as one large matrix product ``[batch * time, input] x [input, gates x
units]``, before the loop (Appleyard, Kočiský & Blunsom 2016, "Optimizing Performance of
Recurrent Neural Networks on GPUs", §3.1; cuDNN's kernels do the same). Keras' LSTM and GRU on a
CPU run their generic cells, which do both products inside every step; on small batches (a
character model's 32 rows) those per-step products are too small to use the CPU's vector units
well, and hoisting half of them out of the loop makes a 2 x 384 LSTM's training step 1.31x
faster and a 512-unit bidirectional GRU's 1.23x (``python -m benchmarks.recurrent_hoisting``).

``HoistedLSTM`` is a ``keras.layers.LSTM`` and ``HoistedGRU`` a ``keras.layers.GRU``: the same
arguments, weights (``kernel``, ``recurrent_kernel``, ``bias``), masking, statefulness and
outputs (up to the rounding of a different order of additions), so checkpoints and exports of
either load into the other, and code that drives ``layer.cell`` one step at a time (a text
generator) is unchanged. They fall back to Keras' own loop where the hoisting does not apply:
dropout inside the cell (a per-step input mask), a GRU with ``reset_after=False``, and a GPU,
where Keras' cuDNN kernel already hoists the product.
Usable in any Keras model::

    from shared.recurrent import HoistedGRU, HoistedLSTM
    x = keras.layers.Bidirectional(HoistedGRU(256, return_sequences=True))(x)
"""

from __future__ import annotations

import keras
from keras import ops

from shared.precision import device_kind


class _Hoisted:
    """What the hoisted LSTM and GRU share: when to hoist, the projection before the loop and
    the loop itself (the one Keras' own recurrent layers run). A subclass gives its cell's
    input bias and its step over the projected inputs."""

    def hoists(self) -> bool:
        """Whether this layer's loop runs with the hoisted input projection."""
        cell = self.cell
        return not (cell.dropout or cell.recurrent_dropout or self.use_cudnn is True
                    or (self.use_cudnn == "auto" and device_kind() == "gpu"))

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.hoists():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        from keras.src import backend  # Keras' RNN loop (no public alias)

        # The gates' input halves for every step at once: [batch, time, gates x units].
        projected = ops.matmul(sequences, self.cell.kernel)
        if self.cell.use_bias:
            projected = projected + self._input_bias()
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if not isinstance(initial_state, (list, tuple)):  # a GRU's single state tensor
            initial_state = [initial_state]
        return backend.rnn(self._step(), projected, list(initial_state),
                           go_backwards=self.go_backwards, mask=mask, unroll=self.unroll,
                           input_length=sequences.shape[1],
                           zero_output_for_mask=self.zero_output_for_mask,
                           return_all_outputs=self.return_sequences)


@keras.saving.register_keras_serializable("ksuite")
class HoistedLSTM(_Hoisted, keras.layers.LSTM):
    """``keras.layers.LSTM`` with ``x_t W + b`` computed for all steps before the time loop."""

    def _input_bias(self):
        return self.cell.bias

    def _step(self):
        cell = self.cell
        recurrent_kernel = cell.recurrent_kernel

        def step(z_input, states):  # LSTMCell.call (implementation 2) minus x_t W + b
            h, c = states
            z = z_input + ops.matmul(h, recurrent_kernel)
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            c = (cell.recurrent_activation(z_f) * c
                 + cell.recurrent_activation(z_i) * cell.activation(z_c))
            h = cell.recurrent_activation(z_o) * cell.activation(c)
            return h, [h, c]

        return step


@keras.saving.register_keras_serializable("ksuite")
class HoistedGRU(_Hoisted, keras.layers.GRU):
    """``keras.layers.GRU`` (``reset_after=True``, Keras' default) with ``x_t W + b_input``
    computed for all steps before the time loop; ``reset_after=False`` runs Keras' loop."""

    def hoists(self) -> bool:
        return self.cell.reset_after and super().hoists()

    def _input_bias(self):
        return self.cell.bias[0]  # reset_after: [input bias, recurrent bias]

    def _step(self):
        cell = self.cell
        recurrent_kernel = cell.recurrent_kernel
        recurrent_bias = cell.bias[1] if cell.use_bias else None

        def step(x_zrh, states):  # GRUCell.call (implementation 2, reset_after) minus x_t W + b
            h = states[0]
            inner = ops.matmul(h, recurrent_kernel)
            if recurrent_bias is not None:
                inner = inner + recurrent_bias
            x_z, x_r, x_h = ops.split(x_zrh, 3, axis=-1)
            h_z, h_r, h_h = ops.split(inner, 3, axis=-1)
            z = cell.recurrent_activation(x_z + h_z)
            r = cell.recurrent_activation(x_r + h_r)
            candidate = cell.activation(x_h + r * h_h)
            h = z * h + (1 - z) * candidate
            return h, [h]

        return step


__all__ = ["HoistedGRU", "HoistedLSTM"]
