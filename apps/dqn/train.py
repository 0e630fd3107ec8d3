"""Deep Q-learning with experience replay (Mnih et al. 2015) on Atari from pixels or on CartPole.

    python -m apps.dqn.train                                   # CartPole-v1, 100,000 steps
    python -m apps.dqn.train --env ALE/Pong-v5                 # Atari defaults (CleanRL), 10M steps
    python -m apps.dqn.train --env ALE/Pong-v5 --optimizer rmsprop --target-update 10000 \\
        --learning-rate 2.5e-4 --end-epsilon 0.1 --learning-starts 50000   # Mnih et al. 2015

Reads top to bottom: hyperparameters -> environments -> replay memory -> Q-networks -> the agent
loop (act, store, learn, evaluate, drive the shared callbacks) -> final evaluation -> export.

Budget flags: ``--steps N`` is the number of environment (agent) steps; ``--epochs E`` splits
them into E *evaluation periods* (after each, evaluation episodes run and the callbacks see one
"epoch": CSV/TensorBoard row, learning-rate log, early stopping on ``eval_return``, checkpoint);
``--limit N`` caps the environment steps at N; ``--patience`` counts evaluation periods.

Distribution (``--strategy``; ``--batch-size`` is per replica, the global batch is
``batch-size x replicas``):

- ``one_device`` / ``mirrored``: one actor and one replay memory; every gradient step samples one
  global batch, and each replica computes the gradient of its slice (all-reduced), so ``mirrored``
  performs the same computation as one device.
- ``multi_worker`` (every worker runs the same command; ``TF_CONFIG``): every worker is an actor
  of its own -- environment, replay memory and epsilon-greedy draws seeded with
  ``--seed + ACTOR_SEED_STRIDE x rank`` -- and samples its replicas' share of each global batch
  from its own memory; the gradients are all-reduced, so all workers hold the same networks.
  The workers stay in lockstep because every decision that leads to a collective op is taken
  alike on all of them: they learn at the same environment steps (every worker counts its own
  steps the same way), the reported TD loss is the all-reduced one, the evaluation episodes are
  played by the chief and their mean return is broadcast to all workers (``chief_values``), so
  early stopping and the NaN check stop all workers at the same period. The chief writes the
  run record, the GIF and the export; each worker checkpoints its own replay memory and RNG
  states under its run directory, and on resume the workers first check (an all-reduce) that
  they all restart from the same period.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.flags import base_parser, positive_float, positive_int  # noqa: E402

APP = "dqn"

# ---------------------------------------------------------------------------------------------
# Hyperparameters: every one in this table, with its source. A flag given on the command line
# overrides the table; everything else comes from the preset of the environment family.
# ---------------------------------------------------------------------------------------------
ATARI = {  # CleanRL dqn_atari.py defaults unless noted; Mnih et al. 2015 (Nature) in comments
    "steps": 10_000_000,  # CleanRL total_timesteps (Mnih: 50M frames = 12.5M steps)
    "buffer_size": 1_000_000,  # CleanRL = Mnih: replay memory size 1M
    "learning_rate": 1e-4,  # CleanRL (Adam); Mnih: RMSProp 2.5e-4
    "optimizer": "adam",  # CleanRL; Mnih: rmsprop (rho 0.95, eps 0.01, centered)
    "gamma": 0.99,  # CleanRL = Mnih discount factor
    "target_update": 1_000,  # CleanRL target_network_frequency; Mnih: 10,000
    "batch_size": 32,  # CleanRL = Mnih minibatch size
    "start_epsilon": 1.0,  # CleanRL = Mnih initial exploration
    "end_epsilon": 0.01,  # CleanRL; Mnih: 0.1
    "exploration_steps": 1_000_000,  # CleanRL 0.10 x 10M = Mnih final exploration frame 1M
    "learning_starts": 80_000,  # CleanRL; Mnih replay start size 50,000
    "train_frequency": 4,  # CleanRL = Mnih update frequency 4
    "gradient_steps": 1,  # one gradient step per update (CleanRL, Mnih)
    "clipnorm": None,  # CleanRL/Mnih: none (the Huber loss clips the error)
    "eval_epsilon": 0.05,  # Mnih et al. 2015 evaluation; CleanRL evaluate(epsilon=0.05)
    "epochs": 100,  # evaluation periods: every 100k steps
    "eval_episodes": 5,  # per period (cost control on 2 cores)
    "final_eval_episodes": 30,  # Mnih et al. 2015: 30 evaluation episodes
    "patience": 30,  # early stopping on eval return, in periods (3M steps)
    "hidden": None,  # the Nature CNN (model.py)
}
CARTPOLE = {  # SB3 rl-zoo hyperparams/dqn.yml, CartPole-v1 (+ SB3 DQN defaults) unless noted
    "steps": 100_000,  # the budget (rl-zoo: n_timesteps 5e4)
    "buffer_size": 100_000,  # rl-zoo buffer_size
    "learning_rate": 2.3e-3,  # rl-zoo learning_rate
    "optimizer": "adam",  # SB3 DQN default optimizer
    "gamma": 0.99,  # rl-zoo gamma
    "target_update": 10,  # rl-zoo target_update_interval (environment steps)
    "batch_size": 64,  # rl-zoo batch_size
    "start_epsilon": 1.0,  # SB3 exploration_initial_eps
    "end_epsilon": 0.04,  # rl-zoo exploration_final_eps
    "exploration_steps": 8_000,  # rl-zoo exploration_fraction 0.16 x n_timesteps 5e4
    "learning_starts": 1_000,  # rl-zoo learning_starts
    "train_frequency": 256,  # rl-zoo train_freq
    "gradient_steps": 128,  # rl-zoo gradient_steps
    "clipnorm": 10.0,  # SB3 DQN max_grad_norm
    "eval_epsilon": 0.05,  # CleanRL dqn.py evaluate(epsilon=0.05)
    "epochs": 20,  # evaluation periods: every 5,000 steps
    "eval_episodes": 10,  # per period
    "final_eval_episodes": 100,  # the target: mean over 100 episodes
    "patience": 8,  # early stopping on eval return, in periods (40k steps)
    "hidden": [256, 256],  # rl-zoo policy_kwargs net_arch=[256, 256]
}
# Under multi_worker, worker r's actor (environment, replay memory, epsilon-greedy draws) is
# seeded with --seed + r x this (a prime, so the streams of nearby --seed values do not collide).
ACTOR_SEED_STRIDE = 1_000_003
SHARED_FLAGS = ("learning_rate", "optimizer", "batch_size", "clipnorm", "epochs", "patience")

# Benchmark budgets (python -m benchmarks.run dqn --budget NAME).
BENCHMARK = {
    "metric": "eval_return",
    "anchor": {"value": 475, "metric": "CartPole-v1 mean return",
               "target": ">= 475 over 100 episodes within 100,000 steps",
               "source": "Gymnasium CartPole-v1 reward_threshold"},
    "budgets": {
        "default": [],  # CartPole-v1, 100,000 steps: target mean eval return >= 475 / 100 episodes
        "small": ["--steps", "30000", "--epochs", "6"],
        "pong_short": ["--env", "ALE/Pong-v5", "--steps", "400000", "--epochs", "8",
                       "--buffer-size", "100000", "--learning-starts", "10000",
                       "--exploration-steps", "200000"],
    },
    # The short Pong run is measured against the random policy, not CartPole's threshold.
    "budget_anchors": {
        "pong_short": {"value": -20.7, "metric": "Pong return of the random policy",
                       "target": "evaluation return above -20.7 (the long-run reference: ~20 "
                                 "after 10M steps, CleanRL; 18.9, Mnih et al. 2015)",
                       "source": "Mnih et al. 2015, Extended Data Table 2"},
    },
}


def preset(env_id: str) -> dict:
    from apps.dqn.data import is_atari

    return ATARI if is_atari(env_id) else CARTPOLE


def parse_args(argv=None):
    parser = base_parser(
        "python -m apps.dqn.train",
        "Deep Q-network with experience replay (Mnih et al. 2015). Defaults depend on --env: the "
        "Atari preset (CleanRL dqn_atari.py / Mnih et al. 2015) or the CartPole preset (SB3 "
        "rl-zoo); 'None' below means 'from the preset' (see ATARI and CARTPOLE in "
        "apps/dqn/train.py). --steps is the training budget; --epochs is the number of "
        "evaluation periods it is split into; --limit caps the environment steps; --patience "
        "counts evaluation periods.",
    )
    # Shared flags whose default depends on the environment: None = take the preset's value.
    parser.set_defaults(learning_rate=None, optimizer=None, batch_size=None, clipnorm=None,
                        epochs=None, patience=None,
                        monitor="eval_return",  # early stopping on evaluation return (max)
                        schedule="constant")  # CleanRL / Mnih: constant learning rate
    for action in parser._actions:  # allow None defaults through the shared type checkers
        if action.dest == "clipnorm":
            action.help = "clip the global gradient norm to this (SB3's max_grad_norm)"
        if action.dest in SHARED_FLAGS:
            action.help = (action.help or "") + " (default: from the --env preset)"
    a = parser.add_argument_group("dqn")
    a.add_argument("--env", default="CartPole-v1",
                   help="Gymnasium id: CartPole-v1, ALE/Pong-v5, ALE/Breakout-v5, ...")
    a.add_argument("--steps", type=positive_int, default=None, help="environment steps to train")
    a.add_argument("--buffer-size", type=positive_int, default=None, help="replay memory capacity")
    a.add_argument("--gamma", type=float, default=None, help="discount factor")
    a.add_argument("--target-update", type=positive_int, default=None,
                   help="C: copy the online network to the target network every C env steps")
    a.add_argument("--start-epsilon", type=float, default=None)
    a.add_argument("--end-epsilon", type=float, default=None)
    a.add_argument("--exploration-steps", type=int, default=None,
                   help="env steps over which epsilon decays linearly from start to end")
    a.add_argument("--learning-starts", type=int, default=None,
                   help="env steps of random-policy warm-up filling the replay memory")
    a.add_argument("--train-frequency", type=positive_int, default=None,
                   help="learn every this many env steps")
    a.add_argument("--gradient-steps", type=positive_int, default=None,
                   help="gradient steps at each learning time")
    a.add_argument("--double", action="store_true", help="Double DQN targets (van Hasselt 2016)")
    a.add_argument("--hidden", type=positive_int, nargs="+", default=None,
                   help="CartPole MLP hidden sizes")
    a.add_argument("--eval-epsilon", type=float, default=None, help="epsilon during evaluation")
    a.add_argument("--eval-episodes", type=positive_int, default=None,
                   help="evaluation episodes after each period")
    a.add_argument("--final-eval-episodes", type=positive_int, default=None,
                   help="evaluation episodes of the final (reported) evaluation")
    a.add_argument("--no-checkpoint-replay", dest="checkpoint_replay", action="store_false",
                   help="leave the replay memory out of checkpoints (it is then rebuilt on resume)")
    a.add_argument("--no-gif", dest="gif", action="store_false", help="skip the evaluation GIF")
    a.add_argument("--kill-after-epochs", type=positive_int, default=None,
                   help="testing: stop abruptly after this many periods, as if the process had "
                        "been killed (the checkpoint stays; re-run the command to resume)")
    at = parser.add_argument_group("atari preprocessing (apps/dqn/data.py cites each default)")
    at.add_argument("--noop-max", type=int, default=30, help="Mnih et al. 2015")
    at.add_argument("--frame-skip", type=positive_int, default=4, help="Mnih et al. 2015")
    at.add_argument("--no-max-pool", dest="max_pool", action="store_false",
                    help="do not max-pool the last two frames of a skip")
    at.add_argument("--frame-size", type=positive_int, default=84, help="Mnih et al. 2015")
    at.add_argument("--frame-stack", type=positive_int, default=4, help="Mnih et al. 2015")
    at.add_argument("--no-fire-reset", dest="fire_reset", action="store_false")
    at.add_argument("--no-episodic-life", dest="episodic_life", action="store_false",
                    help="Machado et al. 2018 recommend against end-of-life terminals")
    at.add_argument("--no-clip-reward", dest="clip_reward", action="store_false")
    at.add_argument("--sticky-actions", type=float, default=0.0,
                    help="ALE repeat_action_probability (Machado et al. 2018: 0.25)")
    args = parser.parse_args(argv)

    # Fill every unset value from the preset of the environment family.
    for key, value in preset(args.env).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.limit:
        args.steps = min(args.steps, args.limit)
    for name in ("start_epsilon", "end_epsilon", "eval_epsilon", "sticky_actions"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1]")
    if not 0.0 <= args.gamma <= 1.0:
        parser.error("--gamma must be in [0, 1]")
    if args.optimizer not in ("adam", "rmsprop"):
        parser.error("--optimizer: the DQN supports adam (CleanRL) or rmsprop (Mnih et al. 2015)")
    if args.epochs > args.steps:
        parser.error(f"--epochs {args.epochs} evaluation periods need at least as many --steps")
    return args


def make_optimizer(args, steps_per_epoch: int):
    """Adam (CleanRL; Keras defaults beta 0.9/0.999, eps 1e-7) or the RMSProp of Mnih et al.
    2015: squared-gradient momentum 0.95, min squared gradient 0.01, centered (Graves 2013, as
    DeepMind's). ``--clipnorm`` clips the *global* gradient norm, like SB3's ``max_grad_norm``
    (Keras' per-tensor ``clipnorm`` would not match it). ``--schedule`` counts gradient steps."""
    import keras

    from shared.schedules import make_schedule

    lr = make_schedule(args.schedule, args.learning_rate, steps_per_epoch, args.epochs)
    clip = {"global_clipnorm": args.clipnorm} if args.clipnorm else {}
    if args.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, rho=0.95, epsilon=0.01, centered=True, **clip)
    return keras.optimizers.Adam(lr, **clip)


# ---------------------------------------------------------------------------------------------
# Evaluation, plots, GIF, export
# ---------------------------------------------------------------------------------------------
def evaluate(agent, env, episodes: int, epsilon: float, seed: int, atari: bool,
             record_frames: bool = False, max_frames: int = 2000):
    """Run ``episodes`` full episodes with epsilon-greedy actions; return (returns, frames of the
    first episode when ``record_frames``). Atari episodes are whole games (no life loss
    terminal, unclipped reward); the return is the game score."""
    import numpy as np

    from apps.dqn import data

    rng = np.random.default_rng(seed)
    returns, frames = [], []
    agent.invalidate()  # the online weights may have been restored from outside
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            if record_frames and ep == 0 and len(frames) < max_frames:
                frames.append(data.render_frame(env))
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, epsilon, rng))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns, frames


