"""Weight-norm regularization, written once: ``--l2``, ``--l1``, ``--max-norm`` on any app's model.

The runner (shared/app.py) calls :func:`apply_weight_penalties` on what ``build_model`` returns,
after it is built and before compile. What it touches, as the course says (Goodfellow et al. §7.1:
"we typically choose to use a parameter norm penalty that penalizes only the weights of the affine
transformation at each layer and leaves the biases unregularized"):

- **kernels**: the variables named ``kernel`` (Dense, EinsumDense, Conv1D/2D/3D and their
  transposes), ``recurrent_kernel`` (the GRU/LSTM/SimpleRNN cells, also inside Bidirectional),
  ``depthwise_kernel`` and ``pointwise_kernel`` (separable/depthwise convolutions);
- **not** biases, batch-norm's gamma/beta/moving statistics, nor **embedding tables**. An
  embedding is a lookup, not one of the layer-to-layer affine maps the course penalises, and the
  penalty's gradient would touch every row at every step (a dense update of a table whose rows
  otherwise move only when their word appears: word2vec's sparse SGD and the IMDB embedding of
  sentiment_gru keep their sparse updates).

How, in Keras 3: a layer takes ``kernel_regularizer=`` at construction, but setting
``layer.kernel_regularizer`` after build adds nothing (the attribute is read once, by ``build``).
Keras 3 keeps the regularizer and the constraint **on the variable**: ``Layer.losses`` sums
``variable.regularizer(variable)`` over the trainable weights (so the compiled loss of the
default ``train_step`` gains lambda * sum(w^2)), and the optimizer assigns
``variable.constraint(variable)`` after every update. So this module sets
``kernel.regularizer`` (``keras.regularizers.L2``/``L1``/``L1L2``) and ``kernel.constraint``
(``keras.constraints.MaxNorm`` over every axis but the last: each output unit's incoming weight
vector, Srivastava et al. 2014 §5.1) on the built variables. Frozen kernels (not trainable) add
no penalty and are not updated.

This is not AdamW's decoupled weight decay (Loshchilov & Hutter 2019): L2 here is a term of the
loss, scaled by the adaptive optimizer's preconditioner like any other gradient.

Which apps it reaches: every app trained by Keras' own ``train_step`` (mnist_mlp, cifar_cnn,
sentiment_gru, shakespeare_lstm) takes all three. ``--max-norm`` acts in the optimizer, so it also
reaches the DCGAN's two players and the DQN's Q-network; their losses are their own (a custom
``train_step`` / TD update that does not add ``model.losses``), so they refuse ``--l2``/``--l1``.
word2vec's tables are embeddings (above) and refuse all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import UserError

# The weight matrices the penalties apply to (Keras' variable names); everything else is left be.
KERNEL_NAMES = ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass(frozen=True)
class RegularizerConfig:
    """The penalties, as plain values (None: off)."""

    l2: float | None = None  # lambda of lambda * sum(w^2) (the course's code: l2(0.01))
    l1: float | None = None  # lambda of lambda * sum(|w|)
    max_norm: float | None = None  # c of ||w_unit||_2 <= c (Srivastava et al. 2014: 3 to 4)

    @classmethod
    def from_args(cls, args) -> RegularizerConfig:
        return cls(l2=getattr(args, "l2", None), l1=getattr(args, "l1", None),
                   max_norm=getattr(args, "max_norm", None))

    @property
    def penalty(self) -> bool:
        return bool(self.l2 or self.l1)

    @property
    def active(self) -> bool:
        return self.penalty or bool(self.max_norm)


def regularizer(config: RegularizerConfig):
    """The Keras regularizer of the config's penalties, or None."""
    import keras

    if config.l2 and config.l1:  # elastic net
        return keras.regularizers.L1L2(l1=config.l1, l2=config.l2)
    if config.l2:
        return keras.regularizers.L2(config.l2)
    if config.l1:
        return keras.regularizers.L1(config.l1)
    return None


def kernels(model) -> list:
    """The model's kernel variables (see KERNEL_NAMES), each once, in order."""
    seen, out = set(), []
    for variable in model.variables:
        name = variable.name.rsplit("/", 1)[-1].split(":")[0]
        if name in KERNEL_NAMES and id(variable) not in seen:
            seen.add(id(variable))
            out.append(variable)
    return out


def _custom_train_step(model) -> bool:
    import keras

    if getattr(type(model), "adds_model_losses", False):  # shared/adversarial.py's
        return False
    return type(model).train_step is not keras.Model.train_step


def apply_weight_penalties(model, config: RegularizerConfig) -> list:
    """Set the penalties and the max-norm constraint on every kernel of a built model; return
    the kernels touched. Raises UserError when the model cannot take them."""
    if not config.active:
        return []
    import keras

    if not isinstance(model, keras.Model):
        raise UserError("--l2/--l1/--max-norm apply to a Keras model; this app builds "
                        f"{type(model).__name__}")
    if config.penalty and _custom_train_step(model):
        raise UserError(f"--l2/--l1: {type(model).__name__} trains with its own train_step, "
                        "which does not add the model's regularization losses")
    found = kernels(model)
    if not found:
        raise UserError("--l2/--l1/--max-norm: the model has no Dense, Conv or recurrent "
                        "kernel (built) to apply them to")
    penalty = regularizer(config)
    for variable in found:
        if penalty is not None:
            variable.regularizer = penalty
        if config.max_norm:
            axes = list(range(len(variable.shape) - 1))  # each output unit's incoming weights
            variable.constraint = keras.constraints.MaxNorm(config.max_norm, axis=axes)
    return found


__all__ = ["KERNEL_NAMES", "RegularizerConfig", "apply_weight_penalties", "kernels",
           "regularizer"]
