"""Sliding-window inference over a case's native grid, for any method (after MONAI's SlidingWindowInferer
and nnU-Net v2's Gaussian-weighted prediction).

The case is covered by overlapping windows (:func:`window_starts`); the windows go through ``predict`` in
batches of exactly ``batch_size`` (the last batch is filled up by repeating a window, so a compiled
``predict`` sees one input shape and traces once), and the per-voxel outputs are blended with an importance
map (:func:`gaussian_importance` or constant): ``out = sum(w * pred) / sum(w)``. Blending is linear, so any
per-voxel channels (class probabilities, a mean and an uncertainty map, ...) blend the same way.

Memory: the output and the weight sum are the only full-size arrays; windows are cut per batch. A case
smaller than the window along an axis is padded (centred, as MONAI and nnU-Net do) window by window, which
equals padding the whole case since such an axis is covered by one window, and the result is at the
input's own grid.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ldseg_suite.errors import LDSegError

BLENDS = ("gaussian", "constant")
PAD_MODES = ("constant", "edge", "reflect")
MIN_WEIGHT = 1e-3  # floor of the Gaussian map (as MONAI): every voxel of a window keeps a weight > 0


def _check_window(window, what: str = "window") -> tuple[int, ...]:
    try:
        window = tuple(int(w) for w in window)
    except (TypeError, ValueError):
        raise LDSegError(f"sliding window: {what} {window!r} is not a sequence of integers "
                         "([Inference] Window = H, W[, D])") from None
    if not window or min(window) < 1:
        raise LDSegError(f"sliding window: {what} {window} must have positive sizes ([Inference] Window)")
    return window


def _check_options(overlap: float, blend: str, batch_size: int, pad_mode: str) -> None:
    if not isinstance(overlap, (int, float, np.number)) or not 0.0 <= float(overlap) < 1.0:
        raise LDSegError(f"sliding window: overlap {overlap} is outside [0, 1) ([Inference] Overlap)")
    if blend not in BLENDS:
        raise LDSegError(f"sliding window: unknown blend {blend!r}, expected one of {', '.join(BLENDS)} "
                         "([Inference] Blend)")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise LDSegError(f"sliding window: batch size {batch_size} must be a positive integer "
                         "([Sampler] BatchSize)")
    if pad_mode not in PAD_MODES:
        raise LDSegError(f"sliding window: unknown pad mode {pad_mode!r}, expected one of {', '.join(PAD_MODES)}")


def gaussian_importance(window: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """nnU-Net's Gaussian importance map: float32 of shape ``window``, 1 at the centre.

    Separable: the product over axes of ``exp(-x^2 / (2 s^2))`` with x the distance to the window's centre
    ((size - 1) / 2, so the map is symmetric) and s = ``sigma_scale`` * size; normalised to max 1 (even sizes
    have no centre voxel) and clipped below at :data:`MIN_WEIGHT`.
    """
    window = _check_window(window)
    if not sigma_scale > 0:
        raise LDSegError(f"sliding window: sigma_scale {sigma_scale} must be > 0")
    g = np.ones((), np.float64)
    for size in window:
        x = np.arange(size) - (size - 1) / 2.0
        g = np.multiply.outer(g, np.exp(-(x ** 2) / (2.0 * (sigma_scale * size) ** 2)))
    g /= g.max()
    return np.maximum(g, MIN_WEIGHT).astype(np.float32)


def window_starts(shape: tuple[int, ...], window: tuple[int, ...], overlap: float) -> list[tuple[int, ...]]:
    """Start corners of windows that cover every voxel of ``shape`` (already padded to >= window per axis).

    Per axis: starts 0, step, 2 step, ... with step = max(1, int(size * (1 - overlap))) and the last window
    flush with the end (MONAI's ``dense_patch_slices``). Corners in C order (last axis fastest).
    """
    window, shape = _check_window(window), _check_window(shape, "shape")
    if len(shape) != len(window):
        raise LDSegError(f"sliding window: window {window} has {len(window)} axes, the shape {shape} {len(shape)}")
    _check_options(overlap, "gaussian", 1, "constant")
    per_axis = []
    for n, w in zip(shape, window):
        if n < w:
            raise LDSegError(f"sliding window: shape {shape} is smaller than the window {window}; pad it first")
        step = max(1, int(w * (1.0 - overlap) + 1e-6))  # 1e-6: 0.3 * 10 must give 3, not 2
        per_axis.append(list(range(0, n - w, step)) + [n - w])
    return list(itertools.product(*per_axis))


def _cut(image: np.ndarray, start, window, before, pad_mode: str) -> np.ndarray:
    """One window (*window, C) of the padded image, cut from the unpadded one."""
    src, pads = [], []
    for s, w, b, n in zip(start, window, before, image.shape):
        lo, hi = s - b, s - b + w
        src.append(slice(max(lo, 0), min(hi, n)))
        pads.append((max(-lo, 0), max(hi - n, 0)))
    piece = image[tuple(src)]
    if any(p != (0, 0) for p in pads):
        piece = np.pad(piece, pads + [(0, 0)], mode=pad_mode)
    return piece


def _overlap_slices(start, window, before, spatial):
    """(destination slices in the unpadded output, source slices in the window) of one window."""
    dst, src = [], []
    for s, w, b, n in zip(start, window, before, spatial):
        lo, hi = s - b, s - b + w
        dst.append(slice(max(lo, 0), min(hi, n)))
        src.append(slice(max(-lo, 0), w - max(hi - n, 0)))
    return tuple(dst), tuple(src)


def sliding_window(image: np.ndarray, predict: Callable, window, overlap: float = 0.5, blend: str = "gaussian",
                   batch_size: int = 8, pad_mode: str = "constant", progress: bool = False) -> np.ndarray:
    """Apply ``predict`` to overlapping windows of ``image`` and blend the outputs.

    image: (*spatial, C) (2D or 3D spatial). predict: takes float32 (batch_size, *window, C), returns
    (batch_size, *window, K) (numpy or a tensor). Returns (*spatial, K) float32 = sum(w * pred) / sum(w) with
    w the Gaussian (``blend="gaussian"``) or constant importance map. Cases smaller than the window are padded
    (``pad_mode`` constant 0, edge or reflect) and the result cropped back. ``progress`` shows a Keras
    progress bar over window batches.
    """
    image = np.asarray(image, dtype=np.float32)
    window = _check_window(window)
    _check_options(overlap, blend, batch_size, pad_mode)
    if image.ndim != len(window) + 1:
        raise LDSegError(f"sliding window: window {window} has {len(window)} axes but the image of shape "
                         f"{image.shape} has {image.ndim - 1} spatial axes (expected (*spatial, channels))")
    spatial, channels = image.shape[:-1], image.shape[-1]
    padded = tuple(max(n, w) for n, w in zip(spatial, window))
    before = tuple((p - n) // 2 for p, n in zip(padded, spatial))
    starts = window_starts(padded, window, overlap)
    weight = gaussian_importance(window) if blend == "gaussian" else np.ones(window, np.float32)
    out, wsum = None, np.zeros(spatial, np.float32)
    batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(batches), unit_name="window batch")
    for k, chunk in enumerate(batches):
        x = np.empty((batch_size, *window, channels), np.float32)
        for j, s in enumerate(chunk):
            x[j] = _cut(image, s, window, before, pad_mode)
        x[len(chunk):] = x[len(chunk) - 1]  # fill a partial last batch: one input shape, one trace
        y = np.asarray(predict(x), dtype=np.float32)
        if y.ndim != len(window) + 2 or y.shape[:-1] != x.shape[:-1]:
            raise LDSegError(f"sliding window: predict returned shape {y.shape} for windows of shape {x.shape}; "
                             f"expected ({batch_size}, {', '.join(map(str, window))}, classes)")
        if out is None:
            out = np.zeros(spatial + (y.shape[-1],), np.float32)
        for j, s in enumerate(chunk):
            dst, src = _overlap_slices(s, window, before, spatial)
            w = weight[src]
            out[dst] += y[j][src] * w[..., None]
            wsum[dst] += w
        if bar is not None:
            bar.update(k + 1)
    np.divide(out, wsum[..., None], out=out)
    return out


@dataclass(frozen=True)
class SlidingWindowInferer:
    """The sliding-window settings of a run: ``SlidingWindowInferer(window)(image, predict)``."""

    window: tuple[int, ...]
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 8
    pad_mode: str = "constant"
    progress: bool = False

    def __post_init__(self):
        object.__setattr__(self, "window", _check_window(self.window))
        _check_options(self.overlap, self.blend, self.batch_size, self.pad_mode)

    def __call__(self, image: np.ndarray, predict: Callable) -> np.ndarray:
        return sliding_window(image, predict, self.window, self.overlap, self.blend, self.batch_size,
                              self.pad_mode, self.progress)
