"""The DQN's hyperparameters: one table per environment family, each value with its source.

``--env`` picks the table (Atari ids -> ``ATARI``, anything else -> ``CLASSIC``); train.py makes
its values the parser's defaults, so ``--help`` prints them and any flag overrides them.
"""

ATARI = {  # a 1M-step recipe for 2 cores (issue 29): the tuned single-GPU DQNs that solve Pong
    # in under 1M agent steps (Lapan, "Deep Reinforcement Learning Hands-On", 2018, ch. 6, its
    # Pong DQN) on CleanRL dqn_atari.py's network and update; Mnih et al. 2015 in comments.
    "steps": 1_000_000,  # the budget (CleanRL total_timesteps 10M; Mnih: 12.5M steps)
    "buffer_size": 100_000,  # the 10k-100k (Lapan: 10k; CleanRL = Mnih: 1M)
    "learning_rate": 1e-4,  # CleanRL = Lapan (Adam); Mnih: RMSProp 2.5e-4
    "optimizer": "adam",  # CleanRL = Lapan; Mnih: rmsprop (rho 0.95, eps 0.01, centered)
    "gamma": 0.99,  # CleanRL = Lapan = Mnih discount factor
    "double": True,  # Double DQN targets (van Hasselt et al. 2016): measured here on Pong,
    # benchmarks/notes/dqn.md (CleanRL = Mnih: DQN targets)
    "n_step": 3,  # Rainbow (Hessel et al. 2018): 3-step returns, among its largest gains
    # early in training (its ablation); Lapan ch. 8: n-step DQN on Pong. CleanRL = Mnih: 1
    "target_update": 1_000,  # CleanRL target_network_frequency = Lapan SYNC_TARGET_FRAMES
    # (Mnih: 10,000)
    "batch_size": 32,  # CleanRL = Lapan = Mnih minibatch size
    "start_epsilon": 1.0,  # CleanRL = Lapan = Mnih initial exploration
    "end_epsilon": 0.05,  # the evaluation's rate (Mnih et al. 2015 evaluate at 0.05 and train
    # down to 0.1; CleanRL = Lapan EPSILON_FINAL 0.01): at 0.01 the agent lost 1-2 points to the
    # evaluation's random actions (benchmarks/notes/dqn.md)
    "exploration_steps": 100_000,  # Lapan EPSILON_DECAY_LAST_FRAME 10**5 (1st ed.); CleanRL:
    # 10% of 10M = Mnih final exploration frame 1M
    "learning_starts": 10_000,  # Lapan REPLAY_START_SIZE; CleanRL 80,000; Mnih 50,000
    "train_frequency": 2,  # a gradient step every 2 agent steps: between CleanRL = Mnih (4)
    # and Lapan (every step, 4x the updates: ~6 h for 1M steps here); more updates per
    # transition learn more from the same steps (Fedus et al. 2020, "replay ratio")
    "gradient_steps": 1,  # one gradient step per update (CleanRL, Mnih)
    "clipnorm": None,  # CleanRL/Mnih: none (the Huber loss clips the error)
    "eval_epsilon": 0.05,  # Mnih et al. 2015 evaluation; CleanRL evaluate(epsilon=0.05)
    "epochs": 20,  # evaluation periods: every 50,000 steps (the issue)
    "eval_episodes": 5,  # per period (cost control on 2 cores)
    "final_eval_episodes": 30,  # Mnih et al. 2015: 30 evaluation episodes
    # A Pong evaluation game is ~800-4,000 agent steps, each a CNN forward pass: one per 10,000
    # training steps keeps evaluation below training (a 600-step check: one game per period).
    "steps_per_eval_episode": 10_000,
    "patience": 20,  # early stopping on eval return, in periods (1M steps: never cuts the run)
    "hidden": None,  # the Nature CNN (model.py)
}
CLASSIC = {  # SB3 rl-zoo hyperparams/dqn.yml, CartPole-v1 (+ SB3 DQN defaults) unless noted
    "steps": 100_000,  # the budget (rl-zoo: n_timesteps 5e4)
    "buffer_size": 100_000,  # rl-zoo buffer_size
    "learning_rate": 2.3e-3,  # rl-zoo learning_rate
    "optimizer": "adam",  # SB3 DQN default optimizer
    "gamma": 0.99,  # rl-zoo gamma
    "double": False,  # SB3's DQN: DQN targets
    "n_step": 1,  # SB3 DQN: one-step targets
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
    # CartPole episodes (<= 500 steps of a NumPy MLP) cost little next to the gradient steps:
    # no cap beyond one episode per step.
    "steps_per_eval_episode": 1,
    "patience": 8,  # early stopping on eval return, in periods (40k steps)
    "hidden": [256, 256],  # rl-zoo policy_kwargs net_arch=[256, 256]
}
