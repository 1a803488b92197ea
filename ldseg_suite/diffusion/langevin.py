"""Short-run Langevin dynamics on an energy, the whole chain in one ``tf.function``.

x_{k+1} = x_k - (step_size^2 / 2) * dE/dx(x_k) + noise_scale * step_size * N(0, I)

``noise_scale = 1`` samples exp(-E) (for small steps); ``0`` is gradient descent on E. Used by the
energy-based models (EBM, LEBM, LSD-EBM) for prior, posterior and pixel-space sampling.
"""
from __future__ import annotations

import tensorflow as tf


def next_seed(generator):
    """A fresh int32 seed for stateless ops from a ``keras.random.SeedGenerator``: its state is (seed, counter)
    and only the counter moves, so the seed alone (``next()[0]``) would repeat the same noise at every step."""
    state = tf.cast(generator.next(), tf.int64)
    return tf.cast((state[0] * 1000003 + state[1]) % 2147483647, tf.int32)


class LangevinSampler:
    """``sampler(x0, cond, seed, scale) -> {"x": final, "trajectory": (steps, ...) if capture}``;
    ``energy_fn(x, cond)`` returns one energy per example; ``cond`` may be a tuple of tensors.
    ``scale`` (broadcastable to x, default 1) multiplies the step size per example,
    e.g. by the noise level of each example's diffusion segment."""

    def __init__(self, energy_fn, steps: int = 60, step_size: float = 0.1, noise_scale: float = 1.0,
                 capture: bool = False, jit_compile: bool = False):
        self.energy_fn, self.steps, self.step_size = energy_fn, int(steps), float(step_size)
        self.noise_scale, self.capture = float(noise_scale), capture
        self._loop = tf.function(self._run, jit_compile=jit_compile)

    @property
    def tracing_count(self) -> int:
        return self._loop.experimental_get_tracing_count()

    def __call__(self, x0, cond=None, seed=0, scale=1.0):
        cond = tf.zeros([0]) if cond is None else tf.nest.map_structure(tf.convert_to_tensor, cond)
        return self._loop(tf.cast(x0, tf.float32), cond, tf.cast(seed, tf.int32), tf.cast(scale, tf.float32))

    def _run(self, x, cond, seed, scale):
        step = self.step_size * scale
        traj = tf.TensorArray(tf.float32, size=self.steps if self.capture else 0, element_shape=x.shape)

        def body(i, x, traj):
            with tf.GradientTape() as tape:
                tape.watch(x)
                energy = tf.reduce_sum(self.energy_fn(x, cond))
            grad = tape.gradient(energy, x)
            noise = tf.random.stateless_normal(tf.shape(x), tf.stack([seed, i]))
            x = x - 0.5 * step ** 2 * grad + self.noise_scale * step * noise
            if self.capture:
                traj = traj.write(i, x)
            return i + 1, x, traj

        _, x, traj = tf.while_loop(lambda i, *_: i < self.steps, body, (tf.constant(0), x, traj),
                                   maximum_iterations=self.steps)
        out = {"x": x}
        if self.capture:
            out["trajectory"] = traj.stack()
        return out