def write_gif(frames, path, fps: int = 30):
    """An animated GIF, written atomically (every other frame of large CartPole renders)."""
    import imageio.v2 as imageio
    import numpy as np

    from shared.io import atomic_write_bytes

    if not frames:
        return None
    frames = [np.asarray(f) for f in frames]
    if frames[0].shape[0] > 300:  # CartPole renders 400x600: halve it
        frames = [f[::2, ::2] for f in frames]
    import io

    buf = io.BytesIO()
    imageio.mimsave(buf, frames, format="GIF", duration=1000 / fps, loop=0)
    return atomic_write_bytes(path, buf.getvalue())


def plot_returns(train_steps, train_returns, eval_steps, eval_returns, path, title,
                 random_return=None, target=None):
    """Training-episode returns (and a moving average) and evaluation returns vs env steps."""
    import numpy as np

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


def export(agent, export_dir, env_id: str, obs_shape, atari: bool, metrics: dict, gate_margin=None):
    """SavedModel ``dqn_<game>``: ``serving_default`` takes uint8 frame stacks ``frames``
    [batch, 84, 84, 4] (Atari) or float32 ``state`` [batch, 4] (CartPole) and returns
    ``q_values`` [batch, |A|] (float32) and ``action`` [batch] (int64, the greedy action)."""
    import tensorflow as tf

    from apps.dqn.data import game_name
    from shared.export import Gate, export_keras

    model = agent.online

    def serve(x):
        q = model(tf.cast(x, tf.float32), training=False)
        return {"q_values": q, "action": tf.argmax(q, axis=-1)}

    if atari:
        spec = tf.TensorSpec([None, *obs_shape], tf.uint8, name="frames")
    else:
        spec = tf.TensorSpec([None, *obs_shape], tf.float32, name="state")
    gate = Gate("eval_return", gate_margin) if gate_margin is not None else None
    return export_keras(f"dqn_{game_name(env_id)}", {"serving_default": (serve, [spec])}, [model],
                        export_dir, gate=gate,
                        metadata={"app": APP, "env": env_id, "metrics": metrics})


