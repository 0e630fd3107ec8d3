"""The DQN's training loop (Mnih et al. 2015, Algorithm 1), driving the shared callbacks.

Act epsilon-greedily, store the transition, learn every ``--train-frequency`` steps after the
warm-up, copy to the target network every C steps; after every evaluation period play evaluation
episodes and hand the callbacks one "epoch": early stopping on ``eval_return`` (Algorithm 7.1,
restores the best weights), learning-rate and throughput logs, CSV, TensorBoard, and the
checkpoint (weights, optimizer, counters, RNGs, replay memory) that lets a killed run resume.

Under ``multi_worker`` the workers stay in lockstep because every decision that leads to a
collective op is taken alike on all of them: they learn at the same environment steps, the
reported TD loss is the all-reduced one, the evaluation episodes are played by the chief and their
mean return is broadcast (``chief_values``), so early stopping and the NaN check stop all workers
at the same period.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from apps.dqn import data as envs
from apps.dqn.agent import Checkpoint, linear_epsilon
from apps.dqn.evaluate import play, plot_run
from shared import distribute
from shared.errors import UserError


class Killed(Exception):
    """``--kill-after-epochs``: the loop stopped as if the process had been killed."""

    def __init__(self, record: dict):
        super().__init__("killed")
        self.record = record


def train(args, data, run) -> dict:
    """Train ``data.agent`` for ``args.steps`` environment steps in ``args.epochs`` periods;
    returns the loop's state (counters, returns) with ``resumed_from`` and
    ``checkpoint_seconds``."""
    agent, memory, env, atari = data.agent, data.memory, data.env, data.atari
    online = agent.online
    rng = np.random.default_rng(data.actor_seed)
    state = {"step": 0, "episodes": 0, "epoch": 0, "train_returns": [], "train_return_steps": [],
             "eval_returns": [], "eval_steps": [], "resumes": 0, "target_updates": 0}

    def get_state():
        return agent, memory, dict(state, agent_rng=rng.bit_generator.state)

    # Every worker checkpoints into its own run directory: its replay memory and RNG states are
    # its own (the networks are the same on all).
    ckpt = Checkpoint(run.dir / "checkpoints" / "backup", get_state,
                      include_replay=args.checkpoint_replay)
    resumed, resumed_from = ckpt.exists(), 0
    if resumed:
        saved = ckpt.load(agent, memory)
        rng.bit_generator.state = saved.pop("agent_rng")
        state.update({k: saved[k] for k in state if k in saved})
        state["resumes"] += 1
        resumed_from = state["epoch"]
        print(f"resuming from the checkpoint: step {state['step']:,}, period {state['epoch']}, "
              f"replay memory {'restored' if saved['replay_included'] else 'rebuilt'} "
              f"({len(memory):,} transitions)")
    # All workers must resume from the same period, or they would no longer step in lockstep.
    # (Without several workers this is trivially true.)
    period = state["epoch"]
    total, squares = distribute.sum_over_workers(run.strategy, [period, period**2])
    workers = run.replicas // distribute.local_replicas(run.strategy)
    if workers * squares != total ** 2:  # equal iff every worker has the same period
        root = run.dir if run.is_chief else run.dir.parent.parent
        raise UserError(f"the workers' checkpoints are at different evaluation periods (this "
                        f"one's: {period}); to start afresh, remove {root}/checkpoints "
                        f"and every {root}/workers/<i>/checkpoints")
    callback_list = run.callbacks(monitor=args.monitor, examples_per_step=data.examples_per_step,
                                  backup=False)
    callback_list.append(ckpt)
    callbacks = keras.callbacks.CallbackList(callback_list, model=online, epochs=args.epochs,
                                             steps=data.learn_times, verbose=0)

    # The replay memory starts empty on a fresh run or when it was left out of the checkpoint:
    # then the random-policy warm-up runs (again) from the current step.
    warmup_until = state["step"] + args.learning_starts if len(memory) == 0 else 0
    obs, _ = env.reset(seed=data.actor_seed + 7919 * state["resumes"])
    memory.start_episode(envs.newest_frame(obs, atari))

    def epsilon_at(step):
        return linear_epsilon(step, args.start_epsilon, args.end_epsilon, args.exploration_steps)

    # Progress: a line every fifth of a period (and after each period) with env steps/s, the mean
    # return of the last 10 training games and the ETA of the whole run at this sitting's pace
    # (evaluations included); the returns plot (returns.png) is redrawn after every period.
    sitting_start, sitting_step = time.perf_counter(), state["step"]
    report_every = max(1, data.period_steps // 5)

    def eta() -> str:
        done = state["step"] - sitting_step
        if done <= 0:
            return "?"
        left = (args.steps - state["step"]) * (time.perf_counter() - sitting_start) / done
        return time.strftime("%H:%M:%S", time.gmtime(left)) if left < 86_400 else \
            f"{left / 3600:.0f} h"

    callbacks.on_train_begin()
    for epoch in range(state["epoch"], args.epochs):
        callbacks.on_epoch_begin(epoch)
        end = min(args.steps, (epoch + 1) * data.period_steps)
        t0, steps0, losses, qs = time.perf_counter(), state["step"], [], []
        ep_returns_before = len(state["train_returns"])
        batch_index = 0
        while state["step"] < end:
            step = state["step"]
            if step < warmup_until:
                action = int(rng.integers(data.num_actions))
            else:
                action = agent.act(obs, epsilon_at(step), rng)
            next_obs, reward, terminated, truncated, info = env.step(action)
            memory.add(action, reward, envs.newest_frame(next_obs, atari), terminated, truncated)
            state["step"] = step = step + 1
            if "episode" in info:  # the real end of a game: its true, unclipped return
                state["train_returns"].append(info["episode"]["r"])
                state["train_return_steps"].append(step)
                state["episodes"] += 1
            if terminated or truncated:
                next_obs, _ = env.reset()
                memory.start_episode(envs.newest_frame(next_obs, atari))
            obs = next_obs

            if step > max(warmup_until, args.learning_starts) and step % args.train_frequency == 0:
                callbacks.on_train_batch_begin(batch_index)
                # Each gradient step takes one global batch; this worker samples its replicas'
                # share of it from its own memory.
                idx = np.stack([memory.sample_indices(data.local_batch)
                                for _ in range(args.gradient_steps)])
                b = memory.batch(idx.reshape(-1))
                b = {k: v.reshape(args.gradient_steps, data.local_batch, *v.shape[1:])
                     for k, v in b.items()}
                loss, q = agent.train(b)
                losses.append(loss)
                qs.append(q)
                callbacks.on_train_batch_end(batch_index, {"loss": loss})
                batch_index += 1
            if step % args.target_update == 0:
                agent.update_target()
                state["target_updates"] += 1
            if args.verbose and step % report_every == 0 and step < end:
                rate = (step - steps0) / max(time.perf_counter() - t0, 1e-9)
                last = state["train_returns"][-10:]
                games = (f"last {len(last)} games {np.mean(last):.1f}, " if last else "")
                print(f"  step {step:,}/{args.steps:,}: epsilon {epsilon_at(step):.3f}, {games}"
                      f"{rate:.0f} env steps/s, ETA {eta()}", flush=True)
            if online.stop_training:
                break
        train_seconds = time.perf_counter() - t0

        # Evaluation: whole episodes with a small epsilon (Mnih et al. 2015: 0.05), played by
        # the chief; every worker gets its result, so early stopping decides alike on all.
        callbacks.on_test_begin()
        returns = [0.0]
        if run.is_chief:
            returns, _ = play(agent, data.eval_env, args.eval_episodes, args.eval_epsilon,
                              args.seed + 100_000 + 1000 * epoch)
        eval_mean, eval_std = distribute.chief_values(run.strategy,
                                                      [np.mean(returns), np.std(returns)])
        callbacks.on_test_end()
        state["eval_returns"].append(eval_mean)
        state["eval_steps"].append(state["step"])
        recent = state["train_returns"][ep_returns_before:]
        logs = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "q_mean": float(np.mean(qs)) if qs else float("nan"),
            "eval_return": eval_mean,
            "eval_return_std": eval_std,
            "train_return": float(np.mean(recent)) if recent else float("nan"),
            "episodes": state["episodes"],
            "env_steps": state["step"],
            "epsilon": epsilon_at(state["step"]),
            "env_steps_per_sec": (state["step"] - steps0) / max(train_seconds, 1e-9),
            "replay_transitions": len(memory),
            # The evaluation plays the role of validation; the alias also keeps Keras' CSVLogger
            # from adding an empty val_<key> column for every key when it sees no val_ key.
            "val_return": eval_mean,
        }
        state["epoch"] = epoch + 1
        callbacks.on_epoch_end(epoch, logs)
        print(f"period {epoch + 1}/{args.epochs} step {state['step']:,}: eval return "
              f"{logs['eval_return']:.1f} +- {logs['eval_return_std']:.1f}, train return "
              f"{logs['train_return']:.1f}, TD loss {logs['loss']:.4f}, epsilon "
              f"{logs['epsilon']:.3f}, {logs['env_steps_per_sec']:.0f} env steps/s, ETA {eta()}",
              flush=True)
        if run.is_chief:
            plot_run(state, args.env, run.dir / "returns.png")
        if args.kill_after_epochs and args.kill_after_epochs <= epoch + 1 < args.epochs:
            # As if killed: no on_train_end, the checkpoint stays for the next run.
            print(f"stopped after period {state['epoch']} (--kill-after-epochs); re-run to resume")
            raise Killed({"app": "dqn", "killed_after_epoch": state["epoch"],
                          "run_dir": str(run.dir)})
        if online.stop_training or state["step"] >= args.steps:
            break
    callbacks.on_train_end()  # early stopping restores the best online weights here
    env.close()
    return dict(state, resumed_from=resumed_from, checkpoint_seconds=ckpt.save_seconds)
