"""Compressed-sensing MRI: per-slice 2D Fourier sampling with a variable-density Poisson-disc mask.

A(x) = M * F(x) for each slice (F the orthonormal 2D FFT over the first two axes, M a 0/1 k-space mask);
A^T(y) = Re(F^H(M * y)), the adjoint for the real inner product <u, v> = Re(sum(u * conj(v))).
The zero-filled reconstruction A^T(y) is the baseline.

For real images A^T A is diagonal in k-space with eigenvalue (M(k) + M(-k)) / 2: 1 where both k and -k are
sampled, 1/2 where only one of them is (a real image's spectrum is Hermitian, so one sample of the pair fixes
half the information), so A^T is not the pseudo-inverse for a mask that is not point-symmetric (a Poisson-disc
mask); :meth:`MaskedFourier.pinv` is (optionally damped).
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
        m = np.fft.ifftshift(np.asarray(mask, bool)).astype(np.float32)  # DC at [0, 0]
        self.mask = tf.constant(m, tf.complex64)
        mirrored = np.roll(np.flip(m, (0, 1)), 1, (0, 1))  # M(-k)
        self.eig = tf.constant(m * (m + mirrored) / 2, tf.float32)  # eigenvalue of A^T A on the sampled k

    def pinv(self, y, damp=0.0):
        """(A^T A + damp I)^+ A^T y for real images: A^T of y weighted by 1 / (eigenvalue + damp) per sample."""
        eig = self.eig
        w = tf.where(eig > 0, 1.0 / (eig + tf.cast(damp, tf.float32)), 0.0)
        w = tf.reshape(tf.cast(w, tf.complex64), tuple(w.shape) + (1,) * (len(y.shape) - 2))
        return self.adjoint(tf.convert_to_tensor(y, tf.complex64) * w)

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
