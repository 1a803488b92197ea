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
  With ``objective = "score_matching"`` the same E, in the same chain, is fitted instead by denoising score matching
  of the chain's marginal energy per segment (``marginal_energy``; no Langevin chains in training).

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

from ldseg_suite.diffusion.langevin import LangevinSampler, next_seed
from ldseg_suite.models.vae import ShapeVAE
from ldseg_suite.nets.layers import PKG, TimestepEmbedding

FINAL_ALPHA_BAR = 0.01
LINEAR_BETA_1 = 0.01
OBJECTIVES = ("recovery_likelihood", "score_matching")
DATA_TERMS = ("noisy", "denoised")
ACTIVATIONS = ("leaky_relu", "silu")


@keras.saving.register_keras_serializable(PKG)
class LatentEnergy(layers.Layer):
    """MLP energy E(z) -> (batch,), or E(z, t) when ``segments`` > 0 (t embedded and added per layer).

    ``activation``: leaky_relu (slope 0.2) or silu. With leaky ReLU E is piecewise linear in z, so its gradient dE/dz
    is piecewise constant and does not depend on the biases or on t's embedding (both only shift the pieces):
    an objective on dE/dz alone (score matching) cannot train them. silu is smooth."""

    def __init__(self, hidden: int = 200, depth: int = 3, segments: int = 0, activation: str = "leaky_relu",
                 **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} (expected one of {', '.join(ACTIVATIONS)})")
        self.hidden, self.depth, self.segments, self.activation = hidden, depth, segments, activation
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
            h = ops.leaky_relu(h, 0.2) if self.activation == "leaky_relu" else ops.silu(h)
        return self.out(h)[:, 0]

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "depth": self.depth, "segments": self.segments,
                "activation": self.activation}


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
    posterior_draws = 1  # posterior samples per shape and step for the energy's loss

    def __init__(self, *args, energy_hidden: int = 200, langevin_steps: int = 30, langevin_step_size: float = 0.1,
                 train_backbone: bool = True, standardize: bool = False, grad_penalty: float = 0.0,
                 whiten: bool = False, energy_activation: str = "leaky_relu", **kwargs):
        super().__init__(*args, **kwargs)
        self.hp.update(dict(energy_hidden=energy_hidden, langevin_steps=langevin_steps,
                            langevin_step_size=langevin_step_size, train_backbone=train_backbone,
                            standardize=standardize, grad_penalty=grad_penalty, whiten=whiten,
                            energy_activation=energy_activation))
        self.energy = LatentEnergy(energy_hidden, segments=self.segments, activation=energy_activation,
                                   name="energy")
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
        return next_seed(self.seed_generator)

    def _noise(self, like, tag: int):
        return tf.random.stateless_normal(tf.shape(like), tf.stack([self._seed(), tag]))

    def train_step(self, data):
        z_post = self.posterior_samples(keras.utils.unpack_x_y_sample_weight(data)[0])
        if self.standardizer is not None:
            self.standardizer.update(z_post)
        inputs = self.prior_inputs(self.to_unit(z_post))  # outside the tape: no gradient through the chains
        train_backbone = self.hp["train_backbone"]
        with tf.GradientTape(persistent=True) as tape:
            if train_backbone:
                loss, parts = self._loss_terms(data, training=True)
            ebm_loss, ebm_logs = self.prior_loss(*inputs)
        energy_vars = self.energy.trainable_variables
        grads = {id(v): ops.zeros_like(v) if g is None else g  # None: a weight the loss does not see (a constant)
                 for v, g in zip(energy_vars, tape.gradient(self.optimizer.scale_loss(ebm_loss), energy_vars))}
        if train_backbone:
            backbone = [w for w in self.backbone_weights() if w.trainable]
            grads.update(zip(map(id, backbone), tape.gradient(self.optimizer.scale_loss(loss), backbone)))
        del tape
        # In the order of trainable_variables, which the optimiser's slots (and EMA) follow.
        self.optimizer.apply_gradients([(grads[id(v)], v) for v in self.trainable_variables])
        if not train_backbone:
            parts = {"loss": ebm_loss}
        return self._update({**parts, **ebm_logs})

    def posterior_samples(self, x):
        """``posterior_draws`` samples of q(z | x) per shape (one encoder pass), without gradient."""
        mean, logvar = self.encode(x, training=False)
        if self.posterior_draws > 1:
            mean, logvar = (ops.repeat(a, self.posterior_draws, axis=0) for a in (mean, logvar))
        return tf.stop_gradient(mean + ops.exp(0.5 * logvar) * self._noise(mean, 1))

    def prior_inputs(self, u_post):
        """What the energy's loss needs besides its weights (contrastive divergence: positives, negatives, t)."""
        return self.contrastive_pairs(u_post)

    def prior_loss(self, *inputs):
        return self.energy_loss(*inputs)

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
                 objective: str = "recovery_likelihood", score_samples: int = 16, score_min_noise: float = 0.05,
                 **kwargs):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r} (expected one of {', '.join(OBJECTIVES)})")
        self.segments = segments
        self.scale_by_beta = energy_scale == "inverse_beta"
        beta = beta_schedule(schedule, segments)
        self.beta = tf.constant(beta, tf.float32)                                   # beta_{t+1}, t = 0..T-1
        self.alpha_bar = tf.constant(np.concatenate([[1.0], np.cumprod(1 - beta.astype(np.float64))]),
                                     tf.float32)                                    # of z_t, t = 0..T
        super().__init__(*args, **kwargs)
        self.hp.update(dict(segments=segments, energy_scale=energy_scale, schedule=schedule, objective=objective,
                            score_samples=score_samples, score_min_noise=score_min_noise))
        if objective == "score_matching":  # each with its own segment and noise
            self.posterior_draws = score_samples
            self.trackers["sm_gauss"] = keras.metrics.Mean(name="sm_gauss")
        # Score matching: the noise variance of each segment's diffused latent, floored for segment 0 (whose
        # marginal is the data's own) so that its score is defined: the floor is the smallest scale of detail the
        # prior can learn (a kernel width: too small, and a few hundred shapes are learnt by heart).
        self.score_var = ops.maximum(1 - self.alpha_bar[:-1], score_min_noise ** 2)

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

    def prior_inputs(self, u_post):
        if self.hp["objective"] != "score_matching":
            return super().prior_inputs(u_post)
        t = tf.random.stateless_uniform(tf.shape(u_post)[:1], tf.stack([self._seed(), 6]), 0, self.segments,
                                        dtype=tf.int32)
        return u_post, t, self._noise(u_post, 7)

    def prior_loss(self, *inputs):
        if self.hp["objective"] != "score_matching":
            return super().prior_loss(*inputs)
        loss = ops.mean(self.score_matching_loss(*inputs))
        return loss, {"ebm_loss": loss}

    def test_step(self, data):
        """Score matching: the held-out loss of the learnt energy (val_ebm_loss) beside that of the zero energy, the
        standardised Gaussian (val_sm_gauss). The learnt prior generalises only while it is the lower; the fixed
        backbone's own losses would not change."""
        if self.hp["objective"] != "score_matching":
            return super().test_step(data)
        inputs = self.prior_inputs(self.to_unit(self.posterior_samples(keras.utils.unpack_x_y_sample_weight(data)[0])))
        return self._update({"ebm_loss": self.score_matching_loss(*inputs),
                             "sm_gauss": self.score_matching_loss(*inputs, learnt=False)})

    def marginal_energy(self, z, t):
        """M(z_t, t) = |z|^2 / 2 + E(sqrt(1 - beta_{t+1}) z, t) / beta_{t+1} (``energy_scale``): the terms of
        segment t's conditional energy (``chain_energy``) that depend on z_t alone, i.e. the chain's model of the
        marginal -log p(z_t) + const (the tether to z_{t+1} is the forward diffusion's own)."""
        beta = ops.take(self.beta, t)
        return 0.5 * ops.sum(z ** 2, axis=-1) + self.energy(ops.sqrt(1 - beta)[:, None] * z, t) * self.energy_scale(t)

    def score_matching_loss(self, u0, t, eps, learnt: bool = True):
        """Denoising score matching of ``marginal_energy`` per example: z_t = sqrt(1 - v_t) u0 + sqrt(v_t) eps
        (v_t = 1 - alpha_bar_t, at least score_min_noise^2), loss |sqrt(v_t) dM/dz_t - eps|^2 (Vincent 2011), a
        regression without Langevin chains; the zero energy (M = |z|^2 / 2, the standardised Gaussian; ``learnt``
        false) is its baseline."""
        v = ops.take(self.score_var, t)[:, None]
        z = ops.sqrt(1 - v) * u0 + ops.sqrt(v) * eps
        with tf.GradientTape() as tape:
            tape.watch(z)
            m = self.marginal_energy(z, t) if learnt else 0.5 * ops.sum(z ** 2, axis=-1)
        return ops.sum((ops.sqrt(v) * tape.gradient(m, z) - eps) ** 2, axis=-1)

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
                         noise: float = 1.0, seed: int = 0, start: int | None = None, start_noise: float = 1.0,
                         data_term: str = "noisy"):
        """Diffuse the encoder's mean to segment ``start`` (default T // 4, at least 1), then denoise segment
        by segment with conditional Langevin plus data consistency on each z_t = y / sqrt(1 - beta)
        (``data_term`` noisy) or on sqrt(alpha_bar_t) z_t, the mean of z_0 given z_t under the N(0, I) base
        (denoised: the decoder sees a latent of the data's scale at every segment, after DPS, Chung et al. 2023).
        ``start_noise`` scales the noise of that diffusion and of each segment's initial draw (1 = as in
        training; 0 = deterministic, the encoder's mean shrunk as the diffusion's mean)."""
        if data_term not in DATA_TERMS:
            raise ValueError(f"unknown data term {data_term!r} (expected one of {', '.join(DATA_TERMS)})")
        start = max(1, self.segments // 4) if start is None else min(start, self.segments)
        def make():
            fit = self.data_energy(observe, weight)

            def energy(y, cond):
                t = cond[1]
                z = y / ops.sqrt(1 - ops.take(self.beta, t))[:, None]
                if data_term == "denoised":
                    z = z * ops.sqrt(ops.take(self.alpha_bar, t))[:, None]
                return self.chain_energy(y, cond) + fit(z, cond[2], cond[3])
            return LangevinSampler(energy, steps, step_size, noise)

        chain = self.cached_chain((observe, steps, step_size, weight, noise, data_term), make)
        mean = self.to_unit(self.encode(x)[0])
        ab = float(self.alpha_bar[start])
        z = ab ** 0.5 * mean + start_noise * (1 - ab) ** 0.5 * tf.random.stateless_normal(tf.shape(mean), [seed, 11])
        u = self.reverse(chain, z, start, seed, (tf.cast(y_obs, tf.float32), tf.cast(x, tf.float32)),
                         start_noise)[0]
        return self.from_unit(u)
