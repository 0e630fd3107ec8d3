"""The DQN's "data": Gymnasium environments (Atari with the standard preprocessing, CartPole).
The replay memory the agent samples its training batches from is in replay.py.

Atari preprocessing, one wrapper per detail, in the order of OpenAI Baselines' ``wrap_deepmind``
(which CleanRL's ``dqn_atari.py`` uses), each switchable by a flag of ``train.py``:

====================  =========================================================  =================
wrapper               what it does                                               source
====================  =========================================================  =================
``NoopReset``         up to 30 random no-op actions after each reset             Mnih et al. 2015
``MaxAndSkip``        repeat the action 4 frames, sum the rewards, observe the   Mnih et al. 2015
                      pixel-wise max of the last two frames (Atari flicker)
``EpisodicLife``      losing a life ends the *training* episode (the game goes   Mnih et al. 2015
                      on); never used for evaluation                             (Machado 2018
                                                                                 advises against)
``FireReset``         press FIRE after reset in games that need it to start      Baselines/CleanRL
``WarpFrame``         84x84 grayscale (ALE's grayscale screen, area resize)      Mnih et al. 2015
``ClipReward``        reward -> sign(reward) in [-1, 1], training only           Mnih et al. 2015
``FrameStack``        the last 4 frames as the state, [84, 84, 4] uint8          Mnih et al. 2015
sticky actions        ALE ``repeat_action_probability`` (0 = Mnih/CleanRL's      Machado et al.
                      NoFrameskip-v4; 0.25 = Machado et al.'s recommendation)    2018
====================  =========================================================  =================
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from shared.errors import UserError

FRAME_SIZE = 84  # Mnih et al. 2015: 84x84
HISTORY = 4  # Mnih et al. 2015: the 4 most recent frames form the state


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------
def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def game_name(env_id: str) -> str:
    """``ALE/Pong-v5`` -> ``pong``, ``CartPole-v1`` -> ``cartpole``, ``BreakoutNoFrameskip-v4`` ->
    ``breakout``: the lower-case game in the exported model's name ``dqn_<game>``."""
    name = env_id.split("/")[-1].split("-v")[0].replace("NoFrameskip", "")
    return name.lower()


@dataclass
class AtariOptions:
    """Every Atari preprocessing detail, with the published default (see the module table)."""

    noop_max: int = 30  # Mnih et al. 2015 ("up to 30 no-op actions at the start of an episode")
    frame_skip: int = 4  # Mnih et al. 2015 (k = 4), max over the last 2 frames
    max_pool: bool = True  # Mnih et al. 2015: max of the frame and the previous one (flicker)
    frame_size: int = FRAME_SIZE  # Mnih et al. 2015
    fire_reset: bool = True  # Baselines / CleanRL FireResetEnv (games whose action 1 is FIRE)
    episodic_life: bool = True  # Mnih et al. 2015 (training only)
    clip_reward: bool = True  # Mnih et al. 2015 (training only)
    frame_stack: int = HISTORY  # Mnih et al. 2015
    sticky_actions: float = 0.0  # 0 as Mnih / CleanRL (NoFrameskip-v4); Machado et al. 2018: 0.25
    max_episode_frames: int = 108_000  # Machado et al. 2018: 30 minutes of play at 60 Hz


def _gym():
    import gymnasium as gym

    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:  # CartPole still works without ale-py
        pass
    return gym


def _gym_wrapper_base():
    import gymnasium as gym

    return gym.Wrapper


class EpisodeStats(_gym_wrapper_base()):
    """The true (unclipped, whole-game) return and length, put in ``info["episode"]`` when the
    real episode ends (CleanRL's RecordEpisodeStatistics), below the life and reward wrappers."""

    def reset(self, **kwargs):
        self._return, self._length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        if terminated or truncated:
            info = dict(info, episode={"r": self._return, "l": self._length})
        return obs, reward, terminated, truncated, info


