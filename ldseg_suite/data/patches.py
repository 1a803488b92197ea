"""Native-resolution training samples: resampling to a target spacing, padding, and random patches with
foreground oversampling (as nnU-Net: a share of the patches is centred on a random foreground voxel)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ldseg_suite.errors import LDSegError

MAX_FG_POINTS = 20000  # foreground voxels remembered per class and case (a random subset when more)


def resample(array: np.ndarray, spacing, target, order: int) -> np.ndarray:
    """Resample the spatial axes of ``array`` ((*spatial) or (*spatial, C)) from ``spacing`` to ``target`` mm.

    ``order`` 1 (linear) for images, 0 (nearest) for label maps. Returns ``array`` itself when nothing changes.
    """
    spatial = len(spacing)
    zoom = [float(s) / float(t) for s, t in zip(spacing, target)]
    if np.allclose(zoom, 1.0):
        return array
    zoom += [1.0] * (array.ndim - spatial)
    return ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True)


def pad_to(array: np.ndarray, shape, value=0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pad the leading ``len(shape)`` axes symmetrically to at least ``shape``. Returns (array, pads)."""
    pads = []
    for n, want in zip(array.shape, shape):
        extra = max(0, int(want) - n)
        pads.append((extra // 2, extra - extra // 2))
    if not any(sum(p) for p in pads):
        return array, pads
    full = pads + [(0, 0)] * (array.ndim - len(shape))
    return np.pad(array, full, mode="constant", constant_values=value), pads


def foreground_points(label: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """{class: (n, spatial) voxel coordinates} of every foreground class, at most MAX_FG_POINTS each."""
    points = {}
    for c in np.unique(label):
        if c <= 0:
            continue
        where = np.argwhere(label == c)
        if len(where) > MAX_FG_POINTS:
            where = where[rng.choice(len(where), MAX_FG_POINTS, replace=False)]
        points[int(c)] = where
    return points


def random_patch(image: np.ndarray, label: np.ndarray | None, patch, rng: np.random.Generator,
                 foreground: bool, points: dict | None = None):
    """A random crop of ``patch`` voxels from (image (*spatial, C), label (*spatial)).

    With ``foreground`` (and a label that has foreground), the crop is centred, as far as the borders allow, on a
    random voxel of a random foreground class (``points`` from ``foreground_points``, computed when None);
    otherwise its corner is uniform. Cases smaller than the patch are zero-padded first.
    Returns (image patch, label patch or None, whether it was centred on foreground).
    """
    patch = tuple(int(p) for p in patch)
    if len(patch) != image.ndim - 1:
        raise LDSegError(f"[Data] Patch = {', '.join(map(str, patch))}: the case has {image.ndim - 1} spatial axes")
    image, pads = pad_to(image, patch)
    if label is not None:
        label, _ = pad_to(label, patch)
    shape = image.shape[:-1]
    centred = False
    if foreground and label is not None:
        if points is None:
            points = foreground_points(label, rng)
        else:  # points were taken before padding
            offset = np.array([p[0] for p in pads])
            points = {c: p + offset for c, p in points.items()}
        if points:
            cls = list(points)[rng.integers(len(points))]
            centre = points[cls][rng.integers(len(points[cls]))]
            corner = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch, shape)]
            centred = True
    if not centred:
        corner = [int(rng.integers(0, n - p + 1)) for p, n in zip(patch, shape)]
    window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    return image[window], (None if label is None else label[window]), centred


def training_patch(image, label, patch, rng: np.random.Generator, fg_fraction: float, points=None):
    """One training crop: centred on foreground with probability ``fg_fraction``, else uniform (nnU-Net's
    oversampling). Returns (image patch, label patch, whether it was centred on foreground)."""
    return random_patch(image, label, patch, rng, rng.random() < fg_fraction, points)
