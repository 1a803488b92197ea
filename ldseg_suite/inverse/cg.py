"""An approximate pseudo-inverse by conjugate gradients (CGLS) for any linear operator with an adjoint.

``cgls_pinv(op, iters)(r)`` returns d after ``iters`` CGLS iterations from d = 0 on min ||A d - r||^2: the
minimum-norm least-squares solution as iters grows (CGLS from zero stays in the range of A^T), a truncated
(regularised) one for few iterations. Used as the data-consistency step of samplers where A has no cheap
exact pseudo-inverse (sparse-view CT), as in the Decomposed Diffusion Sampler (Chung et al., ICLR 2024).
Written in TensorFlow ops (a Python loop of ``iters`` steps), so it runs inside a compiled sampling loop.
"""
from __future__ import annotations

import tensorflow as tf


def _dot(a, b):
    prod = a * tf.math.conj(b) if a.dtype.is_complex else a * b
    return tf.math.real(tf.reduce_sum(prod))


def cgls_pinv(op, iters: int):
    """r (measurement shape) -> d (image shape) ~ argmin ||A d - r|| by ``iters`` CGLS steps from d = 0."""
    if iters < 1:
        raise ValueError(f"iters = {iters}: expected >= 1")

    def pinv(r):
        r = tf.convert_to_tensor(r)
        s = op.adjoint(r)
        d, p = tf.zeros_like(s), s
        gamma = _dot(s, s)
        for _ in range(iters):
            q = tf.cast(op.forward(p), r.dtype)
            alpha = gamma / tf.maximum(_dot(q, q), 1e-30)
            d = d + tf.cast(alpha, d.dtype) * p
            r = r - tf.cast(alpha, r.dtype) * q
            s = op.adjoint(r)
            gamma_next = _dot(s, s)
            p = s + tf.cast(gamma_next / tf.maximum(gamma, 1e-30), s.dtype) * p
            gamma = gamma_next
        return d

    return pinv
