"""``--precision`` and ``--jit-compile``: how fast a step runs, decided once for every app.

- ``--precision {auto,float32,mixed_bfloat16,mixed_float16}``: a Keras dtype policy. Under a
  ``mixed_*`` policy the layers compute in 16 bits and keep their variables in float32
  (Micikevicius et al. 2018, "Mixed Precision Training"; the Keras mixed-precision guide). The
  runner sets the policy only while it builds the model (:func:`dtype_policy`): every layer takes
  the policy in force when it is constructed, so the trained model is mixed, while what an app
  builds later (a serving copy, the GAN's evaluation classifier) stays float32. ``auto`` picks
  the app's declared default for the device kind present (``App.precision_defaults``); a CPU
  default of ``mixed_bfloat16`` holds only where the CPU does bfloat16 in hardware
  (:func:`cpu_has_bf16`), float32 elsewhere.
- Loss scaling for float16 (its 5 exponent bits underflow small gradients; bfloat16 has
  float32's range and needs none): ``Model.compile`` wraps the optimizer in a
  ``LossScaleOptimizer`` by itself when the model's policy is ``mixed_float16`` (Keras 3
  ``Trainer.compile``, ``auto_scale_loss=True``); the apps with their own training step (the
  GAN, the DQN) wrap theirs with :func:`loss_scaled` and scale their loss with
  ``optimizer.scale_loss`` inside the tape (a no-op for an unwrapped optimizer).
- Outputs stay float32: each app builds its output layer (softmax, logits, sigmoid, tanh) with
  ``dtype="float32"``, as the Keras guide asks for numerical safety, and the export casts any
  16-bit float an endpoint returns back to float32 (:func:`float32_outputs`, in
  shared/export.py), so a served signature is the same under every policy.
- ``--jit-compile`` / ``--no-jit-compile``: compile the training step with XLA
  (``Model.compile(jit_compile=...)``). Unset, Keras decides (``"auto"``: on when there is an
  accelerator, the model supports it and no strategy distributes it; off on a CPU-only machine:
  Keras 3 ``Trainer._resolve_auto_jit_compile``). Keras silently turns XLA off while
  TensorFlow's op determinism is on, so an explicit ``--jit-compile`` turns determinism off
  (:func:`resolve`).

Nothing here imports TensorFlow or Keras at import time.
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
POLICIES = PRECISIONS[1:]


def device_kind() -> str:
    """``gpu`` when TensorFlow sees a GPU, else ``cpu``. Physical devices only: listing them does
    not start the runtime (logical devices and collectives can still be configured)."""
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def device_name() -> str:
    """What the figures of a run come from: the first GPU's name (all of them when there are
    several), else the CPU model."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name")
                             or gpu.name)
            except (RuntimeError, ValueError):
                names.append(gpu.name)
        if len(names) == 1:
            return names[0]
        return f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    from shared.runs import cpu_model

    return cpu_model()


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 in hardware (x86 AVX512_BF16 or AMX-BF16, Arm's BF16
    extension), read from Linux's /proc/cpuinfo; False where that cannot be read. Without it
    TensorFlow emulates bfloat16: the CIFAR recipe trained at 6.9 examples/s in mixed_bfloat16
    against 67 in float32 on an AVX2-only EPYC (2 cores, 2026-12-05)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def _auto_policy(defaults: dict) -> tuple[str, bool]:
    """(the app's default for this device kind, whether float32 replaced an emulated
    ``mixed_bfloat16``)."""
    kind = device_kind()
    policy = defaults.get(kind, "float32")
    if kind == "cpu" and policy == "mixed_bfloat16" and not cpu_has_bf16():
        return "float32", True
    return policy, False


def resolve_precision(requested: str, defaults: dict) -> str:
    """The policy name ``--precision`` means here: ``auto`` -> the app's default for this device
    kind (``defaults``: ``{"cpu": ..., "gpu": ...}``), except that a CPU without bfloat16
    hardware runs float32 in place of ``mixed_bfloat16``. An explicit policy is kept as asked."""
    return requested if requested != "auto" else _auto_policy(defaults)[0]


def resolve(args, precision_defaults: dict) -> None:
    """Resolve ``args.precision`` (``auto`` -> a policy) and make ``--jit-compile`` effective:
    Keras does not compile with XLA while op determinism is on, so an explicit request turns it
    off (and says so). Call before the run seeds TensorFlow."""
    args.precision = getattr(args, "precision", "auto") or "auto"
    if args.precision == "auto":
        args.precision, emulated = _auto_policy(precision_defaults)
        if emulated:
            print("--precision auto: float32 (this CPU has no bfloat16 hardware; mixed_bfloat16 "
                  "would run emulated, many times slower)")
    if getattr(args, "jit_compile", None) and getattr(args, "deterministic", False):
        print("--jit-compile: TensorFlow op determinism off (Keras does not compile with XLA "
              "under it)")
        args.deterministic = False


def jit_compile(args):
    """``Model.compile``'s ``jit_compile``: True/False as asked, ``"auto"`` when unset."""
    value = getattr(args, "jit_compile", None)
    return "auto" if value is None else bool(value)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to ``name`` for the layers constructed inside, then put
    back (layers keep the policy they were built with)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scaled(optimizer, policy: str):
    """``optimizer`` wrapped in Keras' dynamic ``LossScaleOptimizer`` under ``mixed_float16``
    (what ``Model.compile`` does by itself), for apps with their own training step."""
    if policy != "mixed_float16":
        return optimizer
    import keras

    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def float32_outputs(fn):
    """``fn`` whose 16-bit floating outputs (float16, bfloat16) are cast to float32: an export's
    signature keeps the dtypes it has under float32, whatever the policy."""
    import functools

    import tensorflow as tf

    def cast(t):
        if isinstance(t, (tf.Tensor, tf.Variable)) and t.dtype in (tf.float16, tf.bfloat16):
            return tf.cast(t, tf.float32)
        return t

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        return tf.nest.map_structure(cast, fn(*args, **kwargs))

    return wrapped


__all__ = ["POLICIES", "PRECISIONS", "cpu_has_bf16", "device_kind", "device_name", "dtype_policy",
           "float32_outputs", "jit_compile", "loss_scaled", "resolve", "resolve_precision"]
