"""A 2D VE-SDE score model for TPDM (Lee et al., ICCV 2023): one of the two perpendicular slice priors.

The network is the project's small time-conditioned UNet used as a denoiser with the preconditioning of
Karras et al. (2022): D(x, sigma) = c_skip x + c_out F(c_in x, log sigma), and the score is
(D(x, sigma) - x) / sigma^2. Training is denoising score matching over sigma log-uniform in
[sigma_min, sigma_max]; with this preconditioning the loss ||F - (x0 - c_skip x) / c_out||^2 is DSM with the
weight 1 / c_out(sigma)^2. The model knows nothing about planes: it scores batches of 2D slices
(B, H, W, 1); the runner decides which plane the slices come from.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from ldseg_suite.nets.layers import PKG
from ldseg_suite.nets.unet import UNet


@keras.saving.register_keras_serializable(PKG)
class ScoreModel(keras.Model):
    def __init__(self, size=(64, 64), base_channels: int = 32, channel_mult=(1, 2, 2), res_blocks: int = 1,
                 attention: bool = False, sigma_min: float = 0.01, sigma_max: float = 20.0,
                 sigma_data: float = 0.3, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(size=list(size), base_channels=base_channels, channel_mult=list(channel_mult),
                       res_blocks=res_blocks, attention=attention, sigma_min=sigma_min, sigma_max=sigma_max,
                       sigma_data=sigma_data, seed=seed)
        self.unet = UNet(1, 2, base_channels, tuple(channel_mult), res_blocks, attention)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build(self, input_shape):
        # the variables do not depend on the slice size (convolutions only): create them on the smallest input
        # the UNet takes (2 pixels at the coarsest level), which is much quicker than a full-size pass
        side = 2 ** len(self.hp["channel_mult"])
        self.denoise(ops.zeros((1, side, side, 1)), ops.ones((1,)))
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **self.hp}

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _coefficients(self, sigma):
        sd = self.hp["sigma_data"]
        s = ops.reshape(sigma, (-1, 1, 1, 1))
        c_skip = sd ** 2 / (s ** 2 + sd ** 2)
        c_out = s * sd / ops.sqrt(s ** 2 + sd ** 2)
        c_in = 1.0 / ops.sqrt(s ** 2 + sd ** 2)
        return c_skip, c_out, c_in

    def _raw(self, x, sigma, training=False):
        """F(c_in x, c_noise) with c_noise = 250 log(sigma) for the sinusoidal embedding."""
        sigma = ops.broadcast_to(ops.reshape(ops.cast(sigma, "float32"), (-1,)), (ops.shape(x)[0],))
        _, _, c_in = self._coefficients(sigma)
        return self.unet([x * c_in, 250.0 * ops.log(sigma)], training=training), sigma

    def denoise(self, x, sigma, training=False):
        """D(x, sigma): the estimate of the clean slices."""
        raw, sigma = self._raw(x, sigma, training)
        c_skip, c_out, _ = self._coefficients(sigma)
        return c_skip * x + c_out * raw

    def score(self, x, sigma):
        """grad_x log p_sigma(x) ~ (D(x, sigma) - x) / sigma^2, for slices (B, H, W, 1) and sigma scalar or (B,)."""
        s = ops.reshape(ops.broadcast_to(ops.reshape(ops.cast(sigma, "float32"), (-1,)), (ops.shape(x)[0],)),
                        (-1, 1, 1, 1))
        return (self.denoise(x, sigma) - x) / s ** 2

    def call(self, inputs):
        x, sigma = inputs
        return self.score(x, sigma)

    def sample_sigmas(self, n):
        lo, hi = math.log(self.hp["sigma_min"]), math.log(self.hp["sigma_max"])
        u = keras.random.uniform((n,), seed=self.seed_generator)
        return ops.exp(lo + (hi - lo) * u)

    def dsm_loss(self, x0, sigma, z, training=False):
        """Preconditioned denoising score matching loss of clean slices x0 at noise levels sigma with noise z."""
        s = ops.reshape(sigma, (-1, 1, 1, 1))
        x = x0 + s * z
        raw, _ = self._raw(x, sigma, training)
        c_skip, c_out, _ = self._coefficients(sigma)
        target = (x0 - c_skip * x) / c_out
        return ops.mean((raw - target) ** 2)

    def train_step(self, data):
        x0 = keras.utils.unpack_x_y_sample_weight(data)[0]
        n = tf.shape(x0)[0]
        sigma = self.sample_sigmas(n)
        z = keras.random.normal(tf.shape(x0), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            loss = self.dsm_loss(x0, sigma, z, training=True)
        grads = tape.gradient(self.optimizer.scale_loss(loss), self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}
