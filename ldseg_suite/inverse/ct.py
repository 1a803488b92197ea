"""Sparse-view CT: a parallel-beam projector as a sparse matrix, applied with ``tf.sparse``.

Each ray is sampled at half-pixel steps with bilinear interpolation, so A is exactly linear and its
adjoint is the transposed matrix (back-projection). Filtered back-projection from scikit-image is the
baseline (``fbp``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def projector_matrix(n: int, views: int = 18, detectors: int | None = None) -> tf.sparse.SparseTensor:
    """(views * detectors, n * n) matrix of line integrals through an n x n image, angles in [0, pi)."""
    detectors = detectors or int(np.ceil(np.sqrt(2) * n))
    angles = np.linspace(0, np.pi, views, endpoint=False)
    c = (n - 1) / 2
    offsets = np.arange(detectors) - (detectors - 1) / 2
    steps = np.arange(-np.sqrt(2) * n / 2, np.sqrt(2) * n / 2, 0.5)
    rows, cols, vals = [], [], []
    for v, theta in enumerate(angles):
        d = np.array([np.cos(theta), np.sin(theta)])       # ray direction
        p = np.array([-np.sin(theta), np.cos(theta)])      # detector axis
        for j, s in enumerate(offsets):
            pts = c + s * p[None] + steps[:, None] * d[None]     # (samples, 2) as (row, col)
            r0, c0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
            fr, fc = pts[:, 0] - r0, pts[:, 1] - c0
            for dr, dc, wgt in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc),
                                (1, 1, fr * fc)):
                rr, cc = r0 + dr, c0 + dc
                ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n) & (wgt > 0)
                rows.append(np.full(ok.sum(), v * detectors + j))
                cols.append(rr[ok] * n + cc[ok])
                vals.append(0.5 * wgt[ok])                  # step length 0.5 pixel
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    flat = rows.astype(np.int64) * n * n + cols
    uniq, inv = np.unique(flat, return_inverse=True)
    summed = np.bincount(inv, weights=vals).astype(np.float32)
    idx = np.stack([uniq // (n * n), uniq % (n * n)], 1)
    return tf.sparse.SparseTensor(idx, summed, (views * detectors, n * n))


class ParallelBeam:
    """A: (n, n, ...) images -> (views, detectors, ...) sinograms; A^T back-projects."""

    def __init__(self, n: int, views: int = 18, detectors: int | None = None):
        self.n, self.views = n, views
        self.matrix = projector_matrix(n, views, detectors)
        self.detectors = self.matrix.dense_shape[0] // views

    def forward(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        flat = tf.reshape(x, (self.n * self.n, -1))
        y = tf.sparse.sparse_dense_matmul(self.matrix, flat)
        return tf.reshape(y, (self.views, int(self.detectors)) + tuple(x.shape[2:]))

    def adjoint(self, y):
        y = tf.convert_to_tensor(y, tf.float32)
        flat = tf.reshape(y, (self.views * int(self.detectors), -1))
        x = tf.sparse.sparse_dense_matmul(self.matrix, flat, adjoint_a=True)
        return tf.reshape(x, (self.n, self.n) + tuple(y.shape[2:]))


def fbp(sinogram: np.ndarray, n: int) -> np.ndarray:
    """Filtered back-projection baseline (scikit-image ``iradon``, ramp filter) of one (views, detectors) sinogram."""
    from skimage.transform import iradon

    views = sinogram.shape[0]
    theta = np.degrees(np.linspace(0, np.pi, views, endpoint=False))
    return iradon(np.asarray(sinogram).T, theta=theta, output_size=n, filter_name="ramp", circle=False)
