"""Rank-agnostic building blocks: one ``spatial_dims`` argument (2 or 3) picks Conv2D or Conv3D.

Every layer is registered as serialisable and has ``get_config``, so models save as ``.keras`` and load
with ``safe_mode=True``.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

PKG = "ldseg_suite"


def conv(spatial_dims: int, filters: int, kernel: int = 3, strides: int = 1, name=None, **kwargs):
    cls = {2: layers.Conv2D, 3: layers.Conv3D}[spatial_dims]
    return cls(filters, kernel, strides=strides, padding="same", name=name, **kwargs)


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


@keras.saving.register_keras_serializable(PKG)
class GroupNorm(layers.GroupNormalization):
    """Keras' GroupNormalization (same weights, same result to float32 rounding), faster on CPU for large inputs
    (a 4x32^3x24 volume with SiLU: 45-78 ms against 140-314 ms, docs/performance.md).

    Keras reshapes to (batch, ..., groups, channels / groups) and reduces over the spatial axes and the
    channels of a group at once, then applies mean, variance, gamma and beta in several full-size passes.
    Here the moments are taken per channel (a reduction over the spatial axes only), combined per group by the
    law of total variance on (batch, channels) arrays, and folded with gamma and beta into one per-channel
    ``x * a + b``: :meth:`affine` returns (a, b), so a caller can fold more per-channel terms (ResBlock's
    timestep scale and shift) into the same pass. Statistics in float32 whatever the precision policy.
    """

    def affine(self, x):
        """Per-(sample, channel) scale and shift, shape (batch, channels): ``norm(x) = x * a + b``."""
        if self.axis not in (-1, len(x.shape) - 1) or not (self.scale and self.center):
            raise ValueError("GroupNorm.affine needs channels last with scale and center")
        if not self.built:  # called as a method (norm_silu), not through __call__
            self.build(tuple(x.shape))
        x = ops.cast(x, "float32")
        c, g = x.shape[-1], self.groups
        mean_c, var_c = ops.moments(x, axes=tuple(range(1, len(x.shape) - 1)))
        mean_c, var_c = ops.reshape(mean_c, (-1, g, c // g)), ops.reshape(var_c, (-1, g, c // g))
        mean = ops.mean(mean_c, axis=-1, keepdims=True)
        var = ops.mean(var_c + ops.square(mean_c - mean), axis=-1, keepdims=True)
        a = ops.rsqrt(var + self.epsilon) * ops.reshape(ops.cast(self.gamma, "float32"), (g, c // g))
        b = ops.reshape(ops.cast(self.beta, "float32"), (g, c // g)) - mean * a
        return ops.reshape(a, (-1, c)), ops.reshape(b, (-1, c))

    def call(self, inputs):
        if self.axis not in (-1, len(inputs.shape) - 1) or not (self.scale and self.center):
            return super().call(inputs)
        a, b = self.affine(inputs)
        return ops.cast(apply_affine(inputs, a, b), self.compute_dtype)

    def norm_silu(self, x):
        """silu(norm(x)) (the layer called as a method: callers use it where the norm feeds a SiLU)."""
        a, b = self.affine(x)
        return ops.cast(apply_affine(x, a, b, act=True), self.compute_dtype)


def apply_affine(x, a, b, act: bool = False):
    """x * a + b in float32 with per-(sample, channel) a, b of shape (batch, channels); SiLU after with act."""
    shape = (-1,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],)
    y = ops.cast(x, "float32") * ops.reshape(a, shape) + ops.reshape(b, shape)
    return ops.silu(y) if act else y


@keras.saving.register_keras_serializable(PKG)
class TimestepEmbedding(layers.Layer):
    """Sinusoidal embedding of integer (or real) timesteps followed by a two-layer MLP."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.dense1 = layers.Dense(dim * 4, activation="silu")
        self.dense2 = layers.Dense(dim * 4)

    def build(self, input_shape):
        self.dense1.build((None, self.dim))
        self.dense2.build((None, self.dim * 4))
        super().build(input_shape)

    def call(self, t):
        half = self.dim // 2
        freqs = ops.exp(-math.log(10000.0) * ops.arange(half, dtype="float32") / half)
        args = ops.cast(ops.reshape(t, (-1, 1)), "float32") * ops.reshape(freqs, (1, -1))
        emb = ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)
        return self.dense2(self.dense1(emb))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


