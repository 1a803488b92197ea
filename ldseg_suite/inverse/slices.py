"""Thick-slice acquisition along z: average groups of ``factor`` slices, and its adjoint.

Used for MR z-axis super-resolution (TPDM) and for simulating thick-slice MRI inputs (LSD-EBM). Arrays are
(..., D) with z last among the spatial axes handled here: the operators act on axis ``axis`` (default -1).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


class SliceAverage:
    """A: (..., D) -> (..., D // factor), the mean of each group of ``factor`` consecutive slices."""

    def __init__(self, factor: int = 4, axis: int = -1):
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor, self.axis = int(factor), axis

    def _move(self, x):
        return tf.experimental.numpy.moveaxis(x, self.axis, -1)

    def _back(self, x):
        return tf.experimental.numpy.moveaxis(x, -1, self.axis)

    def forward(self, x):
        x = self._move(tf.convert_to_tensor(x, tf.float32))
        d = x.shape[-1]
        if d % self.factor:
            raise ValueError(f"depth {d} is not a multiple of factor {self.factor}")
        grouped = tf.reshape(x, tf.concat([tf.shape(x)[:-1], [d // self.factor, self.factor]], 0))
        return self._back(tf.reduce_mean(grouped, axis=-1))

    def adjoint(self, y):
        """A^T: spread each thick slice back over its ``factor`` slices, divided by ``factor``."""
        y = self._move(tf.convert_to_tensor(y, tf.float32))
        return self._back(tf.repeat(y, self.factor, axis=-1) / self.factor)

    def upsample(self, y):
        """Nearest upsampling back to full depth (= factor * A^T y): the naive thick-slice image."""
        return self.adjoint(y) * self.factor


def simulate_thick_slices(volume: np.ndarray, factor: int = 4, axis: int = -1) -> np.ndarray:
    """A thick-slice acquisition resampled back to the full grid (each group replaced by its mean)."""
    op = SliceAverage(factor, axis)
    return np.asarray(op.upsample(op.forward(volume)))
