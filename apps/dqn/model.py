"""Q-networks: the Nature CNN for Atari frame stacks, a small MLP for CartPole.

Nature CNN (Mnih et al. 2015, "Methods: model architecture"): the input is 84x84x4 (scaled to
[0, 1] inside the model, so the network takes the raw uint8 stack), then
Conv(32, 8x8, stride 4) -> ReLU -> Conv(64, 4x4, stride 2) -> ReLU -> Conv(64, 3x3, stride 1) ->
ReLU -> Dense(512) -> ReLU -> Dense(|A|), one linear output per action.

CartPole MLP: two hidden layers of 256 ReLU units (SB3 rl-zoo ``hyperparams/dqn.yml`` CartPole-v1:
``net_arch=[256, 256]``); CleanRL's ``dqn.py`` uses 120-84.
"""

from __future__ import annotations

import keras


def build_nature_cnn(num_actions: int, frame_size: int = 84, history: int = 4,
                     name: str = "q_network") -> keras.Model:
    inputs = keras.Input(shape=(frame_size, frame_size, history), name="frames")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)  # uint8 0..255 -> 0..1
    x = keras.layers.Conv2D(32, 8, strides=4, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(64, 4, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(64, 3, strides=1, activation="relu", name="conv3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(512, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(num_actions, dtype="float32", name="q_values")(x)  # mixed: f32
    return keras.Model(inputs, outputs, name=name)


def build_mlp(num_actions: int, state_dim: int, hidden=(256, 256),
              name: str = "q_network") -> keras.Model:
    inputs = keras.Input(shape=(state_dim,), name="state")
    x = inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i + 1}")(x)
    outputs = keras.layers.Dense(num_actions, dtype="float32", name="q_values")(x)  # mixed: f32
    return keras.Model(inputs, outputs, name=name)


def build_q_network(atari: bool, num_actions: int, obs_shape: tuple, hidden=(256, 256),
                    name: str = "q_network") -> keras.Model:
    if atari:
        return build_nature_cnn(num_actions, obs_shape[0], obs_shape[-1], name=name)
    return build_mlp(num_actions, obs_shape[0], hidden, name=name)
