"""DQN: replay memory correctness, Atari preprocessing on a real ALE game, the TD update, target
updates, checkpoint/resume and the export round trip. Fast: CartPole runs of a few hundred steps."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from apps.dqn import data, replay


# ------------------------------------------------------------------------------------------------
# Replay memory
# ------------------------------------------------------------------------------------------------
def _simulate(memory, episodes, history, frame_shape=(2, 2), seed=0):
    """Feed ``episodes`` (list of (length, ends_by_truncation)) into the memory; return the list
    of reference transitions (s, a, r, s', terminated, truncated) built the way the agent sees
    them (a FrameStack that repeats the first frame at reset), keyed by the slot of s."""
    rng = np.random.default_rng(seed)
    counter = [0]

    def frame():
        counter[0] += 1
        return np.full(frame_shape, counter[0] % 256, dtype=np.uint8)

    ref = {}
    for length, trunc_end in episodes:
        f = frame()
        stack = [f] * history
        slot = memory.cursor
        memory.start_episode(f)
        for t in range(length):
            a, r = int(rng.integers(4)), float(rng.integers(-1, 2))
            f2 = frame()
            last = t == length - 1
            terminated, truncated = (last and not trunc_end), (last and trunc_end)
            nstack = stack[1:] + [f2]
            memory.add(a, r, f2, terminated, truncated)
            ref[slot] = (np.stack(stack, -1), a, r, np.stack(nstack, -1), terminated, truncated)
            stack = nstack
            slot = (slot + 1) % memory.capacity
    return ref


def test_replay_stacks_and_episode_boundaries():
    memory = replay.ReplayMemory(100, (2, 2), np.uint8, history=4, seed=1)
    ref = _simulate(memory, [(2, False), (6, True), (3, False)], history=4)
    assert len(memory) == 11  # 11 transitions in 3 + 7 + 4 = 14 slots
    one_step = _n_step_reference(ref, 1, memory.gamma, memory.capacity)
    _check_n_step(memory, one_step, sorted(ref))
    # The first state of episode 2 is its first frame four times, nothing from episode 1.
    first2 = 3  # slots 0-2: episode 1 (2 transitions + its final observation)
    s = memory.batch(np.array([first2]))["obs"][0]
    assert (s == s[..., :1]).all()
    # The final observation of an episode starts no transition; truncation does not stop the
    # bootstrap (terminated = 0) while a game over does.
    assert not memory.valid[2] and memory.terminated[1] and not memory.truncated[1]
    assert memory.truncated[8] and not memory.terminated[8] and not memory.valid[9]
    for _ in range(20):
        assert all(i in ref for i in memory.sample_indices(8))


def test_replay_wraparound_never_samples_overwritten_history():
    memory = replay.ReplayMemory(13, (2, 2), np.uint8, history=4, seed=2)
    ref = _simulate(memory, [(5, False), (9, True), (7, False), (4, True)], history=4)
    assert memory.size == memory.capacity
    live = {i: t for i, t in ref.items() if memory._ok(np.array([i]))[0]}
    assert 0 < len(live) < memory.capacity
    one_step = _n_step_reference(live, 1, memory.gamma, memory.capacity)
    _check_n_step(memory, one_step, sorted(live))  # every sampleable slot reconstructs
    drawn = np.concatenate([memory.sample_indices(16) for _ in range(20)])
    assert set(drawn.tolist()) <= set(live)


def test_replay_bytes_per_transition_and_state_round_trip():
    memory = replay.ReplayMemory(1000, (84, 84), np.uint8, history=4)
    # 84*84 frame + uint8 action + float32 reward + 4 bool flags
    assert memory.bytes_per_slot == 84 * 84 + 1 + 4 + 4 == 7065
    _simulate(memory, [(99, False)], history=4, frame_shape=(84, 84))
    assert memory.bytes_per_transition() == pytest.approx(7065 * 100 / 99)
    assert memory.bytes_per_transition() < 4 * 84 * 84  # far below one naive stacked state
    other = replay.ReplayMemory(1000, (84, 84), np.uint8, history=4)
    other.load_state_dict(memory.state_dict())
    idx = np.arange(99)
    for k, v in memory.batch(idx).items():
        np.testing.assert_array_equal(v, other.batch(idx)[k])


def _n_step_reference(ref, n, gamma, capacity):
    """{slot: (s, a, R, s_n, terminated, truncated, discount)} from the one-step reference (n = 1:
    itself, with discount gamma): up to n transitions of the same episode (consecutive slots),
    cut at its end. Slots whose window walks off the reference (a later lap) are left out."""
    out = {}
    for i in ref:
        ret, j, m = 0.0, i, 0
        while j in ref:
            s2, term, trunc = ref[j][3], ref[j][4], ref[j][5]
            ret += gamma ** m * ref[j][2]
            m += 1
            if term or trunc or m == n:
                out[i] = (ref[i][0], ref[i][1], ret, s2, term, trunc, gamma ** m)
                break
            j = (j + 1) % capacity
    return out


def _check_n_step(memory, expected, idx):
    b = memory.batch(np.asarray(idx))
    for j, i in enumerate(idx):
        s, a, ret, s2, term, trunc, discount = expected[i]
        np.testing.assert_array_equal(b["obs"][j], s)
        np.testing.assert_array_equal(b["next_obs"][j], s2)
        assert b["actions"][j] == a and b["terminated"][j] == float(term)
        assert b["truncated"][j] == float(trunc)
        assert b["rewards"][j] == pytest.approx(ret, abs=1e-6)
        assert b["discount"][j] == pytest.approx(discount, abs=1e-7)


def test_n_step_samples_sum_rewards_and_stop_at_the_episode_end():
    memory = replay.ReplayMemory(100, (2, 2), np.uint8, history=4, seed=3, n_step=3, gamma=0.9)
    ref = _simulate(memory, [(5, False), (2, True), (6, False)], history=4)
    expected = _n_step_reference(ref, 3, 0.9, memory.capacity)
    assert len(memory) == 13  # every transition of three finished games
    _check_n_step(memory, expected, sorted(expected))
    # Slot 3's window ends with the first game (a game over: no bootstrap); slot 6's with the
    # second, cut by the time limit: it bootstraps from the last observation with gamma^2.
    assert expected[3][4] and expected[3][6] == pytest.approx(0.9 ** 2)
    assert not expected[6][4] and expected[6][5] and expected[6][6] == pytest.approx(0.9 ** 2)
    assert expected[0][6] == pytest.approx(0.9 ** 3) and not expected[0][4]
    # A game still going: its last two transitions lack the steps their windows need.
    start = memory.cursor
    memory.start_episode(np.zeros((2, 2), np.uint8))
    for _ in range(4):
        memory.add(0, 1.0, np.zeros((2, 2), np.uint8), False, False)
    assert memory._ok(np.arange(start, start + 5)).tolist() == [True, True, False, False, False]
    for _ in range(20):
        assert set(memory.sample_indices(8).tolist()) <= set(ref) | {start, start + 1}


def test_n_step_wraparound_reconstructs_every_sampleable_window():
    memory = replay.ReplayMemory(17, (2, 2), np.uint8, history=4, seed=4, n_step=3, gamma=0.5)
    ref = _simulate(memory, [(5, False), (9, True), (7, False), (6, True)], history=4)
    expected = _n_step_reference(ref, 3, 0.5, memory.capacity)
    live = [i for i in range(memory.capacity) if memory._ok(np.array([i]))[0]]
    assert 0 < len(live) < memory.capacity and set(live) <= set(expected)
    _check_n_step(memory, expected, live)
    drawn = np.concatenate([memory.sample_indices(16) for _ in range(20)])
    assert set(drawn.tolist()) <= set(live)


# ------------------------------------------------------------------------------------------------
# Environments
# ------------------------------------------------------------------------------------------------
def test_atari_preprocessing_on_real_ale_game():
    pytest.importorskip("ale_py")
    env = data.make_env("ALE/Breakout-v5", seed=0, training=True)
    names = []
    e = env
    while hasattr(e, "env"):
        names.append(type(e).__name__)
        e = e.env
    assert names[:7] == ["FrameStack", "ClipReward", "WarpFrame", "FireReset", "EpisodicLife",
                         "MaxAndSkip", "NoopReset"]
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    assert (obs == obs[..., :1]).all()  # reset fills the stack with the first frame
    for _ in range(12):
        obs, r, *_ = env.step(env.action_space.sample())
        assert obs.shape == (84, 84, 4) and r in (-1.0, 0.0, 1.0)
    ev = data.make_env("ALE/Pong-v5", seed=0, training=False)
    assert "EpisodicLife" not in str(ev) and "ClipReward" not in str(ev)
    obs, _ = ev.reset(seed=1)
    assert obs.shape == (84, 84, 4) and data.render_frame(ev).shape == (210, 160, 3)
    assert data.game_name("ALE/Pong-v5") == "pong" and data.game_name("CartPole-v1") == "cartpole"


# ------------------------------------------------------------------------------------------------
# Learning
# ------------------------------------------------------------------------------------------------
def _cartpole_agent(double=False, lr=1e-3):
    import keras

    from apps.dqn.agent import DQNAgent
    from apps.dqn.model import build_mlp

    keras.utils.set_random_seed(0)
    online, target = build_mlp(2, 4, (64, 64)), build_mlp(2, 4, (64, 64), name="target")
    return DQNAgent(online, target, keras.optimizers.Adam(lr), 2, double=double,
                    global_batch=64)


def _cartpole_memory(n=600):
    env = data.make_env("CartPole-v1", seed=0)
    memory = replay.ReplayMemory(1000, (4,), np.float32, history=1, seed=0)
    obs, _ = env.reset(seed=0)
    memory.start_episode(obs)
    for _ in range(n):
        a = int(env.action_space.sample())
        nxt, r, term, trunc, _ = env.step(a)
        memory.add(a, r, nxt, term, trunc)
        if term or trunc:
            nxt, _ = env.reset()
            memory.start_episode(nxt)
    return memory


@pytest.mark.parametrize("double", [False, True])
def test_train_steps_reduce_td_loss_on_a_fixed_batch(double):
    agent = _cartpole_agent(double)
    batch = _cartpole_memory().sample(64)
    before = agent.td_loss(batch)
    stacked = {k: np.stack([v] * 30) for k, v in batch.items()}  # 30 steps on the same batch
    loss, _ = agent.train(stacked)
    after = agent.td_loss(batch)
    assert np.isfinite(loss) and after < 0.5 * before


def test_target_update_copies_online_weights():
    agent = _cartpole_agent()
    memory = _cartpole_memory(200)
    b = {k: v[None] for k, v in memory.sample(64).items()}
    agent.train(b)
    differ = any(not np.array_equal(o, t) for o, t in
                 zip(agent.online.get_weights(), agent.target.get_weights()))
    assert differ  # the target stays fixed between updates
    agent.update_target()
    for o, t in zip(agent.online.get_weights(), agent.target.get_weights()):
        np.testing.assert_array_equal(o, t)


def test_epsilon_schedule():
    from apps.dqn.agent import linear_epsilon

    assert linear_epsilon(0, 1.0, 0.1, 100) == 1.0
    assert linear_epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_epsilon(10_000, 1.0, 0.1, 100) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------
# The app end to end (CartPole, a few hundred steps)
# ------------------------------------------------------------------------------------------------
FAST = ["--steps", "400", "--epochs", "2", "--learning-starts", "100", "--train-frequency", "4",
        "--gradient-steps", "1", "--target-update", "50", "--batch-size", "32",
        "--hidden", "32", "32", "--eval-episodes", "1", "--final-eval-episodes", "2",
        "--verbose", "0"]


def test_train_export_round_trip(tmp_path):
    import tensorflow as tf

    from apps.dqn.train import main

    record = main([*FAST, "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "sm")])
    m = record["metrics"]
    assert record["target_updates"] == 400 // 50
    assert m["env_steps"] == 400 and m["eval_episodes"] == 2 and np.isfinite(m["eval_return"])
    for f in ("history.csv", "metrics.json", "returns.png", "eval_episode.gif",
              "learning_curves.png"):
        assert (tmp_path / "run" / f).exists(), f
    assert not (tmp_path / "run" / "checkpoints").exists()  # removed when training completes
    assert record["export"].endswith("dqn_cartpole/1")
    loaded = tf.saved_model.load(record["export"])
    fn = loaded.signatures["serving_default"]
    assert fn.structured_input_signature[1]["state"].dtype == tf.float32
    out = fn(state=tf.constant(np.random.default_rng(0).normal(size=(3, 4)), tf.float32))
    assert out["q_values"].shape == (3, 2) and out["action"].shape == (3,)
    np.testing.assert_array_equal(out["action"].numpy(), np.argmax(out["q_values"].numpy(), -1))


def test_n_step_run_learns_from_three_step_returns(tmp_path):
    from apps.dqn.train import main

    run = tmp_path / "run"
    record = main([*FAST, "--n-step", "3", "--run-dir", str(run), "--no-export"])
    assert json.loads((run / "config.json").read_text())["args"]["n_step"] == 3
    assert np.isfinite(record["metrics"]["eval_return"])
    assert np.isfinite(np.loadtxt(run / "history.csv", delimiter=",", skiprows=1, usecols=1)).all()


def test_atari_export_signature(tmp_path):
    import keras
    import tensorflow as tf

    from apps.dqn.model import build_nature_cnn
    from apps.dqn.train import APP
    from shared.app import Data

    online = build_nature_cnn(6)
    online.compile(optimizer=keras.optimizers.Adam(1e-4))
    assert online.count_params() == 1_687_206  # the Nature network with 6 actions
    args = APP.parse(["--env", "ALE/Pong-v5", "--export-dir", str(tmp_path)])
    path = APP.export(args, online, Data(atari=True, obs_shape=(84, 84, 4)),
                      {"eval_return": -21.0}, run=None)
    assert path.parent.name == "dqn_pong"
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    frames = np.random.default_rng(0).integers(0, 256, (2, 84, 84, 4)).astype(np.uint8)
    out = fn(frames=tf.constant(frames))
    np.testing.assert_allclose(out["q_values"].numpy(), online(frames.astype("float32")).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert out["action"].dtype == tf.int64
    meta = json.loads((path / "assets.extra" / "ksuite.json").read_text())
    assert meta["app"] == "dqn" and meta["env"] == "ALE/Pong-v5"


def test_resume_from_checkpoint(tmp_path, capsys):
    from apps.dqn.train import main

    run = tmp_path / "run"
    args = [*FAST, "--epochs", "3", "--steps", "450", "--run-dir", str(run), "--no-export"]
    first = main([*args, "--kill-after-epochs", "1"])
    assert first["killed_after_epoch"] == 1
    ckpt = run / "checkpoints" / "backup"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 150 and state["epoch"] == 1 and state["replay_included"]
    files = {p.name for p in ckpt.iterdir()}
    assert {"weights.npz", "replay.npz", "training_metadata.json"} <= files
    assert (run / "returns.png").stat().st_size > 0  # the return curve, drawn every period
    with np.load(ckpt / "replay.npz") as f:
        assert int(f["size"]) == 150 + state["episodes"] + 1  # one extra slot per episode
    second = main([*args, "--verbose", "1"])
    assert second["resumed_from_period"] == 1
    assert second["metrics"]["env_steps"] == 450
    # the record's curve spans both sittings: one evaluation per period
    assert second["metrics"]["eval_curve"]["steps"] == [150, 300, 450]
    assert len(second["metrics"]["eval_curve"]["returns"]) == 3
    out = capsys.readouterr().out
    assert "step 330/450" in out and "env steps/s, ETA " in out  # every fifth of a period
    assert re.search(r"step 330/450: epsilon [0-9.]+, last 10 games [0-9.]+, ", out)
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 3
    assert not ckpt.exists()


def test_checkpoint_restores_agent_and_memory(tmp_path):
    from apps.dqn.agent import Checkpoint

    agent = _cartpole_agent()
    memory = _cartpole_memory(300)
    agent.train({k: v[None] for k, v in memory.sample(64).items()})
    ck = Checkpoint(tmp_path / "ck", lambda: (agent, memory, {"step": 300}))
    ck.save(epoch=1)
    agent2, memory2 = _cartpole_agent(), replay.ReplayMemory(1000, (4,), np.float32, seed=5)
    state = ck.load(agent2, memory2)
    assert state["step"] == 300 and state["epoch"] == 1
    for a, b in zip(agent.online.get_weights() + agent.target.get_weights(),
                    agent2.online.get_weights() + agent2.target.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(agent2.optimizer.iterations.numpy()) == 1
    np.testing.assert_array_equal(memory.sample_indices(32), memory2.sample_indices(32))


def test_user_errors(tmp_path, capsys):
    from apps.dqn.train import main

    with pytest.raises(SystemExit) as e:
        main(["--env", "NoSuchGame-v0", "--run-dir", str(tmp_path)])
    assert e.value.code == 2 and "unknown Gymnasium environment" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--eval-epsilon", "2"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # multi_worker runs (test_distributed_apps.py) but
        main(["--strategy", "multi_worker", "--run-dir", str(tmp_path)])  # needs TF_CONFIG
    assert e.value.code == 2 and "TF_CONFIG" in capsys.readouterr().err


def test_presets_are_the_parser_defaults(capsys):
    """--env picks the preset table; its values are what --help prints and what a run uses."""
    from apps.dqn.train import APP, ATARI, CLASSIC

    cartpole, pong = APP.parse([]), APP.parse(["--env", "ALE/Pong-v5"])
    for key in ("learning_rate", "buffer_size", "train_frequency", "clipnorm", "patience"):
        assert getattr(cartpole, key) == CLASSIC[key] and getattr(pong, key) == ATARI[key]
    assert cartpole.hidden == [256, 256] and pong.hidden is None
    assert APP.parse(["--env", "ALE/Pong-v5", "--learning-rate", "2.5e-4"]).learning_rate == 2.5e-4
    for argv, shown in ([], "(default: 100000)"), (["--env=ALE/Pong-v5"], "(default: 1000000)"):
        with pytest.raises(SystemExit) as e:
            APP.main([*argv, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert e.value.code == 0 and "evaluation periods" in out
        assert f"--steps STEPS environment steps to train {shown}" in out


def test_atari_trains_in_bfloat16_on_a_cpu_and_cartpole_in_float32(monkeypatch):
    from apps.dqn.train import APP
    from shared import precision
    from shared.precision import resolve

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)

    pong, cartpole = APP.parse(["--env", "ALE/Pong-v5"]), APP.parse([])
    resolve(pong, APP.precision_for(pong))
    resolve(cartpole, APP.precision_for(cartpole))
    assert (pong.precision, cartpole.precision) == ("mixed_bfloat16", "float32")
    forced = APP.parse(["--env", "ALE/Pong-v5", "--precision", "float32"])
    resolve(forced, APP.precision_for(forced))
    assert forced.precision == "float32"


def test_evaluation_follows_the_steps():
    """A 600-step Pong check evaluates once, one game, and one game at the end (the presets'
    100 periods of 5 games and 30 final games would take a quarter of an hour); the presets'
    own budgets and CartPole's settings keep their evaluation."""
    from apps.dqn.train import APP

    def plan(*argv):
        a = APP.parse(list(argv))
        return a.epochs, a.eval_episodes, a.final_eval_episodes

    assert plan("--env", "ALE/Pong-v5", "--steps", "600") == (1, 1, 1)
    assert plan("--env", "ALE/Pong-v5", "--steps", "60000") == (6, 1, 6)
    assert plan("--env", "ALE/Pong-v5") == (20, 5, 30)  # 1M steps, an evaluation every 50k
    assert plan(*APP.budgets["pong"]) == (20, 5, 30)
    assert plan(*APP.budgets["breakout"]) == (10, 5, 30)
    assert plan(*APP.budgets["pong_short"]) == (8, 5, 30)
    assert plan() == (20, 10, 100) and plan(*APP.budgets["small"]) == (6, 10, 100)
    assert plan(*FAST) == (2, 1, 2) and plan("--steps", "3000", "--epochs", "2") == (2, 10, 100)
    assert plan("--steps", "5", "--limit", "3") == (3, 1, 3)  # --limit caps the steps too


def test_gif_frames_are_those_of_the_best_episode():
    from types import SimpleNamespace

    from apps.dqn import evaluate

    class Env:  # episode e lasts 3 + e steps and scores [1, -1, 5, 0][e]; its state is e
        unwrapped = SimpleNamespace(state=None)

        def reset(self, seed=None):
            self.e = 0 if seed is None or not hasattr(self, "e") else self.e + 1
            self.t, self.unwrapped.state = 0, (self.e, 0, 0, 0)
            return np.zeros(4), {}

        def step(self, action):
            self.t += 1
            done = self.t == 3 + self.e
            return np.zeros(4), ([1, -1, 5, 0][self.e] if done else 0.0), done, False, {}

    agent = SimpleNamespace(invalidate=lambda: None, act=lambda obs, eps, rng: 0)
    returns, frames = evaluate.play(agent, Env(), 4, 0.05, seed=0, record_frames=True,
                                    frame_stride=2)
    assert returns == [1, -1, 5, 0]
    assert len(frames) == 3  # episode 2's five steps, every other one: steps 0, 2, 4
    best = evaluate.play(agent, Env(), 3, 0.05, seed=0, record_frames=True, max_frames=2)[1]
    assert len(best) == 2


def test_numpy_acting_matches_the_network():
    agent = _cartpole_agent()
    memory = _cartpole_memory(200)
    agent.train({k: v[None] for k, v in memory.sample(64).items()})
    x = memory.sample(16)["obs"]
    np.testing.assert_allclose(agent.q_values(x), agent.online(x).numpy(), rtol=1e-5, atol=1e-5)
    agent.online.set_weights([w * 0 for w in agent.online.get_weights()])
    agent.invalidate()
    assert np.all(agent.q_values(x) == 0)


def test_speed_benchmark_refuses_a_run_that_never_learns(capsys):
    """A warm-up (CleanRL's 80,000 steps) longer than a 50,000-step speed run: only acting
    would be timed. The side-by-side benchmark says so before starting either learner."""
    from benchmarks.dqn_vs_sb3 import main

    with pytest.raises(SystemExit) as e:
        main(["--env", "ALE/Pong-v5", "--steps", "50000", "--learning-starts", "80000"])
    assert e.value.code == 2 and "--learning-starts below --steps" in capsys.readouterr().err
