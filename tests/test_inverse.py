import numpy as np
import pytest

from ldseg_suite.inverse.slices import SliceAverage, simulate_thick_slices


@pytest.mark.parametrize("factor, axis", [(4, -1), (2, 0)])
def test_slice_average_adjoint_identity(factor, axis):
    rng = np.random.default_rng(0)
    op = SliceAverage(factor, axis)
    x = rng.standard_normal((8, 6, 16)).astype(np.float32)
    y = rng.standard_normal(np.asarray(op.forward(x)).shape).astype(np.float32)
    lhs = float(np.sum(np.asarray(op.forward(x)) * y))
    rhs = float(np.sum(x * np.asarray(op.adjoint(y))))
    assert abs(lhs - rhs) / abs(lhs) < 1e-4


def test_thick_slice_simulation_averages_the_right_slices():
    vol = np.zeros((2, 2, 8), np.float32)
    vol[..., 1] = 4.0  # one bright slice in the first group of four
    vol[..., 6] = 8.0  # one in the second
    thick = simulate_thick_slices(vol, factor=4)
    np.testing.assert_allclose(thick[0, 0], [1, 1, 1, 1, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="not a multiple"):
        SliceAverage(3).forward(vol)
