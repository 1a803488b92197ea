"""LDSeg: latent diffusion segmentation (after Zaman et al., 2024).

Four parts trained end to end: a label encoder (one-hot label map -> latent z_l0 in [-1, 1]), an image
encoder (image -> latent z_i of the same spatial size), a denoiser (UNet on concat(z_lt, z_i), timestep
embedding) and a label decoder (latent -> class logits). The loss is
``w_noise * MSE + w_ce * CE + w_dice * (1 - soft Dice)``, the last two on the decoded estimate of the clean
latent. The denoiser predicts the noise (``prediction = "eps"``, the anchor's choice; MSE on the noise) or the
clean latent itself (``prediction = "x0"``; MSE on the latent), which at large t makes it a direct
image-latent -> label-latent segmenter and learns far faster. Samplers always receive the noise estimate.
Inference draws z_T ~ N(0, I) and runs DDPM or DDIM conditioned on z_i.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ldseg_suite.diffusion.samplers import DiffusionSampler, initial_noise
from ldseg_suite.diffusion.schedules import alphas_cumprod, betas
from ldseg_suite.models.seg_steps import SegmentationSteps, global_batch_mean, soft_dice_per_example
from ldseg_suite.nets.layers import PKG
from ldseg_suite.nets.unet import Decoder, Encoder, UNet


@keras.saving.register_keras_serializable(PKG)
class LDSeg(SegmentationSteps, keras.Model):
    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, classes: int = 2, latent_channels: int = 4,
                 image_latent_channels: int = 16, downsample: int = 4, base_channels: int = 32,
                 channel_mult=(1, 2), attention: bool = True, schedule: str = "linear", beta_0: float = 1e-4,
                 beta_T: float = 0.02, timesteps: int = 1000, loss_weights=(1.0, 1.0, 1.0), seed: int = 0,
                 prediction: str = "eps", **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(spatial_dims=spatial_dims, in_channels=in_channels, classes=classes,
                       latent_channels=latent_channels, image_latent_channels=image_latent_channels,
                       downsample=downsample, base_channels=base_channels, channel_mult=list(channel_mult),
                       attention=attention, schedule=schedule, beta_0=beta_0, beta_T=beta_T,
                       timesteps=timesteps, loss_weights=list(loss_weights), seed=seed, prediction=prediction)
        if prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be eps or x0, got {prediction!r}")
        sd = spatial_dims
        self.label_encoder = Encoder(latent_channels, downsample, sd, base_channels, activation="tanh",
                                     name="label_encoder")
        self.image_encoder = Encoder(image_latent_channels, downsample, sd, base_channels, name="image_encoder")
        self.denoiser = UNet(latent_channels, sd, base_channels, channel_mult, attention=attention, name="denoiser")
        self.label_decoder = Decoder(classes, downsample, sd, base_channels, name="label_decoder")
        self.alphas_cumprod = alphas_cumprod(betas(schedule, timesteps, beta_0, beta_T))
        self._acp = tf.constant(self.alphas_cumprod)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "noise", "ce", "dice_loss")}

    # -- structure -------------------------------------------------------------------------------------
    def build(self, input_shape):
        """Build all four parts from the image shape (batch, *spatial, channels)."""
        spatial = tuple(input_shape[1:-1])
        image = ops.zeros((1,) + spatial + (self.hp["in_channels"],))
        label = ops.zeros((1,) + spatial + (self.hp["classes"],))
        self._forward(image, label, ops.zeros((1,), "int32"), ops.zeros(
            (1,) + tuple(s // self.hp["downsample"] for s in spatial) + (self.hp["latent_channels"],)))
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **{k: list(v) if isinstance(v, (list, tuple)) else v
                                           for k, v in self.hp.items()}}

    def call(self, image, training=False):
        """The image latent z_i (the conditioning of the denoiser)."""
        return self.image_encoder(image, training=training)

    # -- training --------------------------------------------------------------------------------------
    def _net(self, z_t, z_i, t, training=False):
        x = ops.concatenate([ops.cast(z_t, "float32"), ops.cast(z_i, "float32")], axis=-1)
        return ops.cast(self.denoiser([x, t], training=training), "float32")

    def _ab(self, t, rank):
        return ops.reshape(ops.take(self._acp, t), (-1,) + (1,) * (rank - 1))

    def denoise(self, z_t, z_i, t, training=False):
        """Predicted noise of z_t, in float32 whatever the layers' precision policy (from the predicted clean
        latent when ``prediction = "x0"``)."""
        out = self._net(z_t, z_i, t, training)
        if self.hp["prediction"] == "eps":
            return out
        ab = self._ab(t, len(out.shape))
        return (ops.cast(z_t, "float32") - ops.sqrt(ab) * out) / ops.sqrt(1.0 - ab)

    def _forward(self, image, onehot, t, noise, training=False):
        """(the network's target, its prediction, label logits decoded from the clean-latent estimate)."""
        z0 = ops.cast(self.label_encoder(onehot, training=training), "float32")
        z_i = self.image_encoder(image, training=training)
        ab = self._ab(t, len(z0.shape))
        z_t = ops.sqrt(ab) * z0 + ops.sqrt(1.0 - ab) * noise
        out = self._net(z_t, z_i, t, training=training)
        if self.hp["prediction"] == "eps":
            target, z0_hat = noise, (z_t - ops.sqrt(1.0 - ab) * out) / ops.sqrt(ab)
        else:
            target, z0_hat = z0, out
        logits = self.label_decoder(ops.clip(z0_hat, -1.0, 1.0), training=training)
        return target, out, logits

    def _loss_terms(self, data, training):
        image, onehot, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = ops.shape(image)[0]
        latent_shape = (batch,) + tuple(s // self.hp["downsample"] for s in image.shape[1:-1]) + (
            self.hp["latent_channels"],)
        t, noise = self.sample_t_and_noise(image, latent_shape)
        target, out, logits = self._forward(image, onehot, t, noise, training=training)
        logits = ops.cast(logits, "float32")
        red = tuple(range(1, len(noise.shape)))
        noise_loss = ops.mean(ops.square(out - target), axis=red)
        ce = ops.mean(keras.losses.categorical_crossentropy(onehot, logits, from_logits=True),
                      axis=tuple(range(1, len(onehot.shape) - 1)))
        dice_loss = 1.0 - soft_dice_per_example(onehot, ops.softmax(logits, axis=-1))
        w_noise, w_ce, w_dice = self.hp["loss_weights"]
        per_example = w_noise * noise_loss + w_ce * ce + w_dice * dice_loss
        loss = global_batch_mean(per_example, batch)
        parts = {"noise": noise_loss, "ce": ce, "dice_loss": dice_loss}
        return loss, per_example, parts

    def sample_t_and_noise(self, image, latent_shape):
        """Random timesteps and latent noise of a training batch (seeded by the model's seed generator).

        The replica's id is folded into the seed: under tf.distribute every replica advances the same seed
        generator, and would otherwise draw the same t and noise for its part of the batch."""
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
        t_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        t = tf.random.stateless_uniform((latent_shape[0],), t_seed, 0, self.hp["timesteps"], dtype=tf.int32)
        return t, tf.random.stateless_normal(latent_shape, noise_seed)

    # -- inference -------------------------------------------------------------------------------------
    def latent_shape(self, image_shape):
        spatial = tuple(int(s) // self.hp["downsample"] for s in image_shape[1:-1])
        return (int(image_shape[0]),) + spatial + (self.hp["latent_channels"],)

    def make_sampler(self, kind: str = "DDIM", steps: int = 15, eta: float = 0.0, capture: bool = False,
                     jit_compile: bool = False) -> DiffusionSampler:
        """A compiled reverse-diffusion loop over the label latent, conditioned on z_i."""
        return DiffusionSampler(lambda z, z_i, t: self.denoise(z, z_i, t), self.alphas_cumprod, kind=kind,
                                steps=steps, eta=eta, clip=1.0, capture=capture, jit_compile=jit_compile)

    def segment(self, image, sampler: DiffusionSampler, seed: int = 0):
        """Class probabilities for a batch of images; also the sampler's output (latents, trajectory)."""
        z_i = self.image_encoder(image, training=False)
        out = sampler(initial_noise(self.latent_shape(image.shape), seed), z_i, seed)
        return self.decode(out["x0"]), out

    def decode(self, latent):
        return ops.softmax(ops.cast(self.label_decoder(latent, training=False), "float32"), axis=-1)


def label_round_trip(model: LDSeg, onehot) -> np.ndarray:
    """Decode(encode(label)): how well the label autoencoder preserves a mask (argmax labels)."""
    return ops.convert_to_numpy(ops.argmax(model.decode(model.label_encoder(onehot)), axis=-1))
