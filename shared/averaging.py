"""A running average of the weights, pulled back into the model: Lookahead (Zhang et al. 2019).

Every ``every`` optimizer steps the slow copy moves toward the fast weights,
``slow = alpha_k slow + (1 - alpha_k) fast``, and the fast weights restart from it
(``fast = slow``). airbench94 (Jordan 2024) uses it with ``every=5``, ``alpha = 0.95**5`` ramped
in as ``(k / K)**3`` over the K steps of the run, and over every float variable of the model,
batch-norm statistics included; at the end of training the model takes the slow weights.

Usable in any ``fit``::

    model.fit(ds, epochs=10, callbacks=[Lookahead(total_steps=10 * steps_per_epoch)])

The slow copy lives in memory. So that a run resumed from an epoch's backup continues exactly,
the callback also synchronizes at the end of every epoch: there the saved weights *are* the slow
weights, and nothing else needs saving.
"""

from __future__ import annotations

import keras
from keras import ops

EVERY = 5  # airbench94: LookaheadState updated every 5 steps
ALPHA = 0.95 ** 5  # airbench94: ema decay 0.95 per step, compounded over the 5 steps
RAMP_POWER = 3  # airbench94: alpha_k = ALPHA x (k / K) ** 3


class Lookahead(keras.callbacks.Callback):
    """Lookahead over all of the model's float variables (trainable and not)."""

    def __init__(self, total_steps: int, every: int = EVERY, alpha: float = ALPHA,
                 ramp_power: float = RAMP_POWER):
        super().__init__()
        if total_steps <= 0 or every <= 0 or not 0 <= alpha < 1:
            raise ValueError("Lookahead: need total_steps > 0, every > 0 and 0 <= alpha < 1")
        self.total_steps, self.every = int(total_steps), int(every)
        self.alpha, self.ramp_power = float(alpha), float(ramp_power)
        self.slow = None
        self.variables = []

    def alpha_at(self, step: int) -> float:
        return self.alpha * min(step / self.total_steps, 1.0) ** self.ramp_power

    def on_train_begin(self, logs=None):
        self.slow = None

    def on_train_batch_begin(self, batch, logs=None):
        # Taken at the first step, after every on_train_begin: a resumed run's backup callback
        # restores the weights there (they were saved at a synchronization point).
        if self.slow is None:
            self.variables = [v for v in self.model.variables if "float" in str(v.dtype)]
            self.slow = [ops.copy(v.value) for v in self.variables]  # a copy, not a view

    def _sync(self, alpha: float) -> None:
        for i, v in enumerate(self.variables):
            slow = alpha * self.slow[i] + (1.0 - alpha) * ops.convert_to_tensor(v)
            v.assign(slow)
            self.slow[i] = slow

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every == 0:
            self._sync(self.alpha_at(step))

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if step % self.every:
            self._sync(self.alpha_at(step))

    def on_train_end(self, logs=None):
        if self.slow is not None:  # the model ends on the slow weights (alpha = 1)
            for v, slow in zip(self.variables, self.slow):
                v.assign(slow)


__all__ = ["Lookahead"]
