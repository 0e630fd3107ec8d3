"""Plots every app writes into its run directory (matplotlib, headless, saved atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shared.io import atomic_savefig  # noqa: E402


def save_figure(fig, path: str | Path, title: str = "", **savefig_kwargs) -> Path:
    """Title (if any), tight layout, an atomic write to ``path`` (dpi 100 unless given), and the
    figure closed: the last lines of every plot the suite writes."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    savefig_kwargs.setdefault("dpi", 100)
    out = atomic_savefig(fig, path, **savefig_kwargs)
    plt.close(fig)
    return out


def learning_curves(history, path: str | Path, metrics: tuple[str, ...] = (), title: str = "",
                    best_epoch: int | None = None) -> Path:
    """Loss (train and validation), each named metric, and the learning rate, per epoch.
    ``history``: a pandas DataFrame as written by CSVLogger (column ``epoch`` 0-based)."""
    epochs = history["epoch"] + 1 if "epoch" in history else range(1, len(history) + 1)

    def has(column):  # CSVLogger writes NA for val_* when a run holds nothing out
        return column in history and bool(history[column].notna().any())

    panels = [m for m in ("loss", *metrics) if has(m) or has(f"val_{m}")]
    has_lr = has("lr")
    if not panels and not has_lr:  # nothing the plot knows: plot every numeric column
        panels = [c for c in history.columns if c != "epoch" and not c.startswith("val_")][:4]
    fig, axes = plt.subplots(1, len(panels) + has_lr, figsize=(4.5 * (len(panels) + has_lr), 3.6))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, name in zip(axes, panels):
        if has(name):
            ax.plot(epochs, history[name], label=f"train {name}")
        if has(f"val_{name}"):
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if has_lr:
        ax = axes[-1]
        ax.plot(epochs, history["lr"], color="tab:green", marker=".")
        if (history["lr"] > 0).all():  # a schedule that ends at 0 (cosine) keeps a linear axis
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title("learning rate")
        ax.grid(alpha=0.3)
    return save_figure(fig, path, title)


def image_grid(images, path: str | Path, labels=None, cols: int = 8, title: str = "") -> Path:
    """A grid of images (uint8 or float in [0, 1]; HxW or HxWxC) with optional captions."""
    import numpy as np

    images = np.asarray(images)
    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.4))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            img = images[i]
            ax.imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None,
                      vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=7)
    return save_figure(fig, path, title)


def first_layer_images(model, max_units: int = 64):
    """The first weighted layer's filters as images, or ``None`` when they are not images: a
    convolution over 1 or 3 channels (a 4-D kernel [kh, kw, c, units]: Conv2D, or a fixed one
    such as a patch-whitening layer) gives its kernels [units, kh, kw, c]; a Dense layer over a
    flattened image (MNIST's hidden units) gives each unit's weights in the input's shape
    (Goodfellow et al. §9.10, Fig. 9.19). Each image is scaled to [0, 1] on its own."""
    import numpy as np

    try:
        layers = (model._flatten_layers(include_self=False, recursive=True)
                  if hasattr(model, "_flatten_layers") else model.layers)
        first = next(layer for layer in layers if getattr(layer, "kernel", None) is not None)
        kernel = np.asarray(first.kernel.numpy() if hasattr(first.kernel, "numpy")
                            else first.kernel, dtype="float32")
        image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    except (StopIteration, AttributeError, TypeError, IndexError, ValueError):
        return None
    kind = type(first).__name__
    if kernel.ndim == 4 and kernel.shape[2] in (1, 3):
        images = np.transpose(kernel, (3, 0, 1, 2))
    elif kind == "Dense" and len(image_shape) >= 2 and kernel.ndim == 2 \
            and int(np.prod(image_shape)) == kernel.shape[0] \
            and (len(image_shape) == 2 or image_shape[-1] in (1, 3)):
        images = kernel.T.reshape((kernel.shape[1], *image_shape))
    else:
        return None
    images = images[:max_units]
    axes = tuple(range(1, images.ndim))
    low = images.min(axis=axes, keepdims=True)
    span = np.maximum(images.max(axis=axes, keepdims=True) - low, 1e-12)
    return first.name, (images - low) / span


def first_layer_filters(model, path: str | Path, title: str = "") -> Path | None:
    """Draw :func:`first_layer_images` as a grid into ``path``; ``None`` when there are none."""
    found = first_layer_images(model)
    if found is None:
        return None
    name, images = found
    return image_grid(images, path, title=f"{title}: first layer '{name}'" if title else name)
