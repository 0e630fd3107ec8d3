"""Weight-norm regularization (issue 30): the exact L2/L1 penalty of known kernels appears in the
training loss, max-norm clamps a column after a step, biases / batch-norm / embeddings untouched,
custom training loops refused, the values recorded in the run's config.json."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from shared.errors import UserError
from shared.regularizers import RegularizerConfig, apply_weight_penalties, kernels
from tests.helpers import run_module

W = np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]], "float32")  # sum w^2 = 31.25, |w| = 11.5
B = np.array([10.0, -20.0], "float32")  # a large bias: any penalty on it would show


def tiny_model(batch_norm: bool = False) -> keras.Model:
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, name="dense")
    x = dense(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    dense.kernel.assign(W)
    dense.bias.assign(B)
    return model


def loss_of_one_step(model, lr: float = 0.0) -> tuple[float, float]:
    """(training loss of one batch, plain mse of the same batch), before the update."""
    x = np.ones((4, 3), "float32")
    y = np.zeros((4, 2), "float32")
    data_loss = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return float(model.train_on_batch(x, y, return_dict=True)["loss"]), data_loss


@pytest.mark.parametrize("l2,l1,penalty", [(1e-2, None, 1e-2 * 31.25),
                                           (None, 1e-2, 1e-2 * 11.5),
                                           (1e-2, 1e-3, 1e-2 * 31.25 + 1e-3 * 11.5)])
def test_exact_penalty_in_the_training_loss(l2, l1, penalty):
    model = tiny_model()
    touched = apply_weight_penalties(model, RegularizerConfig(l2=l2, l1=l1))
    assert [v.path for v in touched] == [model.get_layer("dense").kernel.path]
    assert model.get_layer("dense").bias.regularizer is None  # biases excluded
    loss, data_loss = loss_of_one_step(model)
    assert loss == pytest.approx(data_loss + penalty, rel=1e-5)
    assert sum(float(v) for v in model.losses) == pytest.approx(penalty, rel=1e-6)


def test_without_flags_nothing_changes():
    model = tiny_model()
    assert apply_weight_penalties(model, RegularizerConfig()) == []
    loss, data_loss = loss_of_one_step(model)
    assert loss == pytest.approx(data_loss, rel=1e-6)


def test_l2_gradient_pulls_the_kernel_not_the_bias():
    """One SGD step of lr 0.1 on lambda * sum(w^2) alone: w <- w - 0.1 * 2 lambda w."""
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, kernel_initializer="zeros", name="dense")
    model = keras.Model(inputs, dense(inputs))
    dense.kernel.assign(W)
    dense.bias.assign(B)
    apply_weight_penalties(model, RegularizerConfig(l2=0.5))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y, p: 0.0 * p)
    model.train_on_batch(np.zeros((2, 3), "float32"), np.zeros((2, 2), "float32"))
    np.testing.assert_allclose(dense.kernel.numpy(), W * (1 - 0.1 * 2 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(dense.bias.numpy(), B)  # untouched


def test_batch_norm_parameters_excluded():
    model = tiny_model(batch_norm=True)
    touched = apply_weight_penalties(model, RegularizerConfig(l2=1e-2, max_norm=3.0))
    assert len(touched) == 1
    bn = model.get_layer("bn")
    for v in bn.weights:
        assert v.regularizer is None and v.constraint is None, v.path
    assert sum(float(v) for v in model.losses) == pytest.approx(1e-2 * 31.25, rel=1e-6)
    gamma, beta = bn.gamma.numpy().copy(), bn.beta.numpy().copy()
    loss_of_one_step(model)  # lr 0: BN's parameters stay, only the kernel is clamped to norm 3
    np.testing.assert_allclose(bn.gamma.numpy(), gamma)
    np.testing.assert_allclose(bn.beta.numpy(), beta)
    assert np.linalg.norm(model.get_layer("dense").kernel.numpy(), axis=0).max() <= 3.0 + 1e-5


def test_recurrent_and_conv_kernels_but_not_embeddings():
    ids = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(20, 4, name="embedding")(ids)
    x = keras.layers.Bidirectional(keras.layers.GRU(3), name="bigru")(x)
    x = keras.layers.Reshape((6, 1))(x)
    x = keras.layers.Conv1D(2, 3, name="conv")(x)
    x = keras.layers.LSTM(2, name="lstm")(x)
    x = keras.layers.Reshape((2, 1))(x)
    x = keras.layers.SimpleRNN(2, name="rnn")(x)
    model = keras.Model(ids, x)
    touched = {v.path for v in apply_weight_penalties(model, RegularizerConfig(l2=1e-3))}
    names = sorted(p.rsplit("/", 1)[-1] for p in touched)
    # GRU x2 (both directions), LSTM, SimpleRNN: kernel + recurrent_kernel; Conv1D: kernel
    assert names == ["kernel"] * 5 + ["recurrent_kernel"] * 4
    assert model.get_layer("embedding").embeddings.regularizer is None
    expected = sum(1e-3 * float(np.sum(v.numpy() ** 2)) for v in kernels(model))
    assert sum(float(v) for v in model.losses) == pytest.approx(expected, rel=1e-5)


def test_max_norm_clamps_a_column_after_a_step():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, name="dense")
    model = keras.Model(inputs, dense(inputs))
    big = np.array([[6.0, 0.6], [8.0, 0.0], [0.0, 0.8]], "float32")  # column norms 10 and 1
    dense.kernel.assign(big)
    dense.bias.assign(B)
    apply_weight_penalties(model, RegularizerConfig(max_norm=2.0))
    loss_of_one_step(model, lr=0.0)  # the step changes nothing; the constraint follows it
    k = dense.kernel.numpy()
    norms = np.linalg.norm(k, axis=0)
    assert norms[0] == pytest.approx(2.0, rel=1e-4)  # clamped to c, direction kept
    np.testing.assert_allclose(k[:, 0], big[:, 0] * 2.0 / 10.0, rtol=1e-4)
    np.testing.assert_allclose(k[:, 1], big[:, 1], rtol=1e-4)  # below c: left as it is
    np.testing.assert_allclose(dense.bias.numpy(), B)
    assert sum(float(v) for v in model.losses) == 0.0  # max-norm adds no loss


def test_max_norm_on_a_conv_kernel_is_per_filter():
    inputs = keras.Input((5, 5, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")
    model = keras.Model(inputs, keras.layers.Flatten()(conv(inputs)))
    conv.kernel.assign(np.ones((3, 3, 2, 3), "float32") * np.array([1.0, 0.1, 0.01], "float32"))
    apply_weight_penalties(model, RegularizerConfig(max_norm=1.0))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.train_on_batch(np.zeros((1, 5, 5, 2), "float32"), np.zeros((1, 27), "float32"))
    norms = np.sqrt((conv.kernel.numpy() ** 2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(norms, [1.0, 0.1 * np.sqrt(18), 0.01 * np.sqrt(18)], rtol=1e-4)


class OwnStep(keras.Model):
    def train_step(self, data):  # pragma: no cover - never run
        return {}


def test_custom_train_step_refuses_penalties_not_max_norm():
    inputs = keras.Input((3,))
    model = OwnStep(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(UserError, match="own train_step"):
        apply_weight_penalties(model, RegularizerConfig(l2=1e-3))
    assert len(apply_weight_penalties(model, RegularizerConfig(max_norm=3.0))) == 1


def test_no_kernel_or_not_a_model_refused():
    inputs = keras.Input((4,), dtype="int32")
    tables = keras.Model(inputs, keras.layers.Embedding(10, 2)(inputs))
    with pytest.raises(UserError, match="no Dense"):
        apply_weight_penalties(tables, RegularizerConfig(l2=1e-3))
    with pytest.raises(UserError, match="Keras model"):
        apply_weight_penalties(object(), RegularizerConfig(max_norm=1.0))


@pytest.mark.parametrize("app,argv,message", [
    ("dcgan", ["--l2", "1e-4"], "--l2/--l1"),
    ("dqn", ["--l1", "1e-4"], "--l2/--l1"),
    ("dqn", ["--clip-global-norm", "1"], "--clip-global-norm"),
    ("word2vec", ["--max-norm", "3"], "--max-norm"),
])
def test_apps_that_cannot_take_a_flag_refuse_it(app, argv, message, capsys):
    import importlib

    with pytest.raises(SystemExit) as exc:
        importlib.import_module(f"apps.{app}.train").APP.parse(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_dcgan_takes_max_norm():
    from apps.dcgan.train import APP

    assert APP.parse(["--max-norm", "3"]).max_norm == 3.0


def test_mnist_mlp_runs_with_l2_and_records_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_module("apps.mnist_mlp.train", "--recipe", "keras", "--l2", "1e-4", "--epochs", "1",
                      "--limit", "500",
                      "--no-export", "--run-dir", run_dir, "--verbose", "0")
    assert "regularization: l2 0.0001" in proc.stdout
    assert "on 3 kernels" in proc.stdout  # 784->512, 512->512, 512->10
    config = json.loads((run_dir / "config.json").read_text())["args"]
    assert (config["l2"], config["l1"], config["max_norm"]) == (1e-4, None, None)
    assert (config["momentum"], config["beta1"], config["decay_factor"]) == (0.9, 0.9, 0.1)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics
