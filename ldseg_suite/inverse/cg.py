"""An approximate pseudo-inverse by conjugate gradients (CGLS) for any linear operator with an adjoint.

``cgls_pinv(op, iters)(r)`` returns d after ``iters`` CGLS iterations from d = 0 on min ||A d - r||^2: the
minimum-norm least-squares solution as iters grows (CGLS from zero stays in the range of A^T), a truncated
(regularised) one for few iterations. With ``damp`` = mu > 0 (a number or a scalar tensor, so it can change
from step to step inside a compiled loop) it solves the Tikhonov problem min ||A d - r||^2 + mu ||d||^2, i.e.
d = A^T (A A^T + mu I)^{-1} r: the data-consistency step for noisy measurements (mu = noise variance / prior
variance). Used as the data-consistency step of samplers where A has no cheap exact pseudo-inverse
(sparse-view CT), as in the Decomposed Diffusion Sampler (Chung et al., ICLR 2024). Written in TensorFlow ops
(a Python loop of ``iters`` steps), so it runs inside a compiled sampling loop.
"""
from __future__ import annotations

import tensorflow as tf


def _dot(a, b):
    prod = a * tf.math.conj(b) if a.dtype.is_complex else a * b
    return tf.math.real(tf.reduce_sum(prod))


def cgls_pinv(op, iters: int):
    """(r, damp=0) -> d ~ argmin ||A d - r||^2 + damp ||d||^2 by ``iters`` CGLS steps from d = 0."""
    if iters < 1:
        raise ValueError(f"iters = {iters}: expected >= 1")

    def pinv(r, damp=0.0):
        r = tf.convert_to_tensor(r)
        damp = tf.cast(damp, tf.float32)
        s = op.adjoint(r)
        d, p = tf.zeros_like(s), s
        gamma = _dot(s, s)
        for _ in range(iters):
            q = tf.cast(op.forward(p), r.dtype)
            alpha = gamma / tf.maximum(_dot(q, q) + damp * _dot(p, p), 1e-30)
            d = d + tf.cast(alpha, d.dtype) * p
            r = r - tf.cast(alpha, r.dtype) * q
            s = op.adjoint(r) - damp * d
            gamma_next = _dot(s, s)
            p = s + tf.cast(gamma_next / tf.maximum(gamma, 1e-30), s.dtype) * p
            gamma = gamma_next
        return d

    return pinv