@keras.saving.register_keras_serializable(PKG)
class ResBlock(layers.Layer):
    """GroupNorm-SiLU-Conv twice with a residual; optional scale-shift conditioning on an embedding.

    ``semantic=True`` (DiffAE's adaptive group norm) takes a third input, a semantic code z, and multiplies
    the normalised, time-modulated features by ``1 + Dense(z)``: inputs are then ``[x, emb, z]``.
    """

    def __init__(self, filters: int, spatial_dims: int = 2, conditioned: bool = True, dropout: float = 0.0,
                 semantic: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.spatial_dims, self.conditioned, self.dropout = filters, spatial_dims, conditioned, dropout
        self.semantic = semantic
        self.semantic_proj = layers.Dense(filters, kernel_initializer="zeros") if semantic else None
        self.norm1 = None  # needs the input channels: made in build()
        self.conv1 = conv(spatial_dims, filters)
        self.norm2 = GroupNorm(_groups(filters))
        self.conv2 = conv(spatial_dims, filters)
        self.drop = layers.Dropout(dropout)
        self.emb_proj = layers.Dense(2 * filters) if conditioned else None
        self.skip = None

    def build(self, input_shape):
        x_shape = input_shape[0] if self.conditioned else input_shape
        in_ch = x_shape[-1]
        self.norm1 = GroupNorm(_groups(in_ch))
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        out_shape = tuple(x_shape[:-1]) + (self.filters,)
        self.norm2.build(out_shape)
        self.conv2.build(out_shape)
        if self.conditioned:
            self.emb_proj.build(input_shape[1])
        if self.semantic:
            self.semantic_proj.build(input_shape[2])
        if in_ch != self.filters:
            self.skip = conv(self.spatial_dims, self.filters, kernel=1)
            self.skip.build(x_shape)
        super().build(input_shape)

    def call(self, inputs, training=False):
        x, emb, z = (list(inputs) + [None])[:3] if self.conditioned else (inputs, None, None)
        h = self.conv1(self.norm1.norm_silu(x))
        # norm2, the timestep scale-shift and the semantic scale in one per-channel x * a + b
        a, b = self.norm2.affine(h)
        if self.conditioned:
            scale, shift = ops.split(ops.cast(self.emb_proj(ops.silu(emb)), "float32"), 2, axis=-1)
            a, b = a * (1.0 + scale), b * (1.0 + scale) + shift
        if self.semantic:
            m = 1.0 + ops.cast(self.semantic_proj(z), "float32")
            a, b = a * m, b * m
        h = ops.cast(apply_affine(h, a, b, act=True), self.compute_dtype)
        h = self.conv2(self.drop(h, training=training))
        return h + (self.skip(x) if self.skip is not None else x)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "spatial_dims": self.spatial_dims,
                "conditioned": self.conditioned, "dropout": self.dropout, "semantic": self.semantic}


@keras.saving.register_keras_serializable(PKG)
class Attention(layers.Layer):
    """Global multi-head self-attention over all positions, with a residual (use at coarse levels only)."""

    def __init__(self, heads: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.norm = None
        self.mha = None

    def build(self, input_shape):
        ch = input_shape[-1]
        self.norm = GroupNorm(_groups(ch))
        self.norm.build(input_shape)
        heads = max(1, min(self.heads, ch // 8))
        self.mha = layers.MultiHeadAttention(heads, key_dim=ch // heads)
        seq = (input_shape[0], None, ch)
        self.mha.build(seq, seq)
        super().build(input_shape)

    def call(self, x):
        shape = ops.shape(x)
        seq = ops.reshape(self.norm(x), (shape[0], -1, shape[-1]))
        out = self.mha(seq, seq)
        return x + ops.reshape(out, shape)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


@keras.saving.register_keras_serializable(PKG)
class Upsample(layers.Layer):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, filters: int, spatial_dims: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.spatial_dims = filters, spatial_dims
        self.up = {2: layers.UpSampling2D, 3: layers.UpSampling3D}[spatial_dims](2)
        self.conv = conv(spatial_dims, filters)

    def build(self, input_shape):
        up_shape = tuple(input_shape[:1]) + tuple(None if s is None else 2 * s for s in input_shape[1:-1]) + (
            input_shape[-1],)
        self.conv.build(up_shape)
        super().build(input_shape)

    def call(self, x):
        return self.conv(self.up(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "spatial_dims": self.spatial_dims}
