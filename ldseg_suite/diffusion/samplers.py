"""DDPM and DDIM reverse diffusion, the whole loop inside one ``tf.function``.

A sampler knows nothing of the method that calls it: it takes a noise-prediction callable
``eps_fn(x_t, cond, t) -> eps`` (``t`` an int32 vector of length batch), the schedule table
``alphas_cumprod`` and the starting noise ``x_T``. It is traced once per input shape; later calls with the
same shapes reuse the graph (``tracing_count`` lets a test check that). Randomness is stateless:
``seed`` (an int) and the step index give the noise, so the same seed gives the same result.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ldseg_suite.diffusion.schedules import ddim_timesteps


def predict_x0(x, eps, ab, clip):
    """Clean-sample estimate from x_t and the predicted noise; optionally clipped to [-clip, clip]."""
    x0 = (x - tf.sqrt(1.0 - ab) * eps) / tf.sqrt(ab)
    if clip is not None:
        x0 = tf.clip_by_value(x0, -clip, clip)
        eps = (x - tf.sqrt(ab) * x0) / tf.sqrt(1.0 - ab)
    return x0, eps


def ddim_step(x, eps, ab, ab_prev, eta, noise, clip=None):
    """One DDIM update x_t -> x_prev (Song et al. 2021, eq. 12). Returns (x_prev, x0_hat)."""
    x0, eps = predict_x0(x, eps, ab, clip)
    sigma = eta * tf.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    direction = tf.sqrt(tf.maximum(1.0 - ab_prev - sigma ** 2, 0.0)) * eps
    return tf.sqrt(ab_prev) * x0 + direction + sigma * noise, x0


def ddpm_step(x, eps, ab, ab_prev, noise, clip=None):
    """One ancestral DDPM update with the posterior q(x_{t-1} | x_t, x0_hat) (Ho et al. 2020)."""
    x0, _ = predict_x0(x, eps, ab, clip)
    alpha = ab / ab_prev
    beta = 1.0 - alpha
    mean = (tf.sqrt(ab_prev) * beta * x0 + tf.sqrt(alpha) * (1.0 - ab_prev) * x) / (1.0 - ab)
    var = beta * (1.0 - ab_prev) / (1.0 - ab)
    return mean + tf.sqrt(var) * noise, x0


class DiffusionSampler:
    """Reverse diffusion from ``x_T`` to x_0 with DDPM (all T steps) or DDIM (``steps``, ``eta``).

    ``capture=True`` also returns the trajectory of x_t and of the x_0 estimates (one entry per step),
    gathered in TensorArrays inside the compiled loop.
    """

    def __init__(self, eps_fn, alphas_cumprod, kind: str = "DDIM", steps: int = 15, eta: float = 0.0,
                 clip: float | None = None, capture: bool = False, jit_compile: bool = False):
        kind = kind.upper()
        if kind not in ("DDIM", "DDPM"):
            raise ValueError(f"sampler must be DDIM or DDPM, got {kind!r}")
        T = len(alphas_cumprod)
        ts = ddim_timesteps(T, steps) if kind == "DDIM" else np.arange(T - 1, -1, -1, dtype=np.int32)
        acp = np.asarray(alphas_cumprod, np.float32)
        prev = np.concatenate([acp[ts[1:]], [1.0]]).astype(np.float32)
        self.eps_fn, self.kind, self.eta, self.clip, self.capture = eps_fn, kind, float(eta), clip, capture
        self.timesteps = tf.constant(ts)
        self._ab = tf.constant(acp[ts])
        self._ab_prev = tf.constant(prev)
        self.num_steps = len(ts)
        self._loop = tf.function(self._run, jit_compile=jit_compile)
        self._invert_loop = tf.function(self._run_inversion, jit_compile=jit_compile)

    @property
    def tracing_count(self) -> int:
        return self._loop.experimental_get_tracing_count()

    def __call__(self, x_T, cond=None, seed: int = 0):
        x_T = tf.cast(x_T, tf.float32)
        cond = tf.zeros([0]) if cond is None else tf.cast(cond, tf.float32)  # schedules and loop stay float32
        return self._loop(x_T, cond, tf.constant(seed, tf.int32))

    def invert(self, x0, cond=None):
        """Deterministic DDIM inversion x_0 -> x_T over the same timesteps (the DiffAE stochastic encoder).

        Each step runs the eta = 0 update backwards, using the noise predicted at the current point; decoding
        the result with ``eta = 0`` returns close to ``x0`` when the steps are fine enough.
        """
        cond = tf.zeros([0]) if cond is None else tf.cast(cond, tf.float32)
        return self._invert_loop(tf.cast(x0, tf.float32), cond)

    def _run_inversion(self, x, cond):
        n = self.num_steps
        batch = tf.shape(x)[0]
        ts = tf.reverse(self.timesteps, [0])                 # ascending: 0 ... T-1
        ab_next_all = tf.reverse(self._ab, [0])               # alpha_bar at each target timestep
        ab_cur_all = tf.concat([[1.0], ab_next_all[:-1]], 0)  # start from the clean sample (alpha_bar = 1)
        t_eval = tf.concat([ts[:1], ts[:-1]], 0)              # the noise is predicted at the current point

        def body(i, x):
            ab_cur, ab_next = ab_cur_all[i], ab_next_all[i]
            eps = self.eps_fn(x, cond, tf.fill([batch], t_eval[i]))
            x0 = (x - tf.sqrt(1.0 - ab_cur) * eps) / tf.sqrt(ab_cur)
            return i + 1, tf.ensure_shape(tf.sqrt(ab_next) * x0 + tf.sqrt(1.0 - ab_next) * eps, x.shape)

        _, x = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), x), maximum_iterations=n)
        return x

    def _run(self, x, cond, seed):
        n = self.num_steps
        batch = tf.shape(x)[0]
        size = n if self.capture else 0
        traj_x = tf.TensorArray(tf.float32, size=size, element_shape=x.shape)
        traj_x0 = tf.TensorArray(tf.float32, size=size, element_shape=x.shape)

        def body(i, x, traj_x, traj_x0):
            t = self.timesteps[i]
            ab, ab_prev = self._ab[i], self._ab_prev[i]
            eps = self.eps_fn(x, cond, tf.fill([batch], t))
            noise = tf.random.stateless_normal(tf.shape(x), tf.stack([seed, i]))
            if self.kind == "DDIM":
                x_next, x0 = ddim_step(x, eps, ab, ab_prev, self.eta, noise, self.clip)
            else:  # the final step has ab_prev = 1, so zero variance: no noise is added
                x_next, x0 = ddpm_step(x, eps, ab, ab_prev, noise, self.clip)
            x_next = tf.ensure_shape(x_next, x.shape)
            x0 = tf.ensure_shape(x0, x.shape)
            if self.capture:
                traj_x, traj_x0 = traj_x.write(i, x_next), traj_x0.write(i, x0)
            return i + 1, x_next, traj_x, traj_x0

        _, x, traj_x, traj_x0 = tf.while_loop(
            lambda i, *_: i < n, body, (tf.constant(0), x, traj_x, traj_x0), maximum_iterations=n)
        out = {"x0": x}
        if self.capture:
            out["trajectory"] = traj_x.stack()
            out["x0_trajectory"] = traj_x0.stack()
        return out


def initial_noise(shape, seed: int):
    """x_T for a given seed (independent of the per-step noise streams)."""
    return tf.random.stateless_normal(shape, tf.constant([seed, -1], tf.int32))
