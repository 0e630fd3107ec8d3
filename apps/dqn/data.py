"""The DQN's "data": Gymnasium environments (Atari with the standard preprocessing, CartPole) and
the replay memory the agent samples its training batches from.

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

The replay memory keeps every frame once, as uint8 (see :class:`ReplayMemory`).
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


# ---------------------------------------------------------------------------------------------
# Replay memory
# ---------------------------------------------------------------------------------------------
class ReplayMemory:
    """Experience replay (Lin 1992; Mnih et al. 2015) that stores every frame once.

    One circular array of ``capacity`` *slots*; slot i holds the newest frame of a state (an
    84x84 uint8 frame for Atari, the 4 floats of CartPole) and, once the agent has acted from it,
    the transition that starts there: action, reward, ``terminated``, ``truncated``. The state
    s_i is the stack of frames i-h+1 .. i (h = ``history``, 4 for Atari), where frames before the
    episode's first frame repeat that first frame (as :class:`FrameStack` does at reset); s'_i is
    the stack ending at slot i+1. The observation that ends an episode is written to its own slot
    (so s' of the last transition exists, and a *truncated* episode can bootstrap from it); it
    starts no transition. The next episode begins in the slot after it.

    Cost: ``frame bytes + 1 (action) + 4 (reward) + 4 flags`` per slot, plus one extra slot per
    episode; for Atari 7,065 bytes instead of 2 x 4 x 7,056 = 56,448 for storing s and s' as
    stacks (1M transitions: ~7.1 GB instead of 56 GB). ``bytes_per_transition`` reports it.

    Sampling draws uniformly among slots that start a complete transition and whose history has
    not been overwritten (the h-1 slots after the write cursor are excluded once the array wraps).

    With ``n_step`` n > 1 a sample is the n-step transition that starts there (Sutton 1988;
    Hessel et al. 2018): the discounted sum of the next n rewards, the state n steps on, and the
    discount gamma^n of its bootstrap; the window stops early at the episode's end (a game over
    stops the bootstrap, a time-limit cut bootstraps from its last observation with gamma^m). A
    slot whose window still runs into the write cursor is not sampled until it is complete.
    """

    def __init__(self, capacity: int, frame_shape: tuple, frame_dtype=np.uint8, history: int = 1,
                 seed: int = 0, n_step: int = 1, gamma: float = 0.99):
        if capacity < history + n_step + 1:
            raise UserError(f"replay memory of {capacity} slots is too small")
        self.capacity, self.history = int(capacity), int(history)
        self.n_step, self.gamma = int(n_step), float(gamma)
        self.frame_shape = tuple(frame_shape)
        self.frames = np.zeros((capacity, *frame_shape), dtype=frame_dtype)
        self.actions = np.zeros(capacity, dtype=np.uint8)  # Atari has <= 18 actions
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.truncated = np.zeros(capacity, dtype=bool)
        self.first = np.zeros(capacity, dtype=bool)  # slot holds an episode's first frame
        self.valid = np.zeros(capacity, dtype=bool)  # slot starts a complete transition
        self.cursor = 0  # next slot to write
        self.size = 0  # slots written so far, at most capacity
        self.rng = np.random.default_rng(seed)

    # -- writing --------------------------------------------------------------------------
    def _write(self, frame, first: bool) -> None:
        c = self.cursor
        self.frames[c] = frame
        self.first[c], self.valid[c] = first, False
        self.terminated[c] = self.truncated[c] = False
        self.actions[c], self.rewards[c] = 0, 0.0
        self.cursor = (c + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def start_episode(self, frame) -> None:
        """The first observation of an episode (after reset)."""
        self._write(frame, first=True)

    def add(self, action: int, reward: float, next_frame, terminated: bool,
            truncated: bool) -> None:
        """The transition from the most recently written frame: the action taken there, the
        reward, and the next observation (written to the next slot)."""
        if self.size == 0:
            raise RuntimeError("start_episode() must come before add()")
        last = (self.cursor - 1) % self.capacity
        self.actions[last], self.rewards[last] = action, reward
        self.terminated[last], self.truncated[last] = bool(terminated), bool(truncated)
        self._write(next_frame, first=False)
        self.valid[last] = True

    # -- reading --------------------------------------------------------------------------
    def _ok(self, idx: np.ndarray) -> np.ndarray:
        """Which slots ``idx`` can be sampled: they start a complete transition, and (once the
        array has wrapped) they are not among the h-1 oldest slots, whose history would walk into
        the newest frames -- unless they start an episode and need no history (conservative)."""
        ok = self.valid[idx]
        if self.size == self.capacity and self.history > 1:
            oldest = (idx - self.cursor) % self.capacity < self.history - 1
            ok &= ~oldest | self.first[idx]
        if self.n_step > 1:
            ok &= self._window(idx)[0]
        return ok

    def _window(self, idx: np.ndarray):
        """The n-step windows starting at ``idx``: (complete, last), where ``last`` is the slot
        of each window's last transition (its next state is the stack ending at ``last + 1``) and
        a window is complete when every transition it needs was written after ``idx``."""
        idx = np.asarray(idx)
        newer = (self.cursor - 1 - idx) % self.capacity  # slots written after idx
        complete = np.ones(idx.shape, dtype=bool)
        ended = np.zeros(idx.shape, dtype=bool)
        last = idx.copy()
        for k in range(self.n_step):
            j = (idx + k) % self.capacity
            complete &= ended | (self.valid[j] & (k < newer))
            last = np.where(ended, last, j)
            ended |= self.terminated[j] | self.truncated[j]
        return complete, last

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        return int(self._ok(np.arange(self.size)).sum())

    def stack_indices(self, idx: np.ndarray) -> np.ndarray:
        """[n, history] slot indices, oldest first, of the states whose newest frame is ``idx``:
        walking back from ``idx``, an episode's first frame repeats for the missing history."""
        cols = [np.asarray(idx)]
        for _ in range(self.history - 1):
            cur = cols[-1]
            cols.append(np.where(self.first[cur], cur, (cur - 1) % self.capacity))
        return np.stack(cols[::-1], axis=1)

    def states(self, idx: np.ndarray) -> np.ndarray:
        """The states whose newest frame is in slots ``idx``: [n, 84, 84, h] (Atari) or the
        frames themselves when history is 1 (CartPole: [n, 4])."""
        if self.history == 1:
            return self.frames[idx]
        stacked = self.frames[self.stack_indices(idx)]  # [n, h, 84, 84]
        return np.moveaxis(stacked, 1, -1)

    def sample_indices(self, batch_size: int) -> np.ndarray:
        if not self.valid[: self.size].any():
            raise RuntimeError("the replay memory holds no complete transition yet")
        # Rejection sampling over the written slots: almost every slot starts a transition.
        out = np.empty(0, dtype=np.int64)
        while len(out) < batch_size:
            draw = self.rng.integers(0, self.size, size=2 * batch_size)
            out = np.concatenate([out, draw[self._ok(draw)]])
        return out[:batch_size]

    def sample(self, batch_size: int) -> dict:
        """A uniform batch: ``obs``, ``actions`` (int32), ``rewards``, ``next_obs``,
        ``terminated`` (float32: 1 stops bootstrapping), ``truncated`` (informational: a
        time-limit cut still bootstraps from s') and ``discount`` (gamma^m, m the transitions
        the sample spans: gamma with one-step samples)."""
        idx = self.sample_indices(batch_size)
        return self.batch(idx)

    def batch(self, idx: np.ndarray) -> dict:
        if self.n_step > 1:
            return self._n_step_batch(np.asarray(idx))
        nxt = (idx + 1) % self.capacity
        if self.history == 1:
            obs, next_obs = self.frames[idx], self.frames[nxt]
        else:
            # s' shares h-1 frames with s: slot i+1 never starts an episode (the final
            # observation of an episode sits there), so its stack is s's stack shifted by one
            # plus frame i+1. One gather of h+1 frames per sample instead of 2h.
            both = np.concatenate([self.stack_indices(idx), nxt[:, None]], axis=1)
            frames = np.moveaxis(self.frames[both], 1, -1)  # [n, 84, 84, h+1]
            obs, next_obs = frames[..., :-1], frames[..., 1:]
        return {
            "obs": obs,
            "actions": self.actions[idx].astype(np.int32),
            "rewards": self.rewards[idx],
            "next_obs": next_obs,
            "terminated": self.terminated[idx].astype(np.float32),
            "truncated": self.truncated[idx].astype(np.float32),
            "discount": np.full(len(idx), self.gamma, np.float32),
        }

    def _n_step_batch(self, idx: np.ndarray) -> dict:
        _, last = self._window(idx)
        span = (last - idx) % self.capacity  # transitions in the window, minus one
        returns = np.zeros(len(idx), np.float64)
        for k in range(self.n_step):  # the rewards of slots idx .. last, discounted
            j = (idx + k) % self.capacity
            returns += np.where(k <= span, self.gamma ** k * self.rewards[j], 0.0)
        return {
            "obs": self.states(idx),
            "actions": self.actions[idx].astype(np.int32),
            "rewards": returns.astype(np.float32),
            "next_obs": self.states((last + 1) % self.capacity),
            "terminated": self.terminated[last].astype(np.float32),
            "truncated": self.truncated[last].astype(np.float32),
            "discount": (self.gamma ** (span + 1)).astype(np.float32),
        }

    # -- accounting and persistence -------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.terminated,
                                      self.truncated, self.first, self.valid))

    @property
    def bytes_per_slot(self) -> float:
        return self.nbytes / self.capacity

    def bytes_per_transition(self) -> float:
        """Bytes per stored transition: slot cost x slots / transitions (the extra slot each
        episode's final observation takes is included)."""
        n = int(self.valid[: self.size].sum())
        return self.bytes_per_slot * self.size / n if n else self.bytes_per_slot

    def state_dict(self) -> dict:
        return {
            "frames": self.frames[: self.size], "actions": self.actions[: self.size],
            "rewards": self.rewards[: self.size], "terminated": self.terminated[: self.size],
            "truncated": self.truncated[: self.size], "first": self.first[: self.size],
            "valid": self.valid[: self.size],
            "cursor": np.int64(self.cursor), "size": np.int64(self.size),
        }

    def load_state_dict(self, state) -> None:
        size = int(state["size"])
        if size > self.capacity or tuple(state["frames"].shape[1:]) != self.frame_shape:
            raise UserError("the checkpoint's replay memory does not fit this configuration "
                            "(--buffer-size or the environment changed); use a new --run-dir")
        for name in ("frames", "actions", "rewards", "terminated", "truncated", "first", "valid"):
            getattr(self, name)[:size] = state[name]
        self.size, self.cursor = size, int(state["cursor"])
