"""What a GAN run shows while it trains: a grid of samples from one fixed latent batch after
every epoch (PNG), an animated GIF of those grids, and the generator / discriminator loss curves.

All are plain ``keras.callbacks.Callback``s or functions, written atomically (shared/io.py), so a
killed run never leaves half a file and a resumed run continues the same sequence of frames.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import keras
import numpy as np

from shared.io import atomic_write_bytes, atomic_write_text


def to_uint8(images) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 pixels 0..255 (rounded, clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile(images: np.ndarray, cols: int = 8, pad: int = 2, scale: int = 2) -> np.ndarray:
    """uint8 images [n, H, W, C] -> one uint8 image of a grid (white padding), each pixel
    repeated ``scale`` times so 28x28 digits are visible in a viewer. Returns HxW or HxWx3."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = img
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid[..., 0] if c == 1 else grid


def write_png(array: np.ndarray, path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def write_gif(frame_paths, path, seconds_per_frame: float = 0.4) -> Path | None:
    """An animated GIF of the PNG frames, in order; the last frame is held 4x longer."""
    import imageio.v3 as iio

    frames = [iio.imread(p) for p in frame_paths]
    if not frames:
        return None
    durations = [seconds_per_frame * 1000] * (len(frames) - 1) + [seconds_per_frame * 4000]
    if len(frames) == 1:  # Pillow wants a number, not a list, for a single frame
        durations = durations[0]
    data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=durations,
                       loop=0)
    return atomic_write_bytes(path, data)


def code_latents(classes: int, latent_dim: int, cols: int = 10, seed: int = 0) -> np.ndarray:
    """[classes * cols, latent_dim]: row c holds code c [AC] (z_c = 1 and the other code
    coordinates 0, so the argmax is c), with the same ``cols`` noise vectors in every row."""
    noise = np.random.default_rng(seed).standard_normal((cols, latent_dim)).astype("float32")
    z = np.tile(noise, (classes, 1))
    z[:, :classes] = 0.0
    z[np.arange(len(z)), np.repeat(np.arange(classes), cols)] = 1.0
    return z


def code_grid(generator, classes: int, latent_dim: int, path, cols: int = 10,
              seed: int = 0) -> Path:
    """One row per class code [AC], the same noise down each column: whether each code has
    become its class (AC-GAN, Odena et al. 2017, Fig. 1)."""
    z = code_latents(classes, latent_dim, cols, seed)
    return write_png(tile(to_uint8(generator(z, training=False)), cols), path)


class SampleGrid(keras.callbacks.Callback):
    """After each epoch, G(z_fixed) for one fixed latent batch -> ``<dir>/epoch_NNN.png``, and
    ``<gif>`` rebuilt from every frame so far (so the progress animation always exists)."""

    def __init__(self, generator, latent: np.ndarray, folder, gif_path, cols: int = 8):
        super().__init__()
        self.generator, self.latent, self.cols = generator, latent, cols
        self.folder, self.gif_path = Path(folder), Path(gif_path)

    def frame_paths(self) -> list[Path]:
        return sorted(self.folder.glob("epoch_*.png"))

    def render(self) -> np.ndarray:
        images = self.generator(self.latent, training=False)
        return tile(to_uint8(keras.ops.convert_to_numpy(images)), self.cols)

    def on_epoch_end(self, epoch, logs=None):
        write_png(self.render(), self.folder / f"epoch_{epoch + 1:03d}.png")
        # Frames of a longer earlier run in the same folder are not part of this one.
        frames = [p for p in self.frame_paths() if int(p.stem.split("_")[1]) <= epoch + 1]
        write_gif(frames, self.gif_path)


class QualityMonitor(keras.callbacks.Callback):
    """Every ``every`` epochs, the Inception Score and Fréchet distance of ``n`` samples (the
    Scorer's size; a few thousand: comparable from epoch to epoch, not with the final 10,000-image
    figures, since FD is biased upward for small n) -> printed and appended to ``<csv>``."""

    def __init__(self, generator, scorer, latent_dim: int, every: int, path, seed: int = 0):
        super().__init__()
        self.generator, self.scorer, self.latent_dim = generator, scorer, latent_dim
        self.every, self.path, self.seed = every, Path(path), seed

    def score(self) -> dict:
        from apps.dcgan.evaluate import generate, latents

        images = generate(lambda z: to_uint8(self.generator(z, training=False)),
                          latents(self.scorer.n, self.latent_dim, self.seed))
        return self.scorer.score(images)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        row = {"epoch": epoch + 1, **self.score()}
        print(" - ".join(f"{k}: {v:.4g}" for k, v in row.items()), flush=True)
        # A resumed run keeps the rows of the epochs before the one it restarted from.
        rows = [r for r in read_quality(self.path) if int(r["epoch"]) < epoch + 1] + [row]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)),
                                restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())


