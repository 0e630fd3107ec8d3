"""Environment steps per second of our DQN against Stable-Baselines3's DQN, side by side.

    python -m benchmarks.dqn_vs_sb3 --env CartPole-v1 --steps 50000
    python -m benchmarks.dqn_vs_sb3 --env ALE/Pong-v5 --steps 50000 --buffer-size 50000 \
        --learning-starts 10000

Benchmark-only dependencies (not needed by the suite): ``torch`` (CPU build) and
``stable-baselines3``; for Atari also ``opencv-python-headless`` (SB3's AtariWrapper resizes with
OpenCV)::

    pip install torch==2.13.0 --index-url <the CPU wheel index>   # or the local CPU wheel
    pip install stable-baselines3 opencv-python-headless

Both learners run with the same hyperparameters (the app's table for the environment in
``apps/dqn/presets.py``: SB3 rl-zoo for CartPole, the 1M-step Atari recipe, with
``--buffer-size`` and ``--learning-starts`` overridable to fit a short run; plain DQN targets on
both sides, as SB3's DQN has no Double DQN), the same number of environment steps, one
environment, CPU only, in separate child processes run one after the other (``--rounds``
alternates them). Steps/s = environment steps / wall time of the training loop alone (acting,
storing, learning, target updates; no evaluation, no start-up). SB3's Atari environment is
``<Game>NoFrameskip-v4`` through its ``AtariWrapper`` (no-op reset 30, frame skip 4 with max-pool,
episodic life, FIRE reset, 84x84 grayscale, reward clipping) + ``VecFrameStack(4)`` -- the
same preprocessing as ours. One JSON line per round is appended to
``benchmarks/results/dqn_vs_sb3.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.side import Side  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _child_cpu() -> float:
    """User + system CPU seconds of finished child processes (the machine is shared, so the
    wall-clock rate depends on the load; CPU seconds put it in context)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _hyper(env_id: str, args) -> dict:
    from apps.dqn.train import APP

    h = dict(APP.presets["env"][APP.preset_key("env", env_id)])
    h["steps"] = args.steps
    if args.buffer_size:
        h["buffer_size"] = args.buffer_size
    if args.learning_starts is not None:
        h["learning_starts"] = args.learning_starts
    if args.exploration_steps is not None:
        h["exploration_steps"] = args.exploration_steps
    h["exploration_steps"] = min(h["exploration_steps"], args.steps)
    # SB3's DQN has no Double DQN targets: both sides compute the plain DQN target, so that
    # they do the same work per update (the Atari preset's Double DQN costs ours one more
    # forward pass of the online network on s').
    h["double"] = False
    return h


def run_ours(env_id: str, h: dict, seed: int) -> dict:
    """Our app in a child process, one evaluation period of one episode; its training-loop
    env steps/s comes from history.csv."""
    with tempfile.TemporaryDirectory(prefix="dqn-speed-") as tmp:
        # Every hyperparameter SB3 gets is passed, so a change of the app's preset between the
        # two sides' runs cannot make them differ.
        passed = ("steps", "buffer_size", "learning_starts", "exploration_steps", "learning_rate",
                  "gamma", "n_step", "target_update", "batch_size", "start_epsilon",
                  "end_epsilon", "train_frequency", "gradient_steps", "clipnorm")
        flags = [x for k in passed if h.get(k) is not None
                 for x in (f"--{k.replace('_', '-')}", str(h[k]))]
        cmd = [sys.executable, "-m", "apps.dqn.train", "--env", env_id, *flags, "--epochs", "1",
               "--double" if h["double"] else "--no-double",
               "--eval-episodes", "1", "--final-eval-episodes", "1", "--patience", "1",
               "--seed", str(seed), "--no-gif", "--no-export", "--verbose", "0", "--run-dir", tmp]
        t0, cpu0 = time.time(), _child_cpu()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall, cpu = time.time() - t0, _child_cpu() - cpu0
        import pandas as pd

        hist = pd.read_csv(Path(tmp) / "history.csv")
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    return {"env_steps_per_sec": float(hist["env_steps_per_sec"].iloc[-1]),
            "process_wall_seconds": round(wall, 1), "process_cpu_seconds": round(cpu, 1),
            "train_return_last_period": float(hist["train_return"].iloc[-1]),
            "command": " ".join(cmd[2:-2])}


