"""``--strategy`` and ``--devices``: one place that turns flags into a ``tf.distribute.Strategy``.

- ``default``: TensorFlow's default strategy (no distribution; whatever device TF picks).
- ``one_device``: everything pinned to one device (``/gpu:0`` when there is a GPU, else ``/cpu:0``).
- ``mirrored``: synchronous data parallelism over the local devices: all GPUs, or, with no GPU,
  ``--devices N`` logical CPU devices (so the multi-device code path is exercised on a laptop or
  in CI). Gradients are all-reduced every step.
- ``multi_worker``: synchronous data parallelism over several machines (or processes), each
  described by the ``TF_CONFIG`` environment variable (``cluster`` with ``worker`` addresses and
  this process's ``task``); every worker runs the same command.

The batch size a user gives is per replica; the global batch is ``per_replica *
strategy.num_replicas_in_sync``. Build the model and optimizer inside ``strategy.scope()``.
"""

from __future__ import annotations

import json
import os

from shared.errors import UserError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")


def configure_devices(devices: int | None) -> None:
    """Split the (first) CPU into ``devices`` logical devices. Must run before TensorFlow creates
    its runtime (before any op executes); a later call is a clear error."""
    if not devices or devices <= 1:
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
        )
    except RuntimeError as exc:
        if len(tf.config.list_logical_devices("CPU")) != devices:
            raise UserError(
                f"--devices {devices}: TensorFlow was already initialized with "
                f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s) ({exc})"
            ) from None


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"TF_CONFIG is not valid JSON: {exc}") from None


def task_info() -> tuple[str, int]:
    """(task type, index) from TF_CONFIG; ('worker', 0) when absent."""
    task = _tf_config().get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def is_chief() -> bool:
    """The chief writes checkpoints, run records and exports; other workers do not. With no
    explicit ``chief`` task in TF_CONFIG, worker 0 is the chief (TensorFlow's convention)."""
    cfg = _tf_config()
    if not cfg:
        return True
    task_type, index = task_info()
    if "chief" in cfg.get("cluster", {}):
        return task_type == "chief"
    return task_type == "worker" and index == 0


def worker_rank() -> int:
    """This process's position in the cluster, 0 for the chief: ``chief`` 0, then the workers in
    order (``worker`` i is rank i, or i + 1 when the cluster has a ``chief`` task). 0 without
    TF_CONFIG. For giving each worker its own random streams (e.g. the DQN's actors)."""
    cfg = _tf_config()
    if not cfg:
        return 0
    task_type, index = task_info()
    if task_type == "chief":
        return 0
    return index + (1 if "chief" in cfg.get("cluster", {}) else 0)


def make_strategy(name: str = "default", devices: int | None = None):
    """Build the strategy named by ``--strategy`` (call ``configure_devices`` first, or let this
    do it)."""
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        cfg = _tf_config()
        workers = cfg.get("cluster", {}).get("worker")
        if not workers:
            raise UserError(
                "--strategy multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
    configure_devices(devices)
    import tensorflow as tf

    # Physical devices: listing logical ones would start the runtime, after which collective ops
    # (multi_worker) can no longer be configured.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            chosen = [f"/gpu:{i}" for i in range(len(gpus))][: devices or None]
            return tf.distribute.MirroredStrategy(chosen)
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # NCCL is GPU-only: on CPUs, reduce through one device.
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    # multi_worker: ring all-reduce works on CPUs and GPUs alike; NCCL is picked on GPUs.
    impl = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING)
    patch_keras_for_multi_worker()
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=impl)
    )


def local_replicas(strategy) -> int:
    """Replicas on this worker (its devices); the whole ``num_replicas_in_sync`` unless the
    strategy is ``multi_worker``."""
    if strategy.num_replicas_in_sync == 1:
        return 1
    return len(strategy.extended.worker_devices)


def sum_over_workers(strategy, values) -> list[float]:
    """All-reduce: every worker passes its own ``values`` (a list of numbers) and gets the sum
    over the workers, the same on all of them. Each worker counts once, whatever its number of
    local replicas. Without several workers this returns ``values``.

    For decisions that every worker must take alike (stop, resume from where): under
    ``multi_worker`` a worker that takes another branch leaves the others blocked in their next
    collective op. Call it at the same point on every worker."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return [float(v) for v in values]
    local = tf.constant([float(v) for v in values], tf.float64)
    per_worker = local_replicas(strategy)

    @tf.function
    def all_reduce():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            first_on_worker = tf.equal(ctx.replica_id_in_sync_group % per_worker, 0)
            return tf.where(first_on_worker, local, tf.zeros_like(local))

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_fn), axis=None)

    return [float(v) for v in all_reduce().numpy()]


def chief_values(strategy, values) -> list[float]:
    """Broadcast: the chief's ``values`` on every worker (the others pass anything of the same
    length; NaN and inf pass through)."""
    chief = is_chief()
    return sum_over_workers(strategy, [float(v) if chief else 0.0 for v in values])


def shard_policy_data(dataset):
    """Shard a dataset by element across workers (every worker reads all the data and keeps
    its 1/N share of each global batch). In-memory datasets have no files to shard by."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


_PATCHED = False


def patch_keras_for_multi_worker() -> None:
    """Work around Keras 3's ``fit()`` under ``MultiWorkerMirroredStrategy`` (keras-team/keras
    issue #20585): before training, Keras builds metrics and optimizer from one batch, which it
    obtains by ``strategy.reduce("MEAN", batch)`` -- an eager cross-worker reduction that
    ``MultiWorkerMirroredStrategy`` refuses ("Attempt to convert a value (PerReplica...)").
    That batch only serves shape inference, so this takes the local replica's batch instead.
    Training itself (the all-reduce of gradients) is untouched."""
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    batch,
                )
                break
            iterator = None
        return original(self, iterator=iterator, data_batch=data_batch)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build

    # Second, the per-step logs (scalar metric values) are averaged across workers with
    # ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars ("Invalid reduction
    # dimension 0 for input with 0 dimensions"); a cross-replica mean needs ``axis=None``.
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
