"""GIFs and overlays (matplotlib renders frames, imageio writes the GIF atomically)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import imageio.v3 as iio  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CLASS_COLOURS = np.array([[0, 0, 0], [255, 215, 0], [0, 200, 255], [255, 64, 64], [64, 255, 64],
                          [200, 64, 255]], np.float32) / 255.0


def to_rgb(image, rescale: bool = True) -> np.ndarray:
    """(H, W, C) float image -> (H, W, 3) in [0, 1] (per-image min-max unless ``rescale=False``)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    image = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    if not rescale:
        return np.clip(image, 0, 1)
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def overlay(image, labels, alpha: float = 0.45, rescale: bool = True) -> np.ndarray:
    """Colour the foreground classes of ``labels`` over ``image``; class boundaries drawn solid."""
    rgb = to_rgb(image, rescale)
    labels = np.asarray(labels).astype(int)
    colours = CLASS_COLOURS[np.clip(labels, 0, len(CLASS_COLOURS) - 1)]
    fg = (labels > 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb)
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge &= labels > 0
    out[edge] = colours[edge]
    return np.clip(out, 0, 1)


def colour_labels(labels) -> np.ndarray:
    labels = np.asarray(labels).astype(int)
    return CLASS_COLOURS[np.clip(labels, 0, len(CLASS_COLOURS) - 1)]


def render(panels, titles, suptitle: str = "", layout="column", panel_inches: float = 1.8, cmap: str = "magma",
           value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Draw panels (each (H, W, 3) in [0, 1] or (H, W) scalar) in one figure; return an RGB uint8 array.

    Scalar panels use ``cmap``, each scaled to its own range unless ``value_range`` fixes (vmin, vmax)."""
    n = len(panels)
    rows, cols = (n, 1) if layout == "column" else (1, n)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * panel_inches, rows * panel_inches + 0.35), dpi=72)
    for ax, panel, title in zip(np.atleast_1d(axes).ravel(), panels, titles):
        panel = np.asarray(panel)
        vmin, vmax = value_range or (None, None)
        ax.imshow(panel, cmap=cmap if panel.ndim == 2 else None, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return frame


def write_gif(path, frames, fps: float = 4.0) -> Path:
    """Write frames (equal-size RGB uint8) as a looping GIF, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.name}")
    iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def pick_frames(n_steps: int, n_frames: int) -> list[int]:
    """Evenly spaced step indices that always include the first and the last."""
    return sorted(set(np.linspace(0, n_steps - 1, min(n_frames, n_steps)).round().astype(int).tolist()))


def reverse_diffusion_gif(path, image, latents, segmentations, timesteps, fps: float = 4.0) -> Path:
    """The anchor's four rows per frame: source image, latent (channel 0), decoded segmentation, overlay.

    ``latents[k]`` (h, w, c) and ``segmentations[k]`` (H, W) label maps belong to reverse step ``timesteps[k]``.
    """
    frames = []
    for z, seg, t in zip(latents, segmentations, timesteps):
        panels = [to_rgb(image), np.asarray(z)[..., 0], colour_labels(seg), overlay(image, seg)]
        frames.append(render(panels, ["source image", "latent z_t (ch 0)", "decoded z_t", "overlay"],
                             suptitle=f"after the step from t = {t}"))
    return write_gif(path, frames, fps)


def slices_gif(path, image, labels, what: str = "slice", fps: float = 6.0) -> Path:
    """Sweep through axis 2 of a volume (slices, or frames of 2D+t): image and label overlay per frame."""
    image, labels = np.asarray(image), np.asarray(labels)
    lo, hi = float(image.min()), float(image.max())
    norm = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    frames = []
    for k in range(labels.shape[2]):
        sl = np.clip(norm[:, :, k], 0, 1)
        frames.append(render([np.repeat(sl[..., :1], 3, -1), overlay(sl, labels[:, :, k], rescale=False)],
                             ["image", "segmentation"],
                             suptitle=f"{what} {k + 1}/{labels.shape[2]}", layout="row"))
    return write_gif(path, frames, fps)
