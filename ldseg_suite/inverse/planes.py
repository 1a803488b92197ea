"""Differentiable sampling of oblique planes from a volume (long-axis views for MGDCR).

A plane is an origin and two orthonormal in-plane directions, all in voxel coordinates (i, j, k) of a
volume (I, J, K[, C]); the plane's pixels are ``origin + r * u + c * v`` for r, c on a grid of ``shape``
with unit spacing. Values come from trilinear interpolation with zeros outside, written in TensorFlow ops,
so gradients flow to the volume (and to whatever produced it).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def plane_coordinates(origin, u, v, shape) -> np.ndarray:
    """(h, w, 3) voxel coordinates of the plane's pixels, centred on ``origin``."""
    h, w = shape
    r = np.arange(h, dtype=np.float32) - (h - 1) / 2
    c = np.arange(w, dtype=np.float32) - (w - 1) / 2
    u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    return (np.asarray(origin, np.float32)[None, None] + r[:, None, None] * u[None, None]
            + c[None, :, None] * v[None, None])


def trilinear(volume, coords):
    """Sample ``volume`` (I, J, K[, C]) at float voxel coordinates (..., 3); zero outside."""
    volume = tf.convert_to_tensor(volume, tf.float32)
    squeeze = len(volume.shape) == 3
    if squeeze:
        volume = volume[..., None]
    dims = tf.shape(volume)[:3]
    coords = tf.convert_to_tensor(coords, tf.float32)
    base = tf.floor(coords)
    frac = coords - base
    base = tf.cast(base, tf.int32)
    out = 0.0
    for corner in np.ndindex(2, 2, 2):
        idx = base + tf.constant(corner, tf.int32)
        inside = tf.reduce_all((idx >= 0) & (idx < dims), axis=-1)
        w = tf.reduce_prod(tf.where(tf.constant(np.array(corner, bool)), frac, 1.0 - frac), axis=-1)
        vals = tf.gather_nd(volume, tf.clip_by_value(idx, 0, dims - 1))
        out = out + vals * (w * tf.cast(inside, tf.float32))[..., None]
    return out[..., 0] if squeeze else out


def sample_plane(volume, origin, u, v, shape):
    """The (h, w[, C]) plane of ``volume`` through ``origin`` spanned by ``u`` and ``v``."""
    return trilinear(volume, plane_coordinates(origin, u, v, shape))
