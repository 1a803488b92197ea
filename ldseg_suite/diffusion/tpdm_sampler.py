"""TPDM sampling: two perpendicular 2D score models drive one 3D predictor-corrector chain.

After Lee et al., "Improving 3D Imaging with Pre-Trained Perpendicular 2D Diffusion Models" (ICCV 2023).
On step i the volume (D, H, W) is cut into the slices of one plane, which one model scores in mini-batches
of ``slice_batch`` slices; the scores are stacked back into a volume (all inside the compiled loop of
:class:`~ldseg_suite.diffusion.ve_sde.VESampler`, whose predictor and corrector are reused unchanged).
Which model acts on step i comes from :func:`k_schedule`. On the steps of ``dc_steps`` the predictor adds
diffusion posterior sampling (DPS, Chung et al. 2023): with x0_hat = x + sigma^2 score(x),

    x_{i+1} <- x_{i+1} - weight * grad_x ||y - A(x0_hat)||.

``jacobian='exact'`` differentiates through the network; ``'identity'`` takes d x0_hat / dx = I (no
backward pass through the network: a cheaper, common approximation).

Optionally (``projection`` > 0, with ``pinv`` a (pseudo-)inverse of A) the same steps also move the sample
towards the measurements as in Song et al. (ICLR 2022): x_{i+1} <- x_{i+1} + projection *
pinv(y_{i+1} - A x_{i+1}) with y_{i+1} = y + s_{i+1} A z (s_{i+1} the noise level of the sample: sigma_{i+1}
for reverse diffusion, eta sigma_{i+1} for the Tweedie predictor); projection = 1 with an exact pseudo-inverse
is a hard data-consistency projection.

With ``predictor='tweedie'`` and ``eta=0`` (no corrector) a step is x_{i+1} = P(D_m(x_i, sigma_i)): denoise
every slice of model m's plane at level sigma_i, then project onto {A x = y}; an annealed plug-and-play
iteration with the two perpendicular slice denoisers taking turns. It returns a point estimate (close to the
posterior mean when it converges), which for PSNR beats a posterior sample: a sample's error in the directions
the measurements do not fix is about twice the posterior mean's.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ldseg_suite.diffusion.ve_sde import VESampler

PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}  # the axis a plane's slices are taken along


def k_schedule(steps: int, k: float, seed: int = 0) -> np.ndarray:
    """Boolean (steps,): True where the auxiliary model acts.

    An integer K: the auxiliary acts on every K-th step (steps K-1, 2K-1, ...), the primary on the others;
    a non-integer K: the auxiliary acts with probability 1 / K on each step (seeded). K = 0 (or any K
    below 1) means the primary on every step, K = 1 the auxiliary on every step. With K > 1 the last step
    is always the primary's, so the chain ends with a data-consistency step.
    """
    k = float(k)
    if k < 1.0:
        return np.zeros(steps, bool)
    if k == 1.0:
        return np.ones(steps, bool)
    if k.is_integer():
        aux = (np.arange(steps) + 1) % int(k) == 0
    else:
        aux = np.random.default_rng(seed).random(steps) < 1.0 / k
    aux[-1] = False
    return aux


def slice_scores(score, volume, sigma, axis: int, slice_batch: int):
    """Apply a 2D ``score(slices (B, H, W, 1), sigma)`` to every slice of ``volume`` along ``axis``."""
    perm = [axis] + [a for a in range(3) if a != axis]
    slices = tf.transpose(volume, perm)[..., None]
    n = slices.shape[0]
    parts = [score(slices[s:s + slice_batch], sigma) for s in range(0, n, slice_batch)]
    stacked = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
    return tf.transpose(stacked[..., 0], np.argsort(perm).tolist())


def _norm(r):
    if r.dtype.is_complex:
        return tf.sqrt(tf.reduce_sum(tf.math.real(r * tf.math.conj(r))))
    return tf.sqrt(tf.reduce_sum(tf.square(r)))


class TPDMSampler(VESampler):
    """Predictor-corrector sampling of one volume (D, H, W) with a primary and an auxiliary 2D score model.

    ``primary`` / ``auxiliary``: callables ``score(slices, sigma)``; ``*_axis``: the axis their slices are
    taken along (see :data:`PLANES`); ``use_auxiliary``: boolean per step (:func:`k_schedule`).
    ``operator`` (with ``forward``), ``y`` and ``weight`` turn on DPS on the steps ``dc_steps`` (default:
    the primary's steps); ``pinv`` and ``projection`` the projection step. Without an operator the sampler
    is unconditional.
    """

    def __init__(self, primary, auxiliary, sigmas, primary_axis: int, auxiliary_axis: int, use_auxiliary,
                 operator=None, y=None, weight: float = 0.0, dc_steps=None, jacobian: str = "identity",
                 pinv=None, projection: float = 0.0, slice_batch: int = 64, snr: float = 0.16,
                 corrector_steps: int = 1, capture: bool = False, predictor: str = "reverse", eta: float = 1.0,
                 aux_sigma_scale: float = 1.0, noise_std: float = 0.0, predictor_noise: bool = True):
        super().__init__(self._score, sigmas, snr, corrector_steps, capture, predictor=predictor, eta=eta)
        use_auxiliary = np.asarray(use_auxiliary, bool)
        if use_auxiliary.shape != (self.num_steps,):
            raise ValueError(f"use_auxiliary has shape {use_auxiliary.shape}; expected ({self.num_steps},)")
        if jacobian not in ("exact", "identity"):
            raise ValueError(f"jacobian = {jacobian}: expected exact or identity")
        if aux_sigma_scale <= 0:
            raise ValueError(f"aux_sigma_scale = {aux_sigma_scale}: expected > 0")
        self.models = (primary, auxiliary)
        self.axes = (int(primary_axis), int(auxiliary_axis))
        self.use_auxiliary = tf.constant(use_auxiliary)
        self.only = 1 if use_auxiliary.all() else 0 if not use_auxiliary.any() else None
        self.slice_batch = int(slice_batch)
        self.operator, self.weight, self.jacobian = operator, float(weight), jacobian
        self.y = None if y is None else tf.constant(y)
        self.pinv, self.projection = pinv, float(projection)
        self.aux_sigma_scale, self.noise_std = float(aux_sigma_scale), float(noise_std)
        # no noise in the predictor: carry its mean (reference TPDM), or the Tweedie predictor with eta = 0
        self.noise_free = not predictor_noise or (predictor == "tweedie" and eta == 0)
        dc = ~use_auxiliary if dc_steps is None else np.asarray(dc_steps, bool)
        self.dc_steps = tf.constant(dc)

    def model_sigma(self, sigma, i):
        """The noise level the model of step i is told: sigma, or aux_sigma_scale * sigma on the auxiliary's steps."""
        if self.aux_sigma_scale == 1.0:
            return sigma
        return tf.where(self.use_auxiliary[i], self.aux_sigma_scale * sigma, sigma)

    def _score(self, x, sigma, i):
        """The score of step i's model on all slices of its plane, at noise level :meth:`model_sigma`."""
        sigma = self.model_sigma(sigma, i)

        def run(which):
            return lambda: slice_scores(self.models[which], x, sigma, self.axes[which], self.slice_batch)

        if self.models[0] is self.models[1] and self.axes[0] == self.axes[1]:
            return run(0)()
        if self.only is not None:  # one model on every step: trace only that network
            return run(self.only)()
        return tf.cond(self.use_auxiliary[i], run(1), run(0))

    def _residual_norm(self, x0):
        return _norm(self.y - tf.cast(self.operator.forward(x0), self.y.dtype))

    def _exact_dps(self, x, sigma, i):
        """(score, grad_x ||y - A(x0_hat(x))||), differentiating through the network."""
        s = self.model_sigma(sigma, i)
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = self._score(x, sigma, i)
            norm = self._residual_norm(x + s ** 2 * score)
        return score, tape.gradient(norm, x)

    def _identity_dps(self, x0):
        """grad ||y - A(x0)|| with respect to x0 (= grad_x when d x0_hat / dx is taken as I)."""
        with tf.GradientTape() as tape:
            tape.watch(x0)
            norm = self._residual_norm(x0)
        return tape.gradient(norm, x0)

    def predictor(self, x, sigma, sigma_next, i, seed):
        s = self.model_sigma(sigma, i)
        if self.operator is None:
            score, grad = self._score(x, sigma, i), tf.zeros_like(x)
        elif self.jacobian == "exact":
            score, grad = tf.cond(self.dc_steps[i], lambda: self._exact_dps(x, sigma, i),
                                  lambda: (self._score(x, sigma, i), tf.zeros_like(x)))
        else:  # one network call; only the operator is differentiated
            score = self._score(x, sigma, i)
            grad = tf.cond(self.dc_steps[i], lambda: self._identity_dps(x + s ** 2 * score),
                           lambda: tf.zeros_like(x))
        gain, std, level = self.step_sizes(sigma, sigma_next)
        if self.predictor_kind == "tweedie":  # the Tweedie estimate at the level the model was told
            gain = s ** 2
        mean = x + gain * score - self.weight * grad
        if not self.noise_free:
            z = tf.random.stateless_normal(tf.shape(x), tf.stack([seed, (self.corrector_steps + 1) * i]))
            sample = mean + std * z
        else:  # carry the mean, as the reference implementation of TPDM does (noise only from the corrector)
            sample, level = mean, 0.0 * level
        if self.operator is None or self.pinv is None or not self.projection:
            return sample, mean
        return tf.cond(self.dc_steps[i], lambda: self._project(sample, mean, level, sigma, i, seed),
                       lambda: (sample, mean))

    def _pinv(self, r, sigma):
        """pinv(r), damped for noisy measurements: argmin ||A d - r||^2 + (noise_std / sigma)^2 ||d||^2."""
        if not self.noise_std:
            return self.pinv(r)
        return self.pinv(r, (self.noise_std / sigma) ** 2)

    def _project(self, sample, mean, level, sigma, i, seed):
        """Move the sample towards y + level A z (level: the sample's noise level), and the mean towards y."""
        forward = lambda v: tf.cast(self.operator.forward(v), self.y.dtype)  # noqa: E731
        mean = mean + self.projection * self._pinv(self.y - forward(mean), sigma)
        if self.noise_free:
            return mean, mean
        z = tf.random.stateless_normal(tf.shape(sample), tf.stack([seed, -2 - i]))
        y_noisy = self.y + tf.cast(level, self.y.dtype) * forward(z)
        sample = sample + self.projection * self._pinv(y_noisy - forward(sample), sigma)
        return sample, mean
