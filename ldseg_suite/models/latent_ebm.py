"""Latent energy-based priors on top of the shape VAE: LEBM and LSD-EBM (Wang et al., DGM4MICCAI 2024).

Both keep the VAE's encoder (input -> q(z | x)) and decoder (z -> logits) and add an energy on the latent:

- **LEBM** (after Pang et al., NeurIPS 2020): p(z) ∝ exp(-E(z)) N(z; 0, I) with an MLP energy E. The
  backbone's prior term is KL(q || N(0, I)) + E_q[E(z)] (the intractable log Z has no backbone
  gradient); the energy learns by contrastive divergence, E(posterior z) - E(prior z), where prior z comes
  from short-run Langevin on E(z) + |z|^2 / 2 started at N(0, I).
- **LSD-EBM** (latent diffusion EBM, after Gao et al., ICLR 2021 and Yu et al., ICML 2022): the latent is
  diffused over ``segments`` steps with a constant beta (alpha_bar falls to 0.01, so z_T ~ N(0, I)). For
  y = sqrt(1 - beta) z_t, the model of y given z_{t+1} is exp(-E(y, t) / beta) times the exact Gaussian
  conditional of N(0, I) latents; E is learnt by recovery likelihood: positives are diffused posterior
  latents, negatives are conditional Langevin samples started from that Gaussian conditional,
  N((1 - beta) z_{t+1}, beta (1 - beta) I), so a flat E leaves the chain where it starts. (E / beta keeps
  the energy as strong as the Gaussian terms.) Sampling runs the conditional chains from T down to 0.
  Trained jointly, the backbone's prior term adds the first segment's learnt energy, E(sqrt(1 - beta_1) z, 0) / beta_1.

With ``standardize`` the energy and the diffusion work on u = (z - shift) / scale per latent dimension
(``LatentStandardizer``: shift and scale are the running mean and std of the training posterior samples,
non-trainable weights saved with the model), so the Gaussian terms of the LSD-EBM (z_T ~ N(0, I), the base
of each conditional) match the data's first two moments per dimension; ``whiten`` uses the full covariance
instead (u = L^-1 (z - shift)), so that base is the full-covariance Gaussian fit of the posterior. Prior samples
and reconstructions are returned in z (the decoder's space). On the vertebra VAE this did not stop the LSD-EBM's
prior chain from drifting outwards (README, LSD-EBM section): the drift comes from the learnt energy, not from the
latent's scale.

``posterior_refine`` turns either prior into a reconstruction: Langevin on the latent's prior energy plus a
data-consistency term, |A(sigmoid(decode(z, x))) - y_obs|^2 over the observed thick slices, started from the
encoder's mean. Every Langevin chain is one compiled loop (``LangevinSampler``).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from ldseg_suite.diffusion.langevin import LangevinSampler
from ldseg_suite.models.vae import ShapeVAE
from ldseg_suite.nets.layers import PKG, TimestepEmbedding

FINAL_ALPHA_BAR = 0.01
LINEAR_BETA_1 = 0.01


@keras.saving.register_keras_serializable(PKG)
class LatentEnergy(layers.Layer):
    """MLP energy E(z) -> (batch,), or E(z, t) when ``segments`` > 0 (t embedded and added per layer)."""

    def __init__(self, hidden: int = 200, depth: int = 3, segments: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.depth, self.segments = hidden, depth, segments
        self.dense = [layers.Dense(hidden) for _ in range(depth)]
        self.out = layers.Dense(1)
        self.t_embed = TimestepEmbedding(32) if segments else None
        self.t_proj = [layers.Dense(hidden) for _ in range(depth)] if segments else []

    def build(self, input_shape):
        dim = input_shape[-1]
        for d in self.dense:
            d.build((None, dim))
            dim = self.hidden
        self.out.build((None, self.hidden))
        if self.segments:
            self.t_embed.build((None,))
            for p in self.t_proj:
                p.build((None, 128))
        super().build(input_shape)

    def call(self, z, t=None):
        emb = self.t_embed(t) if self.segments else None
        h = z
        for k, d in enumerate(self.dense):
            h = d(h)
            if emb is not None:
                h = h + self.t_proj[k](emb)
            h = ops.leaky_relu(h, 0.2)
        return self.out(h)[:, 0]

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "depth": self.depth, "segments": self.segments}


@keras.saving.register_keras_serializable(PKG)
class LatentStandardizer(layers.Layer):
    """u = (z - shift) / scale per dimension, or with ``full`` the whitening u = L^-1 (z - shift), L L^T the
    covariance (its Cholesky factor; the N(0, I) of u is then the full-covariance Gaussian fit of z, correlations
    included). shift and the (co)variance come from bias-corrected exponential moving averages of E[z] and E[z^2]
    (``full``: E[z z^T]) over the batches passed to ``update`` (non-trainable weights; before the first update the
    map is the identity)."""

    def __init__(self, momentum: float = 0.99, full: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.momentum, self.full = momentum, full

    def build(self, input_shape):
        dim = input_shape[-1]
        self.first = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="first_moment")
        self.second = self.add_weight(shape=(dim, dim) if self.full else (dim,), initializer="zeros",
                                      trainable=False, name="second_moment")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
        super().build(input_shape)

    def _moments(self):
        done = 1.0 - self.momentum ** ops.cast(self.count, "float32")
        seen = ops.cast(self.count > 0, "float32")
        identity = ops.eye(ops.shape(self.first)[0]) if self.full else 1.0
        return (seen * self.first / ops.maximum(done, 1e-12),
                seen * self.second / ops.maximum(done, 1e-12) + (1 - seen) * identity)

    def stats(self):
        """(shift, scale), each (dim,); with ``full``: (shift, L), L the lower Cholesky factor (dim, dim)."""
        shift, second = self._moments()
        if not self.full:
            return shift, ops.sqrt(ops.maximum(second - shift ** 2, 1e-4))
        cov = second - shift[:, None] * shift[None, :]
        return shift, tf.linalg.cholesky(0.5 * (cov + ops.transpose(cov)) + 1e-4 * ops.eye(ops.shape(cov)[0]))

    def update(self, z):
        m = self.momentum
        self.first.assign(m * self.first + (1 - m) * ops.mean(z, axis=0))
        n = ops.cast(ops.shape(z)[0], "float32")
        second = ops.matmul(ops.transpose(z), z) / n if self.full else ops.mean(z ** 2, axis=0)
        self.second.assign(m * self.second + (1 - m) * second)
        self.count.assign(self.count + 1)

    def call(self, z):
        shift, scale = self.stats()
        if not self.full:
            return (z - shift) / scale
        flat = ops.reshape(z - shift, (-1, ops.shape(z)[-1]))  # any leading axes (e.g. a chain's steps)
        return ops.reshape(ops.transpose(tf.linalg.triangular_solve(scale, ops.transpose(flat), lower=True)),
                           ops.shape(z))

    def inverse(self, u):
        shift, scale = self.stats()
        return u * scale + shift if not self.full else ops.matmul(u, ops.transpose(scale)) + shift

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "full": self.full}


class _LatentPriorVAE(ShapeVAE):
    """Shared parts: the energy, and a train_step that updates backbone and energy from their own losses."""

    segments = 0

    def __init__(self, *args, energy_hidden: int = 200, langevin_steps: int = 30, langevin_step_size: float = 0.1,
                 train_backbone: bool = True, standardize: bool = False, grad_penalty: float = 0.0,
                 whiten: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.hp.update(dict(energy_hidden=energy_hidden, langevin_steps=langevin_steps,
                            langevin_step_size=langevin_step_size, train_backbone=train_backbone,
                            standardize=standardize, grad_penalty=grad_penalty, whiten=whiten))
        self.energy = LatentEnergy(energy_hidden, segments=self.segments, name="energy")
        self.standardizer = LatentStandardizer(full=whiten, name="standardizer") if standardize or whiten else None
        for k in ("ebm_loss", "e_pos", "e_neg", "grad_sq"):
            self.trackers[k] = keras.metrics.Mean(name=k)
        self.train_chain = LangevinSampler(self.chain_energy, langevin_steps, langevin_step_size)

    def build(self, input_shape):
        super().build(input_shape)
        self.energy.build((None, self.hp["latent_dim"]))
        if self.standardizer is not None:
            self.standardizer.build((None, self.hp["latent_dim"]))
        if not self.hp["train_backbone"]:  # after build: sublayers made in build() must be frozen too
            for layer in self.layers:
                layer.trainable = layer is self.energy

    def prior_layers(self):
        return [self.energy] + ([self.standardizer] if self.standardizer is not None else [])

    def backbone_weights(self):
        """Encoder and decoder weights, in the order of a ShapeVAE's ``layers`` of the same configuration."""
        prior = self.prior_layers()
        return [w for layer in self.layers if all(layer is not p for p in prior) for w in layer.weights]

    def prior_weights(self):
        """The energy's weights, then the standardiser's (what a fixed-backbone model adds to its VAE)."""
        return [w for layer in self.prior_layers() for w in layer.weights]

    def to_unit(self, z):
        """z (the decoder's latent) -> u, the space of the energy and the diffusion (identity without
        ``standardize``)."""
        return z if self.standardizer is None else self.standardizer(z)

    def from_unit(self, u):
        return u if self.standardizer is None else self.standardizer.inverse(u)

    def _seed(self):
        return tf.cast(self.seed_generator.next()[0], tf.int32)

    def _noise(self, like, tag: int):
        return tf.random.stateless_normal(tf.shape(like), tf.stack([self._seed(), tag]))

    def train_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        mean, logvar = self.encode(x, training=False)
        z_post = tf.stop_gradient(mean + ops.exp(0.5 * logvar) * self._noise(mean, 1))
        if self.standardizer is not None:
            self.standardizer.update(z_post)
        z_pos, z_neg, t = self.contrastive_pairs(self.to_unit(z_post))
        train_backbone = self.hp["train_backbone"]
        with tf.GradientTape(persistent=True) as tape:
            if train_backbone:
                loss, parts = self._loss_terms(data, training=True)
            ebm_loss, ebm_logs = self.energy_loss(z_pos, z_neg, t)
        grads = dict(zip(map(id, self.energy.trainable_variables),
                         tape.gradient(self.optimizer.scale_loss(ebm_loss), self.energy.trainable_variables)))
        if train_backbone:
            backbone = [w for w in self.backbone_weights() if w.trainable]
            grads.update(zip(map(id, backbone), tape.gradient(self.optimizer.scale_loss(loss), backbone)))
        del tape
        # In the order of trainable_variables, which the optimiser's slots (and EMA) follow.
        self.optimizer.apply_gradients([(grads[id(v)], v) for v in self.trainable_variables])
        if not train_backbone:
            parts = {"loss": ebm_loss}
        return self._update({**parts, **ebm_logs})

    def energy_loss(self, z_pos, z_neg, t):
        """(loss, logs): contrastive divergence E(positives) - E(negatives), plus a small penalty that keeps
        the raw energies near 0 (Du & Mordatch) and, with ``grad_penalty`` > 0, that weight times the mean
        squared gradient |dE/dz|^2 of the scaled energy at positives and negatives (a smooth energy without
        deep wells off the data for the short-run chains to fall into)."""
        both = ops.concatenate([z_pos, z_neg], axis=0)
        tt = None if t is None else ops.concatenate([t, t], axis=0)
        with tf.GradientTape() as tape:
            tape.watch(both)
            raw = self.energy(both, tt)
            scaled = raw * self.energy_scale(tt)
        n = ops.shape(z_pos)[0]
        e_pos, e_neg, r = scaled[:n], scaled[n:], raw
        loss = ops.mean(e_pos - e_neg) + 0.01 * ops.mean(r ** 2) * 2
        logs = {"ebm_loss": loss, "e_pos": e_pos, "e_neg": e_neg}
        if self.hp["grad_penalty"]:
            grad = tape.gradient(scaled, both)  # of the sum over examples: each row is its own example's
            penalty = ops.mean(ops.sum(grad ** 2, axis=-1))
            loss = loss + self.hp["grad_penalty"] * penalty
            logs["grad_sq"] = penalty
        return loss, logs

    def energy_scale(self, t):
        return 1.0

    def cached_chain(self, key, make):
        """The posterior sampler for ``key`` (made by ``make`` once): one traced graph for all batches of a
        reconstruction instead of one per batch."""
        cache = self.__dict__.setdefault("_chains", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def data_energy(self, observe, weight: float):
        """(u, y_obs, x) -> weight * sum |observe(sigmoid(decode(from_unit(u), x))) - y_obs|^2 over the observed
        voxels."""
        def energy(u, y_obs, x):
            z = self.from_unit(u)
            residual = observe(ops.sigmoid(self.decode(z, x))) - y_obs
            return weight * ops.sum(ops.reshape(residual ** 2, (ops.shape(z)[0], -1)), axis=-1)
        return energy


@keras.saving.register_keras_serializable(PKG)
class ShapeLEBM(_LatentPriorVAE):
    def prior_energy(self, z):
        return self.energy(z) + 0.5 * ops.sum(z ** 2, axis=-1)

    def chain_energy(self, z, _cond):
        return self.prior_energy(z)

    def prior_extra(self, z):
        return self.energy(self.to_unit(z))

    def contrastive_pairs(self, z_post):
        z_neg = self.train_chain(self._noise(z_post, 2), None, self._seed())["x"]
        return z_post, tf.stop_gradient(z_neg), None

    def sample_latents(self, n: int, seed: int = 0, capture: bool = False):
        """Prior samples (in z) by short-run Langevin from N(0, I), and the chain (steps, n, dim) if ``capture``."""
        chain = LangevinSampler(self.chain_energy, self.hp["langevin_steps"], self.hp["langevin_step_size"],
                                capture=capture)
        out = chain(tf.random.stateless_normal((n, self.hp["latent_dim"]), [seed, 7]), None, seed)
        path = out.get("trajectory")
        return self.from_unit(out["x"]), (None if path is None else self.from_unit(path))

    def posterior_refine(self, x, y_obs, observe, steps: int, step_size: float, weight: float,
                         noise: float = 1.0, seed: int = 0):
        """Langevin on prior energy + data consistency, from the encoder's mean; the latent z."""
        def make():
            fit = self.data_energy(observe, weight)
            return LangevinSampler(lambda u, c: self.prior_energy(u) + fit(u, *c), steps, step_size, noise)

        chain = self.cached_chain((observe, steps, step_size, weight, noise), make)
        return self.from_unit(chain(self.to_unit(self.encode(x)[0]), (y_obs, x), seed)["x"])


def beta_schedule(kind: str, segments: int) -> np.ndarray:
    """beta_1..beta_T with alpha_bar_T = prod(1 - beta) = 0.01. ``constant``: beta = 1 - 0.01^(1/T).
    ``linear``: beta rises linearly from LINEAR_BETA_1 (so the last segment adds little noise to the sample) to
    what makes alpha_bar_T = 0.01. (A cosine schedule ends with beta near 1, and z_t = y / sqrt(1 - beta) then
    amplifies any sampling error 30-fold.)"""
    if kind == "constant" or segments == 1:
        return np.full(segments, 1.0 - FINAL_ALPHA_BAR ** (1.0 / segments))
    if kind != "linear":
        raise ValueError(f"unknown beta schedule {kind!r} (expected constant or linear)")
    first = min(LINEAR_BETA_1, 1.0 - FINAL_ALPHA_BAR ** (1.0 / segments))
    lo, hi = first, 1.0 - 1e-9
    for _ in range(100):  # bisect on the last beta: -sum log(1 - beta_t) = log(1 / 0.01)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if -np.log1p(-np.linspace(first, mid, segments)).sum() < -np.log(FINAL_ALPHA_BAR) \
            else (lo, mid)
    return np.linspace(first, lo, segments)


@keras.saving.register_keras_serializable(PKG)
class ShapeLSDEBM(_LatentPriorVAE):
    def __init__(self, *args, segments: int = 20, energy_scale: str = "inverse_beta", schedule: str = "constant",
                 **kwargs):
        self.segments = segments
        self.scale_by_beta = energy_scale == "inverse_beta"
        beta = beta_schedule(schedule, segments)
        self.beta = tf.constant(beta, tf.float32)                                   # beta_{t+1}, t = 0..T-1
        self.alpha_bar = tf.constant(np.concatenate([[1.0], np.cumprod(1 - beta.astype(np.float64))]),
                                     tf.float32)                                    # of z_t, t = 0..T
        super().__init__(*args, **kwargs)
        self.hp.update(dict(segments=segments, energy_scale=energy_scale, schedule=schedule))

    def chain_energy(self, y, cond):
        """-log p(y | z_{t+1}) + const with cond = (z_{t+1}, t): the learnt E(y, t) / beta_{t+1} on top of the
        exact energy of N(0, I) latents, |y|^2 / (2 (1 - beta)), plus |z_{t+1} - y|^2 / (2 beta_{t+1})."""
        z_next, t = cond[0], cond[1]
        beta = ops.take(self.beta, t)
        gauss = 0.5 * ops.sum(y ** 2, axis=-1) / (1 - beta)
        return self.energy(y, t) * self.energy_scale(t) + 0.5 * ops.sum((z_next - y) ** 2, axis=-1) / beta + gauss

    def energy_scale(self, t):
        return 1.0 / ops.take(self.beta, t) if self.scale_by_beta else 1.0

    def prior_extra(self, z):
        """The backbone's prior term beyond KL(q || N(0, I)) (with ``train_backbone``): the learnt part of
        -log p(y_0 | z_1) of the first segment at y_0 = sqrt(1 - beta_1) z_0, E(y_0, 0) / beta_1, as the LEBM adds
        E(z); the Gaussian parts of that conditional are the N(0, I) prior's, already in the KL."""
        t = ops.zeros_like(z[:, 0], dtype="int32")
        y = ops.sqrt(1 - self.beta[0]) * self.to_unit(z)
        return self.energy(y, t) * self.energy_scale(t)

    def contrastive_pairs(self, z0):
        t = tf.random.stateless_uniform(tf.shape(z0)[:1], tf.stack([self._seed(), 2]), 0, self.segments,
                                        dtype=tf.int32)
        ab = ops.take(self.alpha_bar, t)[:, None]
        beta = ops.take(self.beta, t)[:, None]
        z_t = ops.sqrt(ab) * z0 + ops.sqrt(1 - ab) * self._noise(z0, 3)
        y_pos = ops.sqrt(1 - beta) * z_t
        z_next = y_pos + ops.sqrt(beta) * self._noise(z0, 4)
        start = (1 - beta) * z_next + ops.sqrt(beta * (1 - beta)) * self._noise(z0, 5)
        y_neg = self.train_chain(start, (z_next, t), self._seed(), ops.sqrt(beta))["x"]
        return y_pos, tf.stop_gradient(y_neg), t

    def reverse(self, chain, z, start: int, seed: int = 0, obs=(), start_noise: float = 1.0):
        """Conditional Langevin from segment ``start`` down to 0: (z_0, latents (start + 1, n, dim)). Each chain
        starts from y | z_{t+1} under the N(0, I) base, as in training (its noise scaled by ``start_noise``)."""
        path = [z]
        n = int(z.shape[0])
        for t in range(start - 1, -1, -1):
            beta = float(self.beta[t])
            cond = (z, tf.fill((n,), t)) + tuple(obs)
            y0 = (1 - beta) * z + start_noise * (beta * (1 - beta)) ** 0.5 * tf.random.stateless_normal(
                tf.shape(z), [seed, t])
            y = chain(y0, cond, seed * 1000 + t, beta ** 0.5)["x"]
            z = y / (1 - beta) ** 0.5
            path.append(z)
        return z, tf.stack(path)

    def sample_latents(self, n: int, seed: int = 0, capture: bool = False):
        z_T = tf.random.stateless_normal((n, self.hp["latent_dim"]), [seed, 7])
        z, path = self.reverse(self.train_chain, z_T, self.segments, seed)
        return self.from_unit(z), (self.from_unit(path) if capture else None)

    def posterior_refine(self, x, y_obs, observe, steps: int, step_size: float, weight: float,
                         noise: float = 1.0, seed: int = 0, start: int | None = None, start_noise: float = 1.0):
        """Diffuse the encoder's mean to segment ``start`` (default T // 4, at least 1), then denoise segment
        by segment with conditional Langevin plus data consistency on each z_t = y / sqrt(1 - beta).
        ``start_noise`` scales the noise of that diffusion and of each segment's initial draw (1 = as in
        training; 0 = deterministic, the encoder's mean shrunk as the diffusion's mean)."""
        start = max(1, self.segments // 4) if start is None else min(start, self.segments)
        def make():
            fit = self.data_energy(observe, weight)

            def energy(y, cond):
                beta = ops.take(self.beta, cond[1])
                return self.chain_energy(y, cond) + fit(y / ops.sqrt(1 - beta)[:, None], cond[2], cond[3])
            return LangevinSampler(energy, steps, step_size, noise)

        chain = self.cached_chain((observe, steps, step_size, weight, noise), make)
        mean = self.to_unit(self.encode(x)[0])
        ab = float(self.alpha_bar[start])
        z = ab ** 0.5 * mean + start_noise * (1 - ab) ** 0.5 * tf.random.stateless_normal(tf.shape(mean), [seed, 11])
        u = self.reverse(chain, z, start, seed, (tf.cast(y_obs, tf.float32), tf.cast(x, tf.float32)),
                         start_noise)[0]
        return self.from_unit(u)
