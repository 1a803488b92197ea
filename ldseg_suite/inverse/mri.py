"""Compressed-sensing MRI: per-slice 2D Fourier sampling with a variable-density Poisson-disc mask.

A(x) = M * F(x) for each slice (F the orthonormal 2D FFT over the first two axes, M a 0/1 k-space mask);
A^T(y) = Re(F^H(M * y)), the adjoint for the real inner product <u, v> = Re(sum(u * conj(v))).
The zero-filled reconstruction A^T(y) is the baseline.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def poisson_disc_mask(shape, acceleration: float = 8.0, seed: int = 0, calib: int = 8) -> np.ndarray:
    """A variable-density Poisson-disc k-space mask (centred, DC in the middle) keeping about 1/acceleration.

    Dart throwing in a fixed seeded order; the exclusion radius grows with the distance from the k-space
    centre, and its scale is found by bisection to hit the target count; a ``calib`` x ``calib`` centre
    block is always sampled.
    """
    h, w = shape
    target = int(round(h * w / acceleration))
    yy, xx = np.mgrid[:h, :w]
    dist = np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2)
    order = np.random.default_rng(seed).permutation(h * w)
    centre = np.zeros((h, w), bool)
    centre[h // 2 - calib // 2:h // 2 + calib // 2, w // 2 - calib // 2:w // 2 + calib // 2] = True

    def throw(scale):
        mask = centre.copy()
        for idx in order:
            y, x = divmod(int(idx), w)
            if mask[y, x]:
                continue
            r = scale * (0.3 + dist[y, x])
            ri = int(np.ceil(r))
            y0, y1, x0, x1 = max(0, y - ri), min(h, y + ri + 1), max(0, x - ri), min(w, x + ri + 1)
            near = mask[y0:y1, x0:x1] & ((yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2 < r * r)
            if not near.any():
                mask[y, x] = True
        return mask

    lo, hi = 0.0, float(max(h, w))
    best = throw(lo)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        mask = throw(mid)
        if mask.sum() > target:
            lo = mid
        else:
            hi, best = mid, mask
    return best


class MaskedFourier:
    """Per-slice 2D FFT sampling. Images are real (H, W, ...); measurements complex (H, W, ...)."""

    def __init__(self, mask):
        self.mask = tf.constant(np.fft.ifftshift(np.asarray(mask, bool)), tf.complex64)  # DC at [0, 0]

    @staticmethod
    def _to_last(x):  # tf.signal.fft2d works on the two innermost axes
        rank = len(x.shape)
        return tf.transpose(x, list(range(2, rank)) + [0, 1])

    @staticmethod
    def _from_last(x):
        rank = len(x.shape)
        return tf.transpose(x, [rank - 2, rank - 1] + list(range(rank - 2)))

    def _scale(self, x):
        return tf.cast(tf.sqrt(tf.cast(x.shape[0] * x.shape[1], tf.float32)), tf.complex64)

    def forward(self, x):
        x = tf.cast(tf.convert_to_tensor(x), tf.complex64)
        k = self._from_last(tf.signal.fft2d(self._to_last(x))) / self._scale(x)
        return self._mask_like(k) * k

    def adjoint(self, y):
        y = tf.convert_to_tensor(y, tf.complex64) * self._mask_like(tf.convert_to_tensor(y, tf.complex64))
        img = self._from_last(tf.signal.ifft2d(self._to_last(y))) * self._scale(y)
        return tf.math.real(img)

    def _mask_like(self, k):
        extra = len(k.shape) - 2
        return tf.reshape(self.mask, tuple(self.mask.shape) + (1,) * extra)