class NoopReset(_gym_wrapper_base()):
    """After reset, take a random number in [1, noop_max] of NOOP actions (Mnih et al. 2015)."""

    def __init__(self, env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max
        meanings = env.unwrapped.get_action_meanings()
        if meanings[0] != "NOOP":
            raise UserError(f"{env.spec.id}: action 0 is {meanings[0]}, not NOOP")

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = int(self.unwrapped.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(_gym_wrapper_base()):
    """Repeat the action ``skip`` times, sum the rewards, return the pixel-wise max of the last two
    frames (Mnih et al. 2015: some Atari objects are drawn only every other frame)."""

    def __init__(self, env, skip: int = 4, max_pool: bool = True):
        super().__init__(env)
        self.skip, self.max_pool = skip, max_pool

    def step(self, action):
        total, last, prev = 0.0, None, None
        terminated = truncated = False
        info = {}
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            prev, last = last, obs
            total += float(reward)
            if terminated or truncated:
                break
        if self.max_pool and prev is not None:
            last = np.maximum(prev, last)
        return last, total, terminated, truncated, info


class EpisodicLife(_gym_wrapper_base()):
    """A lost life ends the training episode (terminated=True: no bootstrapping past it), but the
    game only resets when it is really over (Mnih et al. 2015; Baselines' EpisodicLifeEnv)."""

    def __init__(self, env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # a no-op step from the state where the life was lost
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.unwrapped.ale.lives()
        return obs, info


class FireReset(_gym_wrapper_base()):
    """Press FIRE (then action 2) after reset, for games that wait for it (Baselines/CleanRL)."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                self.env.reset(**kwargs)
        return obs, info


class WarpFrame(_gym_wrapper_base()):
    """Resize the (ALE grayscale) 210x160 screen to ``size`` x ``size`` with area averaging
    (Mnih et al. 2015: 84x84; Baselines uses OpenCV's INTER_AREA, PIL's BOX filter is the same)."""

    def __init__(self, env, size: int = FRAME_SIZE):
        import gymnasium as gym

        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def _warp(self, frame):
        from PIL import Image

        return np.asarray(Image.fromarray(frame).resize((self.size, self.size), Image.BOX))

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._warp(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._warp(obs), reward, terminated, truncated, info


class ClipReward(_gym_wrapper_base()):
    """reward -> sign(reward) (Mnih et al. 2015), training only."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(np.sign(reward)), terminated, truncated, info


class FrameStack(_gym_wrapper_base()):
    """The last ``k`` frames, channels last: [84, 84, k] uint8. At reset the first frame fills the
    stack (Gymnasium's FrameStackObservation ``padding_type="reset"``), which is exactly what
    :class:`ReplayMemory` reconstructs at an episode start."""

    def __init__(self, env, k: int = HISTORY):
        import gymnasium as gym

        super().__init__(env)
        self.k = k
        self.frames = collections.deque(maxlen=k)
        h, w = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (h, w, k), np.uint8)

    def _obs(self):
        return np.stack(self.frames, axis=-1)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.k):
            self.frames.append(obs)
        return self._obs(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(obs)
        return self._obs(), reward, terminated, truncated, info


def make_env(env_id: str, seed: int, training: bool = True, options: AtariOptions | None = None):
    """A Gymnasium environment. Atari ids get the preprocessing above (episodic life and reward
    clipping only when ``training``); others (CartPole-v1) are used as they are, with the
    episode statistics wrapper. :func:`render_frame` draws a state for the evaluation GIF."""
    gym = _gym()
    if env_id not in gym.registry:
        raise UserError(f"unknown Gymnasium environment {env_id!r} (e.g. CartPole-v1, ALE/Pong-v5, "
                        f"ALE/Breakout-v5)")
    if not is_atari(env_id):  # rendered by render_frame() (no pygame needed)
        env = EpisodeStats(gym.make(env_id))
    else:
        o = options or AtariOptions()
        env = gym.make(env_id, frameskip=1, repeat_action_probability=o.sticky_actions,
                       full_action_space=False, obs_type="grayscale",
                       max_num_frames_per_episode=o.max_episode_frames)
        env = EpisodeStats(env)
        if o.noop_max > 0:
            env = NoopReset(env, o.noop_max)
        if o.frame_skip > 1:
            env = MaxAndSkip(env, o.frame_skip, o.max_pool)
        if o.episodic_life and training:
            env = EpisodicLife(env)
        if o.fire_reset and "FIRE" in env.unwrapped.get_action_meanings()[1:2] and \
                len(env.unwrapped.get_action_meanings()) >= 3:
            env = FireReset(env)
        env = WarpFrame(env, o.frame_size)
        if o.clip_reward and training:
            env = ClipReward(env)
        env = FrameStack(env, o.frame_stack)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    return env


def render_frame(env) -> np.ndarray:
    """An RGB picture of the current state: ALE's screen for Atari; for CartPole a drawing of the
    cart and pole from the state (Gymnasium's own renderer needs pygame, not a dependency)."""
    if hasattr(env.unwrapped, "ale"):
        return env.unwrapped.ale.getScreenRGB()
    from PIL import Image, ImageDraw

    x, _, theta, _ = (float(v) for v in env.unwrapped.state)
    w, h, scale = 300, 200, 300 / 4.8  # the track spans x in [-2.4, 2.4]
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    cx, cy = w / 2 + x * scale, 150
    d.line([(0, cy + 10), (w, cy + 10)], fill="black")
    d.rectangle([cx - 20, cy - 10, cx + 20, cy + 10], fill=(60, 60, 60))
    length = 2 * 0.5 * scale  # pole length 1.0 (half-length 0.5)
    d.line([(cx, cy), (cx + length * np.sin(theta), cy - length * np.cos(theta))],
           fill=(200, 120, 60), width=6)
    return np.asarray(img)


def newest_frame(obs: np.ndarray, atari: bool) -> np.ndarray:
    """What the replay memory stores per step: the newest 84x84 frame (Atari) or the state."""
    return obs[..., -1] if atari else obs