class StepLosses(keras.callbacks.Callback):
    """Per-step losses, written to ``<csv>`` after each epoch (so a resumed run keeps the steps
    of the epochs it restored). Keras' batch logs hold the running *mean* of each tracker over
    the epoch so far; the step's own value is recovered as (b+1) mean_b - b mean_{b-1}."""

    # --labels (AC-GAN): the label head's cross-entropy of the samples' codes and real labels
    KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "code_loss", "label_loss")

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:  # a fresh run, or a resumed one: keep only the earlier epochs
            self._first_epoch = False
            self.rows = [r for r in read_step_losses(self.path) if r["epoch"] < epoch + 1]
        self._epoch, self._previous = epoch + 1, {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        row = {"epoch": self._epoch, "step": len(self.rows) + 1}
        for key in self.KEYS:
            if key not in logs:
                continue
            mean = float(logs[key])
            prev = self._previous.get(key)
            row[key] = mean if batch == 0 or prev is None else (batch + 1) * mean - batch * prev
            self._previous[key] = mean
        self.rows.append(row)

    def on_epoch_end(self, epoch, logs=None):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["epoch", "step", *self.KEYS], restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def after_training(generator, run_dir, dataset: str, classes: int, latent_dim: int,
                   seed: int) -> None:
    """The figures of the whole run: losses per step, the quality curve (``--score-every``)
    and, for the AC-GAN, one row of samples per class."""
    run_dir = Path(run_dir)
    loss_curves(read_step_losses(run_dir / "step_losses.csv"), run_dir / "gan_losses.png",
                title=f"DCGAN on {dataset}")
    quality_curves(run_dir / "quality.csv", run_dir / "quality.png",
                   title=f"DCGAN on {dataset}: samples scored during training")
    if classes:  # one row per class, the same noise down each column
        code_grid(generator, classes, latent_dim, run_dir / "codes.png", seed=seed)


def read_step_losses(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: (int(v) if k in ("epoch", "step") else float(v)) for k, v in row.items()
                 if v != ""} for row in csv.DictReader(f)]


def loss_curves(step_rows: list[dict], path, title: str = "") -> Path:
    """Two panels: D and G loss per step (light) with a moving average (dark), and AC-GAN's
    code and label losses if logged; the discriminator's mean outputs D(x) and
    D(G(z)). At the game's equilibrium D = 1/2 everywhere, d_loss = 2 log 2 ~ 1.386 and
    g_loss = log 2 ~ 0.693 (dotted)."""
    from shared.plots import plt, save_figure

    steps = np.array([r["step"] for r in step_rows])
    window = max(1, len(steps) // 50)

    def smooth(v):
        if window == 1:
            return v
        c = np.cumsum(np.insert(v, 0, 0.0))
        out = (c[window:] - c[:-window]) / window
        return np.concatenate([v[: window - 1], out]) if len(v) >= window else v

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, color, eq in (("d_loss", "tab:red", 2 * math.log(2)),
                           ("g_loss", "tab:blue", math.log(2))):
        v = np.array([r.get(key, np.nan) for r in step_rows], dtype=float)
        if len(v):
            ax1.plot(steps, v, color=color, alpha=0.25, lw=0.8)
            ax1.plot(steps, smooth(v), color=color, label=key.replace("_", " "))
            ax1.axhline(eq, color=color, ls=":", lw=1)
    for key, color, label in (("code_loss", "tab:purple", "code loss (samples)"),
                              ("label_loss", "tab:brown", "label loss (real)")):
        v = np.array([r.get(key, np.nan) for r in step_rows], dtype=float)
        if len(v) and np.isfinite(v).any():  # --labels: AC-GAN's label head
            ax1.plot(steps, smooth(v), color=color, label=label)
    ax1.set_xlabel("generator step")
    ax1.set_title("losses (dotted: equilibrium values)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    for key, color, label in (("d_real", "tab:green", "D(x)"),
                              ("d_fake", "tab:orange", "D(G(z))")):
        v = np.array([r.get(key, np.nan) for r in step_rows], dtype=float)
        if len(v):
            ax2.plot(steps, smooth(v), color=color, label=label)
    ax2.axhline(0.5, color="grey", ls=":", lw=1)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("generator step")
    ax2.set_title("discriminator outputs")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    return save_figure(fig, path, title)


def read_quality(path) -> list[dict]:
    """The rows of a ``quality.csv`` written by QualityMonitor; [] when there is none."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def quality_curves(quality_csv, path, title: str = "") -> Path | None:
    """Inception Score and Fréchet distance per scored epoch (``--score-every``); None when
    nothing was scored."""
    rows = read_quality(quality_csv)
    if not rows:
        return None
    from shared.plots import plt, save_figure

    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, label in ((axes[0], "inception_score", "Inception Score (higher is better)"),
                              (axes[1], "frechet_distance", "Fréchet distance (lower is better)")):
        ax.plot(epochs, [float(r[metric]) for r in rows], "-o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    return save_figure(fig, path, title)


def confidence_grid(images: np.ndarray, probs: np.ndarray, path, n: int = 32, seed: int = 0,
                    title: str = "") -> Path:
    """Two panels of ``n`` uint8 images each, titled with the classifier's most likely class and
    its probability: the ``n`` it is least sure of (highest H(y|x)) and ``n`` drawn at random
    (seeded). Where an Inception Score below the real data's comes from, in one picture."""
    from apps.dcgan.evaluate import sample_entropies
    from shared.plots import plt, save_figure

    n = min(n, len(images))
    unsure = np.argsort(sample_entropies(probs))[::-1][:n]
    random = np.random.default_rng(seed).choice(len(images), n, replace=False)
    cols = 8
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 0.8, 2 * rows * 0.95 + 0.7),
                             squeeze=False)
    for block, picks in enumerate((unsure, random)):
        for k, ax in enumerate(axes[block * rows:(block + 1) * rows].ravel()):
            ax.axis("off")
            if k >= len(picks):
                continue
            i = picks[k]
            img = images[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{probs[i].argmax()}: {probs[i].max():.2f}", fontsize=7, pad=2,
                         color="C3" if block == 0 else "black")
    return save_figure(fig, path, title or (
        f"red: the {n} of {len(images):,} samples the classifier is least sure of;\n"
        f"black: {n} at random (class: probability)"), dpi=110)
