"""Samplers on a toy problem whose noise prediction is known exactly (Gaussian data)."""
import numpy as np
import pytest
import tensorflow as tf

from ldseg_suite.diffusion.samplers import DiffusionSampler, initial_noise
from ldseg_suite.diffusion.schedules import alphas_cumprod, betas, ddim_timesteps

MU, STD, T = 1.5, 0.5, 1000
ACP = alphas_cumprod(betas("linear", T, 1e-4, 0.02))


def exact_eps(x, cond, t):
    """E[eps | x_t] for data ~ N(MU, STD^2): the optimal noise prediction."""
    ab = tf.reshape(tf.gather(tf.constant(ACP), t), (-1, 1))
    var = ab * STD ** 2 + 1.0 - ab
    return tf.sqrt(1.0 - ab) * (x - tf.sqrt(ab) * MU) / var


def draw(sampler, n=4000, seed=0):
    return np.asarray(sampler(initial_noise((n, 1), seed), None, seed)["x0"])


def test_schedules():
    lin = betas("linear", 1000, 1e-4, 0.02)
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    cos = alphas_cumprod(betas("cosine", 1000))
    assert cos[0] > 0.999 and cos[-1] < 1e-3 and np.all(np.diff(cos) < 0)
    ts = ddim_timesteps(1000, 15)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 15 and np.all(np.diff(ts) < 0)


@pytest.mark.parametrize("kind, steps, eta", [("DDPM", T, 1.0), ("DDIM", T, 1.0), ("DDIM", T, 0.0)])
def test_samplers_reach_the_data_distribution(kind, steps, eta):
    x = draw(DiffusionSampler(exact_eps, ACP, kind=kind, steps=steps, eta=eta))
    assert x.mean() == pytest.approx(MU, abs=0.03)
    assert x.std() == pytest.approx(STD, rel=0.06)


def test_ddim_eta1_all_steps_matches_ddpm_distribution():
    ddpm = draw(DiffusionSampler(exact_eps, ACP, kind="DDPM"), seed=1)
    ddim = draw(DiffusionSampler(exact_eps, ACP, kind="DDIM", steps=T, eta=1.0), seed=2)
    assert ddim.mean() == pytest.approx(ddpm.mean(), abs=0.04)
    assert ddim.std() == pytest.approx(ddpm.std(), rel=0.06)
    qs = np.linspace(0.05, 0.95, 10)
    np.testing.assert_allclose(np.quantile(ddim, qs), np.quantile(ddpm, qs), atol=0.06)


def test_no_retrace_for_same_shape_and_seeded():
    s = DiffusionSampler(exact_eps, ACP, kind="DDIM", steps=10, eta=1.0, capture=True)
    a = s(initial_noise((8, 1), 3), None, 3)
    b = s(initial_noise((8, 1), 3), None, 3)
    c = s(initial_noise((8, 1), 4), None, 4)
    assert s.tracing_count == 1
    np.testing.assert_array_equal(a["x0"], b["x0"])
    assert not np.allclose(a["x0"], c["x0"])
    assert a["trajectory"].shape == (10, 8, 1) and a["x0_trajectory"].shape == (10, 8, 1)
    np.testing.assert_array_equal(a["trajectory"][-1], a["x0"])  # the last step is applied
    s(initial_noise((4, 1), 3), None, 3)
    assert s.tracing_count == 2  # a new shape traces once more


def test_ddim_inversion_then_decoding_is_near_identity():
    sampler = DiffusionSampler(exact_eps, ACP, kind="DDIM", steps=T, eta=0.0)
    x0 = tf.constant(np.linspace(MU - 2 * STD, MU + 2 * STD, 64, dtype=np.float32)[:, None])
    x_T = np.asarray(sampler.invert(x0))
    # for Gaussian data the probability-flow ODE maps x0 to its z-score
    np.testing.assert_allclose(x_T, (np.asarray(x0) - MU) / STD, atol=0.05)
    back = np.asarray(sampler(x_T, None, 0)["x0"])
    np.testing.assert_allclose(back, np.asarray(x0), atol=0.01)
