"""The learning-curve plot draws what the history holds, and nothing it does not."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _drawn(monkeypatch, history, tmp_path, **kwargs):
    """The figure learning_curves builds, caught before it is closed, and the file it wrote."""
    from shared import plots

    caught = {}
    real = plots.save_figure

    def keep(fig, path, title=""):
        caught["labels"] = [[line.get_label() for line in ax.get_lines()] for ax in fig.axes]
        caught["scales"] = [ax.get_yscale() for ax in fig.axes]
        return real(fig, path, title)

    monkeypatch.setattr(plots, "save_figure", keep)
    path = plots.learning_curves(history, tmp_path / "curves.png", **kwargs)
    assert path.is_file() and path.stat().st_size > 0
    return caught


def test_no_validation_series_when_nothing_was_held_out(monkeypatch, tmp_path):
    """A run without a validation split (CSVLogger writes NA in its val_* columns) plots the
    training curves only, and a cosine schedule ending at 0 keeps the rate on a linear axis."""
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.5, 0.3, 0.2],
                            "accuracy": [0.8, 0.9, 0.95], "lr": [1e-3, 5e-4, 0.0],
                            "val_loss": [np.nan] * 3, "val_accuracy": [np.nan] * 3})
    caught = _drawn(monkeypatch, history, tmp_path, metrics=("accuracy",))
    assert caught["labels"][:2] == [["train loss"], ["train accuracy"]]
    assert len(caught["labels"][2]) == 1  # the learning rate
    assert caught["scales"] == ["linear", "linear", "linear"]


def test_validation_series_and_log_rate_when_present(monkeypatch, tmp_path):
    history = pd.DataFrame({"epoch": [0, 1], "loss": [0.5, 0.3], "val_loss": [0.6, 0.4],
                            "lr": [1e-3, 1e-4]})
    caught = _drawn(monkeypatch, history, tmp_path, best_epoch=2)
    assert caught["labels"][0] == ["train loss", "validation loss", "best epoch 2"]
    assert caught["scales"][-1] == "log"
