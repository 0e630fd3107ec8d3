"""Deep Q-network with experience replay (Mnih et al. 2015): Atari from pixels; CartPole."""
