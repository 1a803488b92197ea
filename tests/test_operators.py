"""Forward operators of the inverse problems: adjoint identities and known cases."""
import numpy as np
import pytest

from ldseg_suite.inverse.ct import ParallelBeam
from ldseg_suite.inverse.mri import MaskedFourier, poisson_disc_mask


def rel_err(a, b):
    return abs(a - b) / max(abs(a), abs(b))


def test_poisson_disc_mask_density_and_centre():
    mask = poisson_disc_mask((32, 32), acceleration=4, seed=0, calib=6)
    assert 0.18 < mask.mean() < 0.32
    assert mask[13:19, 13:19].all()
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 16, xx - 16)
    assert mask[r < 8].mean() > mask[r > 12].mean()  # variable density
    np.testing.assert_array_equal(mask, poisson_disc_mask((32, 32), acceleration=4, seed=0, calib=6))


def test_masked_fourier_adjoint_identity():
    rng = np.random.default_rng(0)
    op = MaskedFourier(poisson_disc_mask((16, 16), 4, seed=1, calib=4))
    x = rng.standard_normal((16, 16, 3)).astype(np.float32)
    y = (rng.standard_normal((16, 16, 3)) + 1j * rng.standard_normal((16, 16, 3))).astype(np.complex64)
    lhs = float(np.real(np.sum(np.asarray(op.forward(x)) * np.conj(y))))
    rhs = float(np.sum(x * np.asarray(op.adjoint(y))))
    assert rel_err(lhs, rhs) < 1e-4


def test_full_mask_fourier_is_orthonormal():
    op = MaskedFourier(np.ones((8, 8), bool))
    x = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(op.adjoint(op.forward(x))), x, atol=1e-5)


@pytest.mark.parametrize("views", [18, 7])
def test_parallel_beam_adjoint_identity(views):
    rng = np.random.default_rng(0)
    op = ParallelBeam(16, views)
    x = rng.standard_normal((16, 16, 2)).astype(np.float32)
    y = rng.standard_normal(tuple(op.forward(x).shape)).astype(np.float32)
    lhs = float(np.sum(np.asarray(op.forward(x)) * y))
    rhs = float(np.sum(x * np.asarray(op.adjoint(y))))
    assert rel_err(lhs, rhs) < 1e-4


def test_parallel_beam_line_integrals_of_a_disc():
    n = 32
    yy, xx = np.mgrid[:n, :n]
    disc = (np.hypot(yy - 15.5, xx - 15.5) <= 8).astype(np.float32)
    sino = np.asarray(ParallelBeam(n, 6).forward(disc))
    centre = sino[:, sino.shape[1] // 2]
    np.testing.assert_allclose(centre, 17.0, rtol=0.1)  # a chord through the centre is about the diameter
    np.testing.assert_allclose(sino.sum(1), disc.sum(), rtol=0.02)  # every view integrates the whole mass
