"""Shape VAE for thick-slice reconstruction (the baseline of Wang et al., DGM4MICCAI 2024).

The encoder sees the thick-slice volume and gives a Gaussian posterior over a ``latent_dim`` latent
(reparameterised sampling with tensorflow-probability); the decoder maps a latent to full-resolution
occupancy logits. Loss: BCE + ``dice_weight`` x (1 - soft Dice) of the full-resolution mask
+ ``beta`` x KL(q(z|x) || N(0, I)) per voxel. Rank-agnostic (2D or 3D from ``size``): with the image as its
own target and ``dice_weight`` 0 it is the generator of the 2D image models (BCE on grey values in [0, 1]).
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import layers, ops

from ldseg_suite.nets.layers import PKG, ResBlock, Upsample, conv

tfd = tfp.distributions


@keras.saving.register_keras_serializable(PKG)
class ShapeVAE(keras.Model):
    def __init__(self, size=(64, 64, 64), latent_dim: int = 100, base_channels: int = 16, levels: int = 4,
                 beta: float = 1.0, seed: int = 0, dice_weight: float = 1.0, input_skip: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(size=list(size), latent_dim=latent_dim, base_channels=base_channels, levels=levels,
                       beta=beta, seed=seed, dice_weight=dice_weight, input_skip=input_skip)
        sd = len(size)
        chans = [min(base_channels * 2 ** i, 4 * base_channels) for i in range(levels)]
        self.bottom = tuple(s // 2 ** levels for s in size)
        self.encoder_layers = [conv(sd, base_channels)]
        for ch in chans:
            self.encoder_layers += [ResBlock(ch, sd, conditioned=False), conv(sd, ch, strides=2)]
        self.to_stats = layers.Dense(2 * latent_dim)
        n_bottom = 1
        for s in self.bottom:
            n_bottom *= s
        self.from_latent = layers.Dense(n_bottom * chans[-1])
        self.decoder_layers = []
        for ch in reversed(chans):
            self.decoder_layers += [Upsample(ch, sd), ResBlock(ch, sd, conditioned=False)]
        self.out_conv = conv(sd, 1, kernel=1)
        # With input_skip the last stage also sees the (thick-slice) input at full resolution and the output is
        # a correction to the input's logits, so the latent only has to code what the input lacks.
        self.skip_conv = conv(sd, base_channels) if input_skip else None
        self.top_channels = chans[-1]
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "bce", "dice_loss", "kl")}

    def build(self, input_shape):
        x = ops.zeros((1,) + tuple(self.hp["size"]) + (1,))
        self.decode(self.encode(x)[0], x)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **{k: list(v) if isinstance(v, (list, tuple)) else v
                                           for k, v in self.hp.items()}}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def encode(self, x, training=False):
        """(mean, log variance) of q(z | thick-slice volume)."""
        h = x
        for layer in self.encoder_layers:
            h = layer(h, training=training) if isinstance(layer, ResBlock) else layer(h)
        stats = self.to_stats(ops.reshape(h, (ops.shape(h)[0], -1)))
        mean, logvar = ops.split(stats, 2, axis=-1)
        return mean, ops.clip(logvar, -10.0, 10.0)

    def decode(self, z, x=None, training=False):
        """Occupancy logits at full resolution, (batch, *size, 1); ``x`` is the input (used with input_skip)."""
        h = ops.reshape(self.from_latent(z), (-1,) + self.bottom + (self.top_channels,))
        for layer in self.decoder_layers:
            h = layer(h, training=training) if isinstance(layer, ResBlock) else layer(h)
        if self.skip_conv is None:
            return self.out_conv(h)
        x = ops.cast(x, h.dtype)
        h = ops.silu(self.skip_conv(ops.concatenate([h, x], axis=-1)))
        p = ops.clip(x, 0.02, 0.98)
        return self.out_conv(h) + ops.log(p / (1 - p))  # a correction to the input's own logits

    def call(self, x, training=False):
        return self.decode(self.encode(x, training)[0], x, training)

    def posterior(self, x, training=False):
        mean, logvar = self.encode(x, training)
        return tfd.Normal(mean, ops.exp(0.5 * logvar))

    def _loss_terms(self, data, training):
        x, onehot, _ = keras.utils.unpack_x_y_sample_weight(data)
        target = onehot[..., 1:2]
        q = self.posterior(x, training)
        seed = self.seed_generator.next()
        z = q.sample(seed=tf.cast(seed, tf.int32))
        logits = self.decode(z, x, training)
        axes = tuple(range(1, len(target.shape)))
        bce = ops.mean(ops.binary_crossentropy(target, logits, from_logits=True), axis=axes)
        probs = ops.sigmoid(logits)
        dice = (2 * ops.sum(probs * target, axis=axes) + 1) / (ops.sum(probs + target, axis=axes) + 1)
        voxels = 1
        for s in self.hp["size"]:
            voxels *= s
        kl = (ops.sum(tfd.kl_divergence(q, tfd.Normal(0.0, 1.0)), axis=-1) + self.prior_extra(z)) / voxels
        per_example = bce + self.hp["dice_weight"] * (1 - dice) + self.hp["beta"] * kl
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = ops.sum(per_example) / ops.cast(ops.shape(x)[0] * replicas, "float32")
        return loss, {"loss": per_example, "bce": bce, "dice_loss": 1 - dice, "kl": kl}

    def prior_extra(self, z):
        """Prior term beyond KL(q || N(0, I)) for the backbone (0 here; the LEBM adds its energy)."""
        return ops.zeros_like(z[:, 0])

    def _update(self, parts):
        for k, v in parts.items():
            self.trackers[k].update_state(v)
        return {k: self.trackers[k].result() for k in parts}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, parts = self._loss_terms(data, training=True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update(parts)

    def test_step(self, data):
        return self._update(self._loss_terms(data, training=False)[1])

    def reconstruct(self, x):
        """Occupancy probabilities from the posterior mean."""
        return ops.sigmoid(self.decode(self.encode(x)[0], x))
