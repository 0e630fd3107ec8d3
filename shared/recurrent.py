"""An LSTM layer whose input projection runs once per sequence instead of once per step.

Each LSTM step computes ``z = x_t W + h_{t-1} U + b`` for its four gates. Only the ``h U`` half
depends on the previous step; ``x_t W + b`` can be computed for every step of the sequence at
once, as one large matrix product ``[batch * time, input] x [input, 4 units]``, before the loop
(Appleyard, Kočiský & Blunsom 2016, "Optimizing Performance of Recurrent Neural Networks on
GPUs", §3.1; cuDNN's LSTM does the same). Keras' LSTM on a CPU runs its generic cell, which does
both products inside every step; on small batches (a character model's 32 rows) those per-step
products are too small to use the CPU's vector units well, and hoisting half of them out of the
loop makes a training step ~1.26x faster at 2 x 384 units (benchmarks/notes/shakespeare_lstm.md).

``HoistedLSTM`` is a ``keras.layers.LSTM``: the same arguments, weights (``kernel``,
``recurrent_kernel``, ``bias``), masking, statefulness and outputs, so checkpoints and exports of
either load into the other, and code that drives ``layer.cell`` one step at a time (a text
generator) is unchanged. It falls back to Keras' own loop where the hoisting does not apply:
dropout inside the cell (a per-step input mask), and a GPU, where Keras' cuDNN kernel already
hoists the product. Usable in any Keras model::

    from shared.recurrent import HoistedLSTM
    x = HoistedLSTM(256, return_sequences=True)(x)
"""

from __future__ import annotations

import keras
from keras import ops


def _gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable("ksuite")
class HoistedLSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` with ``x_t W + b`` computed for all steps before the time loop."""

    def hoists(self) -> bool:
        """Whether this layer's loop runs with the hoisted input projection."""
        cell = self.cell
        return not (cell.dropout or cell.recurrent_dropout or self.use_cudnn is True
                    or (self.use_cudnn == "auto" and _gpu_present()))

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.hoists():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        from keras.src import backend  # the loop Keras' own RNN layers run (no public alias)

        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        # The gates' input halves for every step at once: [batch, time, 4 units].
        projected = ops.matmul(sequences, cell.kernel)
        if cell.use_bias:
            projected = projected + cell.bias
        recurrent_kernel = cell.recurrent_kernel

        def step(z_input, states):  # LSTMCell.call (implementation 2) minus x_t W + b
            h, c = states
            z = z_input + ops.matmul(h, recurrent_kernel)
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            c = (cell.recurrent_activation(z_f) * c
                 + cell.recurrent_activation(z_i) * cell.activation(z_c))
            h = cell.recurrent_activation(z_o) * cell.activation(c)
            return h, [h, c]

        return backend.rnn(step, projected, list(initial_state), go_backwards=self.go_backwards,
                           mask=mask, unroll=self.unroll, input_length=sequences.shape[1],
                           zero_output_for_mask=self.zero_output_for_mask,
                           return_all_outputs=self.return_sequences)


__all__ = ["HoistedLSTM"]