RANDOM_RETURN = {"pong": -20.7, "breakout": 1.7, "cartpole": 22.0}  # Mnih et al. 2015 table;
# CartPole: mean of a uniform random policy (~22, measured by many; not from a paper)
REFERENCE = {  # what a full run reaches (documented, not measured here)
    "pong": "Mnih et al. 2015: 18.9 (10M-50M frames); CleanRL dqn_atari.py: ~20 after 10M steps",
    "breakout": "Mnih et al. 2015: 401.2; CleanRL dqn_atari.py: ~366 after 10M steps",
}


# ---------------------------------------------------------------------------------------------
# The agent loop
# ---------------------------------------------------------------------------------------------
@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)

    from apps.dqn import data

    atari = data.is_atari(args.env)
    opts = data.AtariOptions(
        noop_max=args.noop_max, frame_skip=args.frame_skip, max_pool=args.max_pool,
        frame_size=args.frame_size, fire_reset=args.fire_reset, episodic_life=args.episodic_life,
        clip_reward=args.clip_reward, frame_stack=args.frame_stack,
        sticky_actions=args.sticky_actions)

    from shared import distribute
    from shared.runs import Run

    run = Run.start(APP, args, extra_config={"atari_preprocessing": vars(opts) if atari else None})
    # Under multi_worker every worker is an actor of its own: its environment, replay memory and
    # epsilon-greedy draws are seeded apart (worker 0, the chief, keeps --seed).
    actor_seed = args.seed + ACTOR_SEED_STRIDE * distribute.worker_rank()

    import keras
    import numpy as np

    from apps.dqn.agent import Checkpoint, DQNAgent, linear_epsilon
    from apps.dqn.model import build_q_network

    # 1. Environments: one for training (episodic life and reward clipping for Atari), one for
    #    evaluation (whole games, true score; the chief's only), seeded differently.
    env = data.make_env(args.env, actor_seed, training=True, options=opts)
    eval_env = (data.make_env(args.env, args.seed + 10_000, training=False, options=opts)
                if run.is_chief else None)
    obs_shape = env.observation_space.shape
    num_actions = int(env.action_space.n)
    print(f"env {args.env}: observation {obs_shape} {env.observation_space.dtype}, "
          f"{num_actions} actions")

    # 2. Replay memory: each frame once (Atari: the newest 84x84 frame; CartPole: the state).
    frame_shape = obs_shape[:-1] if atari else obs_shape
    memory = data.ReplayMemory(args.buffer_size, frame_shape,
                               np.uint8 if atari else np.float32,
                               history=obs_shape[-1] if atari else 1, seed=actor_seed)
    print(f"replay memory: {args.buffer_size:,} slots, {memory.nbytes / 2**20:,.1f} MiB, "
          f"{memory.bytes_per_slot:,.0f} bytes per slot (a naive s+s' stack store: "
          f"{2 * int(np.prod(obs_shape)) * (1 if atari else 4):,} bytes)")

    # 3. Q-networks and optimizer inside the strategy's scope. Each gradient step takes one
    #    global batch; this worker samples its replicas' share of it from its own memory.
    batch = run.global_batch(args.batch_size)
    local_batch = args.batch_size * distribute.local_replicas(run.strategy)
    steps_per_epoch = math.ceil(args.steps / args.epochs)
    learn_times = max(1, (steps_per_epoch // args.train_frequency))
    grad_steps_per_epoch = learn_times * args.gradient_steps
    with run.strategy.scope():
        hidden = tuple(args.hidden or ())
        online = build_q_network(atari, num_actions, obs_shape, hidden, "q_network")
        target = build_q_network(atari, num_actions, obs_shape, hidden, "target_q_network")
        optimizer = make_optimizer(args, grad_steps_per_epoch)
        online.compile(optimizer=optimizer)  # so callbacks see model.optimizer (lr logging)
        agent = DQNAgent(online, target, optimizer, num_actions, args.gamma, args.double,
                         run.strategy, batch)
    if args.verbose:
        online.summary(print_fn=lambda line, **_: print(line))

    # 4. The shared callbacks, driven from the loop through a CallbackList: early stopping on the
    #    evaluation return (Algorithm 7.1, restores the best weights), LR logging, throughput,
    #    CSV, TensorBoard; then our checkpoint (weights, optimizer, counters, RNGs, replay).
    rng = np.random.default_rng(actor_seed)
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
    callback_list = run.callbacks(monitor=args.monitor,
                                  examples_per_step=batch * args.gradient_steps,
                                  backup=False)
    callback_list.append(ckpt)
    callbacks = keras.callbacks.CallbackList(callback_list, model=online, epochs=args.epochs,
                                             steps=learn_times, verbose=0)

    # The replay memory starts empty on a fresh run or when it was left out of the checkpoint:
    # then the random-policy warm-up runs (again) from the current step.
    warmup_until = state["step"] + args.learning_starts if len(memory) == 0 else 0
    obs, _ = env.reset(seed=actor_seed + 7919 * state["resumes"])
    memory.start_episode(data.newest_frame(obs, atari))

    # 5. The loop: act epsilon-greedily, store the transition, learn every `train_frequency` steps
    #    after the warm-up, copy to the target network every C steps; evaluate every period.
    callbacks.on_train_begin()
    killed = False
    for epoch in range(state["epoch"], args.epochs):
        callbacks.on_epoch_begin(epoch)
        end = min(args.steps, (epoch + 1) * steps_per_epoch)
        t0, steps0, losses, qs = time.perf_counter(), state["step"], [], []
        ep_returns_before = len(state["train_returns"])
        batch_index = 0
        while state["step"] < end:
            step = state["step"]
            epsilon = linear_epsilon(step, args.start_epsilon, args.end_epsilon,
                                     args.exploration_steps)
            if step < warmup_until:
                action = int(rng.integers(num_actions))
            else:
                action = agent.act(obs, epsilon, rng)
            next_obs, reward, terminated, truncated, info = env.step(action)
            memory.add(action, reward, data.newest_frame(next_obs, atari), terminated, truncated)
            state["step"] = step = step + 1
            if "episode" in info:  # the real end of a game: its true, unclipped return
                state["train_returns"].append(info["episode"]["r"])
                state["train_return_steps"].append(step)
                state["episodes"] += 1
            if terminated or truncated:
                next_obs, _ = env.reset()
                memory.start_episode(data.newest_frame(next_obs, atari))
            obs = next_obs

            if step > max(warmup_until, args.learning_starts) and step % args.train_frequency == 0:
                callbacks.on_train_batch_begin(batch_index)
                idx = np.stack([memory.sample_indices(local_batch)
                                for _ in range(args.gradient_steps)])
                b = memory.batch(idx.reshape(-1))
                b = {k: v.reshape(args.gradient_steps, local_batch, *v.shape[1:])
                     for k, v in b.items()}
                loss, q = agent.train(b)
                losses.append(loss)
                qs.append(q)
                callbacks.on_train_batch_end(batch_index, {"loss": loss})
                batch_index += 1
            if step % args.target_update == 0:
                agent.update_target()
                state["target_updates"] += 1
            if online.stop_training:
                break
        train_seconds = time.perf_counter() - t0

        # Evaluation: whole episodes with a small epsilon (Mnih et al. 2015: 0.05), played by
        # the chief; every worker gets its result, so early stopping decides alike on all.
        callbacks.on_test_begin()
        returns = [0.0]
        if run.is_chief:
            returns, _ = evaluate(agent, eval_env, args.eval_episodes, args.eval_epsilon,
                                  args.seed + 100_000 + 1000 * epoch, atari)
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
            "epsilon": linear_epsilon(state["step"], args.start_epsilon, args.end_epsilon,
                                      args.exploration_steps),
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
              f"{logs['epsilon']:.3f}, {logs['env_steps_per_sec']:.0f} env steps/s", flush=True)
        if args.kill_after_epochs and args.kill_after_epochs <= epoch + 1 < args.epochs:
            killed = True
            break
        if online.stop_training or state["step"] >= args.steps:
            break
    if killed:  # as if killed: no on_train_end, the checkpoint stays for the next run
        print(f"stopped after period {state['epoch']} (--kill-after-epochs); re-run to resume")
        return {"app": APP, "killed_after_epoch": state["epoch"], "run_dir": str(run.dir)}
    callbacks.on_train_end()  # early stopping restores the best online weights here

    # 6. Final evaluation of the (best) online network: the reported metric (played by the chief,
    #    shared with the other workers for their records).
    returns, frames = [0.0], []
    if run.is_chief:
        returns, frames = evaluate(agent, eval_env, args.final_eval_episodes, args.eval_epsilon,
                                   args.seed + 999_999, atari, record_frames=args.gif)
    eval_mean, eval_std, eval_episodes = distribute.chief_values(
        run.strategy, [np.mean(returns), np.std(returns), len(returns)])
    game = data.game_name(args.env)
    metrics = {
        "eval_return": eval_mean,
        "eval_return_std": eval_std,
        "eval_episodes": int(eval_episodes),
        "eval_epsilon": args.eval_epsilon,
        "env_steps": state["step"],
        "train_episodes": state["episodes"],
        "replay_bytes_per_transition": round(memory.bytes_per_transition(), 1),
        "replay_bytes_per_slot": round(memory.bytes_per_slot, 1),
        "replay_naive_bytes_per_transition": 2 * int(np.prod(obs_shape)) * (1 if atari else 4),
        "env_steps_per_sec": _steady_rate(run.history_csv),  # training loop, median period
    }
    record = run.finish(metrics, plot_metrics=("eval_return",))
    record["checkpoint_seconds"] = round(ckpt.save_seconds, 1)
    record["resumed_from_period"] = resumed_from
    record["target_updates"] = state["target_updates"]
    if run.is_chief:
        plot_returns(state["train_return_steps"], state["train_returns"], state["eval_steps"],
                     state["eval_returns"], run.dir / "returns.png", f"DQN {args.env}",
                     RANDOM_RETURN.get(game), 475 if game == "cartpole" else None)
        if frames:
            write_gif(frames, run.dir / "eval_episode.gif")
        from shared.io import atomic_write_json

        atomic_write_json(run.dir / "metrics.json", record)
    print(f"final evaluation over {int(eval_episodes)} episodes (epsilon {args.eval_epsilon}): "
          f"return {metrics['eval_return']:.1f} +- {metrics['eval_return_std']:.1f} after "
          f"{state['step']:,} env steps, {record['wall_seconds']:.0f} s; replay memory "
          f"{metrics['replay_bytes_per_transition']:,.0f} bytes/transition "
          f"(naive {metrics['replay_naive_bytes_per_transition']:,})")
    if game in REFERENCE:
        print(f"reference for a full run: {REFERENCE[game]}")

    # 7. Export the online Q-network (chief only).
    if args.export and run.is_chief:
        path = export(agent, args.export_dir, args.env, obs_shape, atari, metrics, args.gate_margin)
        print(f"exported {path}")
        record["export"] = str(path)
    env.close()
    if eval_env is not None:
        eval_env.close()
    return record


def _steady_rate(history_csv):
    """Median env steps/s over the periods after the first (which includes tracing)."""
    import pandas as pd

    try:
        rates = list(pd.read_csv(history_csv)["env_steps_per_sec"])
    except Exception:
        return None
    rates = sorted(rates[1:] or rates)
    return float(rates[len(rates) // 2]) if rates else None


if __name__ == "__main__":
    main()
