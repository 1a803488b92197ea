"""Langevin dynamics on a known quadratic energy E(x) = |x - mu|^2 / (2 s^2), i.e. exp(-E) = N(mu, s^2)."""
import numpy as np
import pytest
import tensorflow as tf

from ldseg_suite.diffusion.langevin import LangevinSampler

MU, S = 2.0, 0.5


def energy(x, cond):
    return tf.reduce_sum((x - MU) ** 2, axis=-1) / (2 * S ** 2)


def test_a_noiseless_step_lowers_the_energy():
    x0 = tf.random.stateless_normal((64, 3), [0, 0]) * 3
    sampler = LangevinSampler(energy, steps=1, step_size=0.2, noise_scale=0.0)
    x1 = sampler(x0)["x"]
    assert np.all(energy(x1, None).numpy() < energy(x0, None).numpy())


def test_chain_samples_the_target_and_does_not_retrace():
    sampler = LangevinSampler(energy, steps=400, step_size=0.1, capture=True)
    out = sampler(tf.zeros((4000, 1)), None, seed=1)
    x = out["x"].numpy()
    assert x.mean() == pytest.approx(MU, abs=0.03)
    assert x.std() == pytest.approx(S, rel=0.05)
    assert out["trajectory"].shape == (400, 4000, 1)
    again = sampler(tf.zeros((4000, 1)), None, seed=1)["x"].numpy()
    np.testing.assert_array_equal(x, again)
    assert sampler.tracing_count == 1


def test_next_seed_moves_with_the_generator_counter():
    """The latent and pixel EBMs draw their training noise with stateless ops seeded by ``next_seed``: every call
    must give a new seed (the generator's seed alone, ``next()[0]``, repeated the same noise at every step)."""
    import keras

    from ldseg_suite.diffusion.langevin import next_seed

    gen = keras.random.SeedGenerator(3)
    seeds = [int(next_seed(gen)) for _ in range(5)]
    assert len(set(seeds)) == 5
    other = keras.random.SeedGenerator(4)
    assert int(next_seed(other)) not in seeds
