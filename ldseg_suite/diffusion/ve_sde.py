"""Variance-exploding SDE (Song et al. 2021): noise levels and a predictor-corrector sampler.

The sampler knows nothing of the method calling it: ``score_fn(x, sigma, i)`` returns the score at noise
level ``sigma`` on step ``i`` (so a caller such as TPDM can switch models by step). Predictor:

- ``'reverse'`` (reverse diffusion, Song et al. 2021): x <- x + (sigma^2 - sigma'^2) score + sqrt(sigma^2 -
  sigma'^2) z, a sample of the (approximate) posterior at the next level sigma';
- ``'tweedie'``: x <- x0_hat + eta sigma' z with the Tweedie estimate x0_hat = x + sigma^2 score = D(x, sigma)
  (the denoised image; eta = 1 re-noises it to level sigma' as in DDIM / DDS, eta = 0 keeps the denoised
  image: an annealed plug-and-play iteration that converges to a point estimate, not a sample).

Corrector: Langevin with step size from the signal-to-noise ratio ``snr``. The whole loop runs in one
``tf.function``; randomness is stateless and seeded. Both predictors end with the Tweedie estimate at the
last level (the last step goes to sigma' = 0).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

PREDICTORS = ("reverse", "tweedie")


def ve_sigmas(sigma_min: float, sigma_max: float, steps: int) -> np.ndarray:
    """Geometric noise levels from sigma_max down to sigma_min (``steps`` values, float32)."""
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), steps)).astype(np.float32)


def _norm(x):
    return tf.sqrt(tf.reduce_sum(tf.reshape(x, (tf.shape(x)[0], -1)) ** 2, axis=-1))


class VESampler:
    """Predictor-corrector sampling from x_T ~ N(0, sigma_max^2 I) to the data."""

    def __init__(self, score_fn, sigmas, snr: float = 0.16, corrector_steps: int = 1, capture: bool = False,
                 jit_compile: bool = False, predictor: str = "reverse", eta: float = 1.0):
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor = {predictor}: expected one of {', '.join(PREDICTORS)}")
        if eta < 0:
            raise ValueError(f"eta = {eta}: expected >= 0")
        self.score_fn, self.snr, self.capture = score_fn, float(snr), capture
        self.predictor_kind, self.eta = predictor, float(eta)
        self.corrector_steps = int(corrector_steps)
        sig = np.asarray(sigmas, np.float32)
        self.sigmas = tf.constant(sig)
        self.next_sigmas = tf.constant(np.concatenate([sig[1:], [0.0]]).astype(np.float32))
        self.num_steps = len(sig)
        self._loop = tf.function(self._run, jit_compile=jit_compile)

    @property
    def tracing_count(self) -> int:
        return self._loop.experimental_get_tracing_count()

    def initial_noise(self, shape, seed: int):
        return tf.random.stateless_normal(shape, tf.constant([seed, -1], tf.int32)) * self.sigmas[0]

    def __call__(self, x_T, seed: int = 0):
        return self._loop(tf.cast(x_T, tf.float32), tf.constant(seed, tf.int32))

    def corrector(self, x, sigma, i, seed):
        for k in range(self.corrector_steps):
            grad = self.score_fn(x, sigma, i)
            z = tf.random.stateless_normal(tf.shape(x), tf.stack([seed, (self.corrector_steps + 1) * i + 1 + k]))
            # batch-mean norms as in Song et al.'s reference: a per-example norm explodes the step for an
            # example whose score happens to be near zero
            step = 2.0 * (self.snr * tf.reduce_mean(_norm(z)) / tf.maximum(tf.reduce_mean(_norm(grad)), 1e-12)) ** 2
            x = x + step * grad + tf.sqrt(2.0 * step) * z
        return x

    def step_sizes(self, sigma, sigma_next):
        """(gain, std, level) of the predictor: mean = x + gain * score, sample = mean + std * z; level is the
        noise level of the sample (sigma_next for reverse diffusion, eta * sigma_next for 'tweedie')."""
        if self.predictor_kind == "tweedie":
            return sigma ** 2, self.eta * sigma_next, self.eta * sigma_next
        var = sigma ** 2 - sigma_next ** 2
        return var, tf.sqrt(var), sigma_next

    def predictor(self, x, sigma, sigma_next, i, seed):
        """One predictor step: returns (sample, mean); the last step returns its mean (no noise)."""
        gain, std, _ = self.step_sizes(sigma, sigma_next)
        mean = x + gain * self.score_fn(x, sigma, i)
        z = tf.random.stateless_normal(tf.shape(x), tf.stack([seed, (self.corrector_steps + 1) * i]))
        return mean + std * z, mean

    def _run(self, x, seed):
        n = self.num_steps
        traj = tf.TensorArray(tf.float32, size=n if self.capture else 0, element_shape=x.shape)

        def body(i, x, mean, traj):
            sigma, sigma_next = self.sigmas[i], self.next_sigmas[i]
            x = self.corrector(x, sigma, i, seed) if self.corrector_steps else x
            x, mean = self.predictor(x, sigma, sigma_next, i, seed)
            if self.capture:
                traj = traj.write(i, mean)
            return i + 1, tf.ensure_shape(x, mean.shape), tf.ensure_shape(mean, x.shape), traj

        _, _, mean, traj = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), x, x, traj),
                                         maximum_iterations=n)
        out = {"x0": mean}
        if self.capture:
            out["trajectory"] = traj.stack()
        return out