def sb3_worker(env_id: str, h: dict, seed: int) -> dict:
    """Runs inside the child process: SB3 DQN with the same hyperparameters."""
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(int(os.environ.get("DQN_BENCH_THREADS", os.cpu_count() or 1)))
    from apps.dqn.data import is_atari

    kwargs = dict(
        learning_rate=h["learning_rate"], buffer_size=h["buffer_size"],
        learning_starts=h["learning_starts"], batch_size=h["batch_size"], gamma=h["gamma"],
        train_freq=h["train_frequency"], gradient_steps=h["gradient_steps"],
        target_update_interval=h["target_update"],
        exploration_fraction=h["exploration_steps"] / h["steps"],
        exploration_initial_eps=h["start_epsilon"], exploration_final_eps=h["end_epsilon"],
        max_grad_norm=h["clipnorm"] or 1e9, seed=seed, device="cpu", verbose=0,
        n_steps=h.get("n_step", 1),
    )
    if is_atari(env_id):
        import ale_py
        import gymnasium as gym
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack

        gym.register_envs(ale_py)
        game = env_id.split("/")[-1].split("-v")[0]
        env = VecFrameStack(make_atari_env(f"{game}NoFrameskip-v4", n_envs=1, seed=seed), 4)
        # SB3 default replay stores obs and next_obs; optimize_memory_usage stores frames once
        # (closer to ours), requires handle_timeout_termination=False. SB3's n-step buffer
        # does not support it: with n-step returns SB3 keeps obs and next_obs.
        compact = kwargs["n_steps"] == 1
        model = DQN("CnnPolicy", env, optimize_memory_usage=compact,
                    replay_buffer_kwargs={"handle_timeout_termination": False} if compact
                    else None, **kwargs)
    else:
        model = DQN("MlpPolicy", env_id, policy_kwargs={"net_arch": h["hidden"]}, **kwargs)
    t0 = time.perf_counter()
    model.learn(total_timesteps=h["steps"])
    seconds = time.perf_counter() - t0
    eps = [e["r"] for e in model.ep_info_buffer] if model.ep_info_buffer else []
    return {"env_steps_per_sec": h["steps"] / seconds, "train_seconds": round(seconds, 1),
            "train_return_recent": float(sum(eps) / len(eps)) if eps else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def run_sb3(env_id: str, h: dict, seed: int) -> dict:
    t0, cpu0 = time.time(), _child_cpu()
    out = subprocess.run([sys.executable, "-m", "benchmarks.dqn_vs_sb3", "--worker",
                          json.dumps({"env": env_id, "h": h, "seed": seed})],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_seconds"] = round(time.time() - t0, 1)
    result["process_cpu_seconds"] = round(_child_cpu() - cpu0, 1)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--buffer-size", type=int, default=None)
    parser.add_argument("--learning-starts", type=int, default=None)
    parser.add_argument("--exploration-steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(sb3_worker(spec["env"], spec["h"], spec["seed"])))
        return
    from benchmarks.run import git_commit, library_versions
    from shared.runs import cpu_model

    h = _hyper(args.env, args)
    if h["learning_starts"] >= args.steps:
        parser.error(f"learning starts after {h['learning_starts']:,} steps, not before the run's "
                     f"{args.steps:,}: neither learner would take a gradient step and only acting "
                     f"would be timed; pass --learning-starts below --steps (e.g. --steps // 5)")
    for r in range(args.rounds):
        ours = run_ours(args.env, h, args.seed)
        print(f"[round {r}] ours: {ours['env_steps_per_sec']:.0f} env steps/s", flush=True)
        sb3 = run_sb3(args.env, h, args.seed)
        print(f"[round {r}] SB3:  {sb3['env_steps_per_sec']:.0f} env steps/s", flush=True)
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        record = {
            "benchmark": "dqn_vs_sb3", "env": args.env, "steps": args.steps, "round": r,
            "hyperparameters": h, "ours": ours, "sb3": sb3,
            "ratio_ours_over_sb3": ours["env_steps_per_sec"] / sb3["env_steps_per_sec"],
            "load_average_1min_after": load, "libraries": library_versions(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "git_commit": git_commit(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path = SIDE.append(record)
        print(f"ours/SB3 = {record['ratio_ours_over_sb3']:.2f} -> {path}")


def render(rows):
    """The report's section lines for this benchmark's records."""
    from benchmarks.report import commit, get, table, times, when

    headers = ["date", "env", "steps", "ours steps/s", "SB3 steps/s", "ours / SB3", "ours CPU s",
               "SB3 CPU s", "SB3 torch threads", "commit"]
    return ["### Environment steps/s: ours vs Stable-Baselines3 DQN (same hyperparameters)", "",
            *table(headers, [[when(r), r.get("env", "–"), r.get("steps"),
                              get(r, "ours", "env_steps_per_sec"),
                              get(r, "sb3", "env_steps_per_sec"),
                              times(r.get("ratio_ours_over_sb3")),
                              get(r, "ours", "process_cpu_seconds"),
                              get(r, "sb3", "process_cpu_seconds"), get(r, "sb3", "torch_threads"),
                              commit(r)] for r in rows])]


SIDE = Side("dqn_vs_sb3", app="dqn", render=render)


if __name__ == "__main__":
    main()
