"""VE-SDE predictor-corrector sampling with an analytic Gaussian score."""
import numpy as np
import pytest

from ldseg_suite.diffusion.ve_sde import VESampler, ve_sigmas

S = 0.5  # data ~ N(0, S^2): the score at noise level sigma is -x / (S^2 + sigma^2)


def gaussian_score(x, sigma, i):
    return -x / (S ** 2 + sigma ** 2)


def test_sigmas_are_geometric():
    s = ve_sigmas(0.01, 50.0, 100)
    assert s[0] == pytest.approx(50.0) and s[-1] == pytest.approx(0.01)
    np.testing.assert_allclose(s[1:] / s[:-1], (0.01 / 50.0) ** (1 / 99), rtol=1e-4)


@pytest.mark.parametrize("corrector_steps", [0, 1])
def test_output_variance_matches_the_target(corrector_steps):
    sampler = VESampler(gaussian_score, ve_sigmas(0.01, 20.0, 500), snr=0.16, corrector_steps=corrector_steps)
    x = sampler(sampler.initial_noise((2000, 4), 0), seed=0)["x0"].numpy()
    assert abs(x.mean()) < 0.03
    assert x.std() == pytest.approx(S, rel=0.05)


def test_seeded_no_retrace_and_trajectory():
    sampler = VESampler(gaussian_score, ve_sigmas(0.01, 5.0, 20), capture=True)
    x_T = sampler.initial_noise((8, 3), 1)
    a, b = sampler(x_T, seed=1), sampler(x_T, seed=1)
    np.testing.assert_array_equal(a["x0"], b["x0"])
    assert sampler.tracing_count == 1
    assert a["trajectory"].shape == (20, 8, 3)
    assert not np.allclose(a["x0"], sampler(x_T, seed=2)["x0"])
