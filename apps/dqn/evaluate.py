"""Evaluating the DQN and showing it: whole evaluation episodes, the returns plot, the GIF.

Evaluation follows Mnih et al. 2015: epsilon-greedy with a small epsilon (0.05), whole games (no
end-of-life terminal, unclipped reward), so the return is the game's score.
"""

from __future__ import annotations

import io

import numpy as np

from apps.dqn import data

# What a uniform random policy scores (Mnih et al. 2015, Extended Data Table 2); CartPole: the
# mean of a uniform random policy (~22, measured by many; not from a paper).
RANDOM_RETURN = {"pong": -20.7, "breakout": 1.7, "cartpole": 22.0}
# The targets drawn on the returns plot: CartPole-v1's reward threshold; Pong: issue 29's +18.
TARGET = {"cartpole": 475, "pong": 18}
REFERENCE = {  # what a full run reaches (documented, not measured here)
    "pong": "Mnih et al. 2015: 18.9 (10M-50M frames); CleanRL dqn_atari.py: ~20 after 10M steps",
    "breakout": "Mnih et al. 2015: 401.2; CleanRL dqn_atari.py: ~366 after 10M steps",
}


def play(agent, env, episodes: int, epsilon: float, seed: int, record_frames: bool = False,
         max_frames: int = 2500, frame_stride: int = 2):
    """Run ``episodes`` full episodes with epsilon-greedy actions; return (returns, frames).

    With ``record_frames``, the frames are those of the best episode (the first of equals), so a
    GIF shows a won game when one was won: every ``frame_stride``-th agent step, at most
    ``max_frames`` of them (a Pong game is 800-4,000 agent steps)."""
    rng = np.random.default_rng(seed)
    returns, best_frames = [], []
    agent.invalidate()  # the online weights may have been restored from outside
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total, t, frames = False, 0.0, 0, []
        while not done:
            if record_frames and t % frame_stride == 0 and len(frames) < max_frames:
                frames.append(data.render_frame(env))
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, epsilon, rng))
            total += float(reward)
            done, t = terminated or truncated, t + 1
        if not returns or total > max(returns):
            best_frames = frames
        returns.append(total)
    return returns, best_frames


def write_gif(frames, path, fps: int = 30):
    """An animated GIF, written atomically (every other frame of large CartPole renders)."""
    import imageio.v2 as imageio

    from shared.io import atomic_write_bytes

    if not frames:
        return None
    frames = [np.asarray(f) for f in frames]
    if frames[0].shape[0] > 300:  # CartPole renders 400x600: halve it
        frames = [f[::2, ::2] for f in frames]
    buf = io.BytesIO()
    imageio.mimsave(buf, frames, format="GIF", duration=1000 / fps, loop=0)
    return atomic_write_bytes(path, buf.getvalue())


def plot_returns(train_steps, train_returns, eval_steps, eval_returns, path, title,
                 random_return=None, target=None):
    """Training-episode returns (and a moving average) and evaluation returns vs env steps."""
    from shared.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    if train_returns:
        ax.plot(train_steps, train_returns, ".", ms=2, alpha=0.3, color="tab:blue",
                label="training episodes")
        w = max(1, min(50, len(train_returns) // 10))
        ma = np.convolve(train_returns, np.ones(w) / w, mode="valid")
        ax.plot(train_steps[w - 1:], ma, color="tab:blue", label=f"training (mean of {w})")
    if eval_returns:
        ax.plot(eval_steps, eval_returns, "o-", color="tab:red", label="evaluation (mean)")
    if random_return is not None:
        ax.axhline(random_return, color="grey", ls=":", label=f"random policy {random_return}")
    if target is not None:
        ax.axhline(target, color="green", ls="--", lw=1, label=f"target {target}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_run(state: dict, env_id: str, path):
    """The run's returns plot: training episodes, evaluations, the random policy's return and
    the target (CartPole 475, Pong +18)."""
    game = data.game_name(env_id)
    return plot_returns(state["train_return_steps"], state["train_returns"], state["eval_steps"],
                        state["eval_returns"], path, f"DQN {env_id}", RANDOM_RETURN.get(game),
                        TARGET.get(game))


def steady_rate(history_csv):
    """Median env steps/s over the periods after the first (which includes tracing)."""
    import pandas as pd

    try:
        rates = list(pd.read_csv(history_csv)["env_steps_per_sec"])
    except (OSError, KeyError, ValueError):  # no history (EmptyDataError is a ValueError)
        return None
    rates = sorted(rates[1:] or rates)
    return float(rates[len(rates) // 2]) if rates else None
