"""Pixel-space EBM for 2D image generation (after Du & Mordatch 2019, Nijkamp et al. 2019).

A small ConvNet gives E(x); training contrasts data (low energy) with short-run Langevin samples (high
energy) started from a replay buffer (a fresh uniform-noise start with probability ``reinit``), plus a
small L2 penalty on both energies. The buffer is a non-trainable variable, so it is checkpointed with
the model and a resumed run continues its chains.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from ldseg_suite.diffusion.langevin import LangevinSampler, next_seed
from ldseg_suite.nets.layers import PKG


@keras.saving.register_keras_serializable(PKG)
class PixelEBM(keras.Model):
    def __init__(self, size=(32, 32), channels: int = 1, base_channels: int = 32, langevin_steps: int = 60,
                 langevin_step_size: float = 4.0, noise_scale: float = 0.002, buffer_size: int = 1000,
                 reinit: float = 0.05, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(size=list(size), channels=channels, base_channels=base_channels,
                       langevin_steps=langevin_steps, langevin_step_size=langevin_step_size,
                       noise_scale=noise_scale, buffer_size=buffer_size, reinit=reinit, seed=seed)
        b = base_channels
        self.convs = [layers.Conv2D(b, 3, padding="same"), layers.Conv2D(b, 3, strides=2, padding="same"),
                      layers.Conv2D(2 * b, 3, padding="same"), layers.Conv2D(2 * b, 3, strides=2, padding="same"),
                      layers.Conv2D(4 * b, 3, padding="same"), layers.Conv2D(4 * b, 3, strides=2, padding="same")]
        self.head = layers.Dense(1)
        self.buffer = self.add_weight(shape=(buffer_size, *size, channels), trainable=False, name="replay_buffer",
                                      initializer=keras.initializers.RandomUniform(0.0, 1.0))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "e_pos", "e_neg")}
        self.chain = LangevinSampler(lambda x, _: self(x), langevin_steps, langevin_step_size, noise_scale)

    def build(self, input_shape):
        self.energy(ops.zeros((1, *self.hp["size"], self.hp["channels"])))
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **self.hp}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, x):
        return self.energy(x)

    def energy(self, x):
        """Energy per image, (batch,)."""
        h = x * 2.0 - 1.0
        for conv in self.convs:
            h = ops.silu(conv(h))
        return self.head(ops.mean(h, axis=(1, 2)))[:, 0]

    def _seed(self):
        return next_seed(self.seed_generator)

    def negatives(self, n):
        """Langevin samples from the buffer (fresh noise with probability ``reinit``); updates the buffer."""
        idx = tf.random.stateless_uniform((n,), tf.stack([self._seed(), 1]), 0, self.hp["buffer_size"], tf.int32)
        start = tf.gather(self.buffer, idx)
        noise = tf.random.stateless_uniform(tf.shape(start), tf.stack([self._seed(), 2]))
        fresh = tf.random.stateless_uniform((n,), tf.stack([self._seed(), 3])) < self.hp["reinit"]
        start = tf.where(fresh[:, None, None, None], noise, start)
        x = tf.clip_by_value(self.chain(start, None, self._seed())["x"], 0.0, 1.0)
        x = tf.stop_gradient(x)
        self.buffer.assign(tf.tensor_scatter_nd_update(self.buffer, idx[:, None], x))
        return x

    def train_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        x_neg = self.negatives(tf.shape(x)[0])
        with tf.GradientTape() as tape:
            e_pos, e_neg = self(x), self(x_neg)
            loss = ops.mean(e_pos - e_neg) + 0.1 * ops.mean(e_pos ** 2 + e_neg ** 2)
        grads = tape.gradient(self.optimizer.scale_loss(loss), self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        for k, v in (("loss", loss), ("e_pos", e_pos), ("e_neg", e_neg)):
            self.trackers[k].update_state(v)
        return {k: m.result() for k, m in self.trackers.items()}

    def sample(self, n: int, seed: int = 0, steps: int | None = None, capture: bool = False):
        """Short-run Langevin from uniform noise (not the buffer): (images, chain or None)."""
        chain = LangevinSampler(lambda x, _: self(x), steps or self.hp["langevin_steps"],
                                self.hp["langevin_step_size"], self.hp["noise_scale"], capture=capture)
        start = tf.random.stateless_uniform((n, *self.hp["size"], self.hp["channels"]), [seed, 5])
        out = chain(start, None, seed)
        return tf.clip_by_value(out["x"], 0.0, 1.0), out.get("trajectory")
