"""The DDIM baseline: a noise- or v-prediction UNet on 2D images (Ho et al. 2020; v: Salimans & Ho 2022) sampled
with DDIM (Song et al. 2021).

``encode`` is DDIM inversion (x0 -> x_T, one compiled loop) and ``decode`` runs DDIM back; ``DiffAE``
(``models/diffae.py``) subclasses it with a semantic code. Images are in [-1, 1], shape (batch, H, W, channels).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from ldseg_suite.diffusion.samplers import DiffusionSampler
from ldseg_suite.diffusion.schedules import alphas_cumprod, betas
from ldseg_suite.nets.layers import PKG
from ldseg_suite.nets.unet import UNet


@keras.saving.register_keras_serializable(PKG)
class DDIM(keras.Model):
    """Noise-prediction diffusion model on 2D images; ``semantic_dim > 0`` makes it a DiffAE (subclass)."""

    semantic_dim = 0

    def __init__(self, channels: int = 1, base_channels: int = 16, channel_mult=(1, 2, 4), attention: bool = True,
                 schedule: str = "linear", beta_0: float = 1e-4, beta_T: float = 0.02, timesteps: int = 1000,
                 seed: int = 0, prediction: str = "eps", **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(channels=channels, base_channels=base_channels, channel_mult=list(channel_mult),
                       attention=attention, schedule=schedule, beta_0=beta_0, beta_T=beta_T, timesteps=timesteps,
                       seed=seed, prediction=prediction)
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction = {prediction!r}: expected eps or v")
        self.unet = UNet(channels, 2, base_channels, channel_mult, attention=attention,
                         semantic=self.semantic_dim > 0, name="unet")
        self.alphas_cumprod = alphas_cumprod(betas(schedule, timesteps, beta_0, beta_T))
        self._acp = tf.constant(self.alphas_cumprod)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._samplers = {}

    def get_config(self):
        return {**super().get_config(), **self.hp}

    @property
    def metrics(self):
        return [self.loss_tracker]

    def build(self, input_shape):
        x = ops.zeros((1,) + tuple(input_shape[1:]))
        self.eps(x, self.semantic(x), ops.zeros((1,), "int32"))
        super().build(input_shape)

    def call(self, x, training=False):
        return self.semantic(x, training=training)

    # -- the network -------------------------------------------------------------------------------------
    def semantic(self, x0, training=False):
        """The semantic code of clean images (an empty (batch, 0) tensor for the plain DDIM)."""
        return ops.zeros((ops.shape(x0)[0], 0))

    def net(self, x_t, z, t, training=False):
        """The UNet's raw output: the noise (``prediction = eps``) or v = sqrt(ab) eps - sqrt(1 - ab) x0."""
        inputs = [x_t, t, z] if self.semantic_dim else [x_t, t]
        return ops.cast(self.unet(inputs, training=training), "float32")

    def eps(self, x_t, z, t, training=False):
        """The predicted noise (what the samplers take), converted from v for ``prediction = v``."""
        out = self.net(x_t, z, t, training=training)
        if self.hp["prediction"] == "eps":
            return out
        ab = ops.reshape(ops.take(self._acp, ops.cast(t, "int32")), (-1, 1, 1, 1))
        return ops.sqrt(ab) * out + ops.sqrt(1.0 - ab) * x_t

    # -- training ----------------------------------------------------------------------------------------
    def noise_loss(self, x0, training=False):
        batch = ops.shape(x0)[0]
        t = keras.random.randint((batch,), 0, self.hp["timesteps"], seed=self.seed_generator)
        noise = keras.random.normal(ops.shape(x0), seed=self.seed_generator)
        ab = ops.reshape(ops.take(self._acp, t), (-1, 1, 1, 1))
        x_t = ops.sqrt(ab) * x0 + ops.sqrt(1.0 - ab) * noise
        pred = self.net(x_t, self.semantic(x0, training=training), t, training=training)
        target = noise if self.hp["prediction"] == "eps" else ops.sqrt(ab) * noise - ops.sqrt(1.0 - ab) * x0
        return ops.mean((pred - target) ** 2)

    def train_step(self, data):
        x0 = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            loss = self.noise_loss(x0, training=True)
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x0 = data[0] if isinstance(data, (tuple, list)) else data
        self.loss_tracker.update_state(self.noise_loss(x0))
        return {"loss": self.loss_tracker.result()}

    # -- sampling, encoding, decoding ------------------------------------------------------------------
    def sampler(self, steps: int, eta: float = 0.0, capture: bool = False, clip: bool = False) -> DiffusionSampler:
        """A compiled DDIM sampler over ``steps`` timesteps (cached: each is traced once per shape).

        ``clip`` clips the x0 estimates to the image range [-1, 1] (diffusers' ``clip_sample``): needed to
        sample from pure noise, where alpha_bar ~ 1e-4 amplifies any error of the noise prediction ~100x; but
        a decode of inverted codes must mirror the unclipped inversion: clipping cost that round trip 14 dB (a
        bright offset, as the dark background's estimates are clipped from below far more often than the
        blood's from above).
        """
        key = (int(steps), float(eta), bool(capture), bool(clip))
        if key not in self._samplers:
            self._samplers[key] = DiffusionSampler(lambda x, z, t: self.eps(x, z, t), self.alphas_cumprod, "DDIM",
                                                   steps, eta, clip=1.0 if clip else None, capture=capture)
        return self._samplers[key]

    def encode(self, x0, steps: int):
        """(z_sem, x_T): the semantic code and the DDIM-inverted noise of clean images."""
        z = ops.convert_to_tensor(self.semantic(x0))
        return z, self.sampler(steps).invert(x0, z)

    def decode(self, z, x_T, steps: int, capture: bool = False, clip: bool = False):
        """Deterministic DDIM decode of (z_sem, x_T); a dict with "x0" (and trajectories if ``capture``).

        ``clip=True`` for x_T drawn from N(0, I); leave it off for codes from ``encode`` (see ``sampler``).
        """
        return self.sampler(steps, capture=capture, clip=clip)(x_T, z)
