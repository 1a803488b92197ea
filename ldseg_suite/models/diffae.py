"""Diffusion autoencoder (DiffAE, Preechakul et al., CVPR 2022) on 2D slices.

A semantic encoder maps x0 to z_sem; the DDIM UNet (``models/ddim.py``) is conditioned on t by scale-shift
group norm and on z_sem by a multiplicative scale, and both are trained together on the noise MSE. Its
stochastic encoder is DDIM inversion conditioned on z_sem (x0 -> x_T); ``decode(z_sem, x_T)`` runs DDIM back.
Images are in [-1, 1], shape (batch, H, W, channels).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from ldseg_suite.models.ddim import DDIM
from ldseg_suite.nets.layers import PKG
from ldseg_suite.nets.unet import Encoder


@keras.saving.register_keras_serializable(PKG)
class SemanticEncoder(layers.Layer):
    """Conv encoder, global average pooling and a linear map to the semantic code z_sem."""

    def __init__(self, dim: int, base_channels: int = 16, downsample: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.base_channels, self.downsample = dim, base_channels, downsample
        self.features = Encoder(4 * base_channels, downsample, 2, base_channels)
        self.pool = layers.GlobalAveragePooling2D()
        self.out = layers.Dense(dim)

    def call(self, x, training=False):
        return self.out(self.pool(ops.silu(self.features(x, training=training))))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "base_channels": self.base_channels,
                "downsample": self.downsample}

@keras.saving.register_keras_serializable(PKG)
class DiffAE(DDIM):
    """Diffusion autoencoder: DDIM conditioned on a learnt semantic code z_sem of the clean image."""

    def __init__(self, semantic_dim: int = 64, **kwargs):
        self.semantic_dim = int(semantic_dim)
        super().__init__(**kwargs)
        self.hp["semantic_dim"] = self.semantic_dim
        self.encoder = SemanticEncoder(self.semantic_dim, self.hp["base_channels"], name="semantic_encoder")

    def semantic(self, x0, training=False):
        return ops.cast(self.encoder(x0, training=training), "float32")
