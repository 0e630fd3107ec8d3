"""The DQN learner: online and target Q-networks, the compiled TD update, epsilon-greedy acting,
and the checkpoint that makes a killed run resumable.

TD target (Mnih et al. 2015, eq. 3), with ``terminated`` -- not ``truncated`` -- stopping the
bootstrap, since a time-limit cut is not a terminal state of the MDP (Pardo et al. 2018):

    y = r + gamma * (1 - terminated) * max_a' Q_target(s', a')                       (DQN)
    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a' Q_online(s', a'))     (Double DQN,
                                                                                van Hasselt 2016)

With n-step samples (``--n-step``, Hessel et al. 2018) r is the discounted sum of n rewards, s'
the state n steps on and gamma its discount gamma^n: the replay memory's ``discount``.

loss = Huber_1(Q_online(s, a) - y) averaged over the batch ("error clipping" to [-1, 1] in
Mnih et al. 2015 is the Huber loss with delta 1).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shared.distribute import local_replicas
from shared.io import atomic_write_text


def linear_epsilon(step: int, start: float, end: float, duration: int) -> float:
    """epsilon decays linearly from ``start`` to ``end`` over ``duration`` environment steps
    (counted from step 0, as in CleanRL's ``linear_schedule``), then stays at ``end``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, step / duration)


def huber(x, delta: float = 1.0):
    a = tf.abs(x)
    quadratic = tf.minimum(a, delta)
    return 0.5 * tf.square(quadratic) + delta * (a - quadratic)


class DQNAgent:
    """Online and target networks plus optimizer, built by the caller inside the strategy scope."""

    def __init__(self, online: keras.Model, target: keras.Model, optimizer, num_actions: int,
                 double: bool = False, strategy=None, global_batch: int | None = None):
        # The discount comes with each batch (ReplayMemory's ``discount``: gamma, or gamma^n).
        self.online, self.target, self.optimizer = online, target, optimizer
        self.num_actions, self.double = int(num_actions), bool(double)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        # Replicas on this worker: ``train`` gets this worker's share of the global batch
        # (all of it on one machine; under multi_worker, sampled from this worker's memory).
        self.local_replicas = local_replicas(self.strategy)
        self.global_batch = global_batch
        self.optimizer.build(self.online.trainable_variables)
        self.update_target()
        self._q = tf.function(lambda obs: self.online(obs, training=False), reduce_retracing=True)
        # A Dense-only network (CartPole) acts through a NumPy copy of its weights: one env step
        # then costs ~0.1 ms instead of a ~0.5 ms TensorFlow call. The copy is dropped whenever
        # the weights may have changed (train, checkpoint load, ``invalidate``).
        self._dense = all(isinstance(layer, (keras.layers.InputLayer, keras.layers.Dense))
                          for layer in online.layers)
        self._np_weights = None
        self._train_one = tf.function(self._distributed_step, reduce_retracing=True)
        self._train_many = tf.function(self._many_steps, reduce_retracing=True)

    # -- acting ----------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Call after setting the online weights from outside (early stopping's restore)."""
        self._np_weights = None

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        if not self._dense:
            return self._q(tf.convert_to_tensor(obs)).numpy()
        if self._np_weights is None:
            dense = [la for la in self.online.layers if isinstance(la, keras.layers.Dense)]
            self._np_weights = [(la.kernel.numpy(), la.bias.numpy(), la.activation) for la in dense]
        x = np.asarray(obs, dtype=np.float32)
        for kernel, bias, activation in self._np_weights:
            x = x @ kernel + bias
            if activation is keras.activations.relu:
                x = np.maximum(x, 0.0)
            elif activation is not keras.activations.linear:
                x = np.asarray(activation(x))
        return x

    def act(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
        """epsilon-greedy: a uniformly random action with probability epsilon, else argmax Q."""
        if rng.random() < epsilon:
            return int(rng.integers(self.num_actions))
        return int(np.argmax(self.q_values(obs[None])[0]))

    # -- learning ---------------------------------------------------------------------------
    def _replica_step(self, obs, actions, rewards, next_obs, terminated, discount):
        # Each replica takes its slice of this worker's batch (the global batch on one machine);
        # the loss is summed over the slice and divided by the global batch, so the all-reduced
        # gradient is that of the global batch mean. A worker's replicas have consecutive ids.
        ctx = tf.distribute.get_replica_context()
        n = tf.shape(actions)[0] // self.local_replicas
        lo = (ctx.replica_id_in_sync_group % self.local_replicas) * n
        obs, actions, rewards = obs[lo:lo + n], actions[lo:lo + n], rewards[lo:lo + n]
        next_obs, terminated = next_obs[lo:lo + n], terminated[lo:lo + n]
        discount = discount[lo:lo + n]

        next_q_target = self.target(next_obs, training=False)
        if self.double:
            best = tf.argmax(self.online(next_obs, training=False), axis=-1, output_type=tf.int32)
            next_value = tf.gather(next_q_target, best, axis=1, batch_dims=1)
        else:
            next_value = tf.reduce_max(next_q_target, axis=-1)
        y = tf.stop_gradient(rewards + discount * (1.0 - terminated) * next_value)
        with tf.GradientTape() as tape:
            q = self.online(obs, training=True)
            q_taken = tf.gather(q, actions, axis=1, batch_dims=1)
            loss = tf.reduce_sum(huber(q_taken - y)) / tf.cast(n * self.replicas, tf.float32)
            scaled = self.optimizer.scale_loss(loss)  # mixed_float16: loss scaling (else loss)
        variables = self.online.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss, tf.reduce_sum(q_taken) / tf.cast(n * self.replicas, tf.float32)

    def _distributed_step(self, obs, actions, rewards, next_obs, terminated, discount):
        loss, q = self.strategy.run(self._replica_step,
                                    args=(obs, actions, rewards, next_obs, terminated, discount))
        total = tf.distribute.ReduceOp.SUM
        return (self.strategy.reduce(total, loss, axis=None),
                self.strategy.reduce(total, q, axis=None))

    def _many_steps(self, obs, actions, rewards, next_obs, terminated, discount):
        """G gradient steps in one call (inputs have a leading [G] axis): one graph, no Python
        between steps. Used when there is one replica."""
        g = tf.shape(actions)[0]
        total_loss, total_q = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(g):
            loss, q = self._replica_step(obs[i], actions[i], rewards[i], next_obs[i],
                                         terminated[i], discount[i])
            total_loss += loss
            total_q += q
        g = tf.cast(g, tf.float32)
        return total_loss / g, total_q / g

    def train(self, batches: dict) -> tuple[float, float]:
        """Gradient steps on ``batches`` (arrays with a leading [G] axis, one batch per step; each
        batch is this worker's share of the global batch). Returns the mean TD loss and mean
        Q(s, a) over the steps (of the global batch: the same on every worker)."""
        self._np_weights = None
        args = [tf.convert_to_tensor(batches[k]) for k in
                ("obs", "actions", "rewards", "next_obs", "terminated", "discount")]
        if self.replicas == 1:
            loss, q = self._train_many(*args)
            return float(loss), float(q)
        losses, qs = [], []
        for i in range(int(args[1].shape[0])):
            loss, q = self._train_one(*[a[i] for a in args])
            losses.append(float(loss))
            qs.append(float(q))
        return float(np.mean(losses)), float(np.mean(qs))

    def td_loss(self, batch: dict) -> float:
        """The Huber TD loss on one batch without updating anything (for tests/diagnostics)."""
        next_q = self.target(batch["next_obs"], training=False).numpy()
        if self.double:
            best = np.argmax(self.online(batch["next_obs"], training=False).numpy(), axis=-1)
            next_value = next_q[np.arange(len(best)), best]
        else:
            next_value = next_q.max(axis=-1)
        y = batch["rewards"] + batch["discount"] * (1.0 - batch["terminated"]) * next_value
        q = self.online(batch["obs"], training=False).numpy()
        q_taken = q[np.arange(len(q)), batch["actions"]]
        return float(np.mean(huber(tf.constant(q_taken - y)).numpy()))

    def update_target(self) -> None:
        """theta^- <- theta (a hard copy every C steps, Mnih et al. 2015)."""
        for t, o in zip(self.target.weights, self.online.weights):
            t.assign(o)


# -------------------------------------------------------------------------------------------------
# Checkpoint: everything a resumed run needs, written atomically as one folder
# -------------------------------------------------------------------------------------------------
class Checkpoint(keras.callbacks.Callback):
    """Saves, at the end of every evaluation period, into ``<run dir>/checkpoints/backup/``:

    - ``weights.npz``: online and target network weights and the optimizer's variables
      (iterations, moments), so the learning-rate schedule resumes where it stopped;
    - ``state.json``: environment-step and episode counters, the completed period, the agent's
      and the replay memory's NumPy RNG states (epsilon is a function of the step counter, so it
      resumes exactly), and whether the replay memory is included;
    - ``replay.npz``: the replay memory (uncompressed uint8), unless ``--no-checkpoint-replay``,
      in which case it is *rebuilt*: the resumed run refills it for ``--learning-starts`` steps
      before learning again;
    - ``training_metadata.json``: ``{"epoch": completed periods}`` (what the shared CSV logger
      reads to cut back and append to ``history.csv`` on resume).

    The folder is written to a temporary sibling and renamed into place, so a kill during a save
    leaves the previous checkpoint intact. The environment itself is not saved: a resumed run
    starts a new episode (the interrupted one is abandoned). The folder is removed when training
    ends normally (like Keras' BackupAndRestore).
    """

    def __init__(self, directory: str | os.PathLike, get_state, include_replay: bool = True,
                 enabled: bool = True):
        super().__init__()
        self.dir = Path(directory)
        self.get_state = get_state  # () -> (agent, memory, state dict)
        self.include_replay, self.enabled = include_replay, enabled
        self.save_seconds = 0.0

    def exists(self) -> bool:
        return (self.dir / "state.json").exists() or (self._old / "state.json").exists()

    @property
    def _old(self) -> Path:
        return self.dir.with_name(self.dir.name + ".old")

    def save(self, epoch: int) -> None:
        if not self.enabled:
            return
        t0 = time.perf_counter()
        agent, memory, state = self.get_state()
        tmp = self.dir.with_name(f".{self.dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        arrays = {f"online_{i}": w for i, w in enumerate(agent.online.get_weights())}
        arrays.update({f"target_{i}": w for i, w in enumerate(agent.target.get_weights())})
        arrays.update({f"opt_{i}": np.asarray(v.numpy() if hasattr(v, "numpy") else v)
                       for i, v in enumerate(agent.optimizer.variables)})
        with open(tmp / "weights.npz", "wb") as f:
            np.savez(f, **arrays)
        if self.include_replay:
            with open(tmp / "replay.npz", "wb") as f:
                np.savez(f, **memory.state_dict())
        state = dict(state, epoch=epoch, replay_included=self.include_replay,
                     memory_rng=memory.rng.bit_generator.state)
        atomic_write_text(tmp / "state.json", json.dumps(state))
        atomic_write_text(tmp / "training_metadata.json", json.dumps({"epoch": epoch}))
        old = self._old
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            os.rename(self.dir, old)
        os.rename(tmp, self.dir)
        shutil.rmtree(old, ignore_errors=True)
        self.save_seconds += time.perf_counter() - t0

    def load(self, agent: DQNAgent, memory) -> dict:
        """Restore agent and memory; returns the saved state dict."""
        src = self.dir if (self.dir / "state.json").exists() else self._old
        state = json.loads((src / "state.json").read_text())
        with np.load(src / "weights.npz") as f:
            n_on, n_tg = len(agent.online.weights), len(agent.target.weights)
            agent.online.set_weights([f[f"online_{i}"] for i in range(n_on)])
            agent.target.set_weights([f[f"target_{i}"] for i in range(n_tg)])
            for i, v in enumerate(agent.optimizer.variables):
                v.assign(f[f"opt_{i}"])
        agent.invalidate()
        if state.get("replay_included") and (src / "replay.npz").exists():
            with np.load(src / "replay.npz") as f:
                memory.load_state_dict({k: f[k] for k in f.files})
            memory.rng.bit_generator.state = state["memory_rng"]
        return state

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def on_train_end(self, logs=None):
        if self.enabled:
            shutil.rmtree(self.dir, ignore_errors=True)
            shutil.rmtree(self._old, ignore_errors=True)
