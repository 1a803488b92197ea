"""Deterministic 3D vertebra-like binary shapes (for thick-slice shape reconstruction).

A vertebra here is a cylindrical body, a neural arch (a half ring behind the body around the canal), a
spinous process pointing back and two transverse processes pointing sideways, with random sizes and a
small random rotation. Axes are (x: left-right, y: anterior-posterior, z: cranio-caudal).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def make_vertebra(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    n = size
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) - n / 2 + 0.5,) * 3, indexing="ij")
    s = n / 64.0
    body_r = rng.uniform(9, 12) * s
    body_h = rng.uniform(8, 11) * s
    body_y = rng.uniform(-8, -5) * s  # anterior
    body = ((x ** 2 + (y - body_y) ** 2) <= body_r ** 2) & (np.abs(z) <= body_h)
    canal_r = rng.uniform(4.5, 6.5) * s
    canal_y = body_y + body_r + canal_r + 0.5 * s
    ring = np.sqrt(x ** 2 + (y - canal_y) ** 2)
    arch_w = rng.uniform(2.5, 4.0) * s
    arch = (ring >= canal_r) & (ring <= canal_r + arch_w) & (y >= body_y + body_r * 0.6) & (np.abs(z) <= body_h * 0.55)
    spine_len = rng.uniform(9, 14) * s
    spine_top = canal_y + canal_r + arch_w * 0.5
    spine = (np.abs(x) <= 1.6 * s) & (y >= spine_top) & (y <= spine_top + spine_len) & \
        (np.abs(z + (y - spine_top) * rng.uniform(0.2, 0.5)) <= 3.0 * s)
    trans_len = rng.uniform(10, 15) * s
    trans = (np.abs(x) >= canal_r) & (np.abs(x) <= canal_r + trans_len) & \
        (np.abs(y - canal_y) <= 1.8 * s) & (np.abs(z) <= 2.2 * s)
    shape = body | arch | spine | trans
    angles = rng.uniform(-12, 12, 3)
    for deg, axes in zip(angles, ((0, 1), (0, 2), (1, 2))):
        shape = ndimage.rotate(shape.astype(np.float32), deg, axes=axes, reshape=False, order=1) > 0.5
    shift = rng.uniform(-2, 2, 3) * s
    shape = ndimage.shift(shape.astype(np.float32), shift, order=1) > 0.5
    return shape.astype(np.uint8)


def make_vertebrae(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """``n`` binary vertebra masks of ``size``^3, the same for the same seed."""
    return [make_vertebra(np.random.default_rng([seed, 3000 + i]), size) for i in range(n)]
