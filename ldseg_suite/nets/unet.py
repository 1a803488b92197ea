"""Rank-agnostic UNet denoiser and conv encoder / decoder (``spatial_dims`` = 2 or 3)."""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from ldseg_suite.nets.layers import PKG, Attention, GroupNorm, ResBlock, TimestepEmbedding, Upsample, _groups, conv


@keras.saving.register_keras_serializable(PKG)
class UNet(layers.Layer):
    """Time-conditioned UNet: ``unet([x, t]) -> same spatial size, out_channels``.

    One ResBlock stack per level, strided-conv downsampling, nearest+conv upsampling, skip concatenation;
    global attention only in the middle (coarsest) block, so memory stays linear in the input size at
    every finer level. With ``semantic=True`` the call takes ``[x, t, z]`` and every ResBlock also scales its
    features by a projection of the semantic code z (DiffAE). With ``time_conditioned=False`` it is a plain
    segmentation UNet: ``unet(x)``, no timestep embedding (the deterministic baseline).
    """

    def __init__(self, out_channels: int, spatial_dims: int = 2, base_channels: int = 32,
                 channel_mult=(1, 2), res_blocks: int = 1, attention: bool = True, semantic: bool = False,
                 time_conditioned: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.semantic, self.time_conditioned = semantic, time_conditioned
        tc = time_conditioned
        self.out_channels, self.spatial_dims = out_channels, spatial_dims
        self.base_channels, self.channel_mult = base_channels, tuple(channel_mult)
        self.res_blocks, self.attention = res_blocks, attention
        sd, base = spatial_dims, base_channels
        self.time_embed = TimestepEmbedding(base) if tc else None
        self.stem = conv(sd, base)
        self.down_blocks, self.downsamplers = [], []
        for i, m in enumerate(self.channel_mult):
            self.down_blocks.append([ResBlock(base * m, sd, tc, semantic=semantic) for _ in range(res_blocks)])
            if i < len(self.channel_mult) - 1:
                self.downsamplers.append(conv(sd, base * m, strides=2))
        mid = base * self.channel_mult[-1]
        self.mid1 = ResBlock(mid, sd, tc, semantic=semantic)
        self.mid_attn = Attention() if attention else None
        self.mid2 = ResBlock(mid, sd, tc, semantic=semantic)
        self.up_blocks, self.upsamplers = [], []
        for i, m in reversed(list(enumerate(self.channel_mult))):
            self.up_blocks.append([ResBlock(base * m, sd, tc, semantic=semantic) for _ in range(res_blocks)])
            if i > 0:
                self.upsamplers.append(Upsample(base * self.channel_mult[i - 1], sd))
        self.out_norm = GroupNorm(_groups(base * self.channel_mult[0]))
        self.out_conv = conv(sd, out_channels, kernel_initializer="zeros")

    def call(self, inputs, training=False):
        if self.time_conditioned:
            x, t, *z = inputs
            emb = self.time_embed(t)
            cond = [emb] + z[:1] if self.semantic else [emb]
        else:
            x, cond = inputs, []

        def block_call(block, h):
            return block([h, *cond], training=training) if cond else block(h, training=training)

        h = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block_call(block, h)
            skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
        h = block_call(self.mid1, h)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = block_call(self.mid2, h)
        for j, blocks in enumerate(self.up_blocks):
            h = ops.concatenate([h, skips.pop()], axis=-1)
            for block in blocks:
                h = block_call(block, h)
            if j < len(self.upsamplers):
                h = self.upsamplers[j](h)
        return self.out_conv(self.out_norm.norm_silu(h))

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "spatial_dims": self.spatial_dims,
                "base_channels": self.base_channels, "channel_mult": list(self.channel_mult),
                "res_blocks": self.res_blocks, "attention": self.attention, "semantic": self.semantic,
                "time_conditioned": self.time_conditioned}


@keras.saving.register_keras_serializable(PKG)
class Encoder(layers.Layer):
    """Conv encoder that shrinks the input by ``downsample`` (a power of two) to ``out_channels``.

    ``activation='tanh'`` bounds the output to [-1, 1] (used for the label latent, so the diffusion
    works on a latent of known scale).
    """

    def __init__(self, out_channels: int, downsample: int = 4, spatial_dims: int = 2, base_channels: int = 32,
                 activation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.out_channels, self.downsample, self.spatial_dims = out_channels, downsample, spatial_dims
        self.base_channels, self.activation = base_channels, activation
        sd, levels = spatial_dims, int(round(math.log2(downsample)))
        self.stem = conv(sd, base_channels)
        self.stages = []
        ch = base_channels
        for _ in range(levels):
            self.stages.append(ResBlock(ch, sd, conditioned=False))
            ch = min(ch * 2, 2 * base_channels)
            self.stages.append(conv(sd, ch, strides=2))
        self.final_block = ResBlock(ch, sd, conditioned=False)
        self.out_norm = GroupNorm(_groups(ch))
        self.out_conv = conv(sd, out_channels, kernel=1)

    def call(self, x, training=False):
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h, training=training) if isinstance(stage, ResBlock) else stage(h)
        h = self.final_block(h, training=training)
        h = self.out_conv(self.out_norm.norm_silu(h))
        return ops.tanh(h) if self.activation == "tanh" else h

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "downsample": self.downsample,
                "spatial_dims": self.spatial_dims, "base_channels": self.base_channels,
                "activation": self.activation}


@keras.saving.register_keras_serializable(PKG)
class Decoder(layers.Layer):
    """Conv decoder that grows a latent by ``upsample`` to ``out_channels`` logits."""

    def __init__(self, out_channels: int, upsample: int = 4, spatial_dims: int = 2, base_channels: int = 32,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_channels, self.upsample, self.spatial_dims = out_channels, upsample, spatial_dims
        self.base_channels = base_channels
        sd, levels = spatial_dims, int(round(math.log2(upsample)))
        ch = min(base_channels * 2 ** levels, 2 * base_channels)
        self.stem = conv(sd, ch)
        self.stages = [ResBlock(ch, sd, conditioned=False)]
        for _ in range(levels):
            ch = max(ch // 2, base_channels)
            self.stages.append(Upsample(ch, sd))
            self.stages.append(ResBlock(ch, sd, conditioned=False))
        self.out_norm = GroupNorm(_groups(ch))
        self.out_conv = conv(sd, out_channels, kernel=1)

    def call(self, z, training=False):
        h = self.stem(z)
        for stage in self.stages:
            h = stage(h, training=training) if isinstance(stage, ResBlock) else stage(h)
        return self.out_conv(self.out_norm.norm_silu(h))

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "upsample": self.upsample,
                "spatial_dims": self.spatial_dims, "base_channels": self.base_channels}
