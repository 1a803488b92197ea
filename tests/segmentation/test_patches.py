"""Patch sampling with foreground oversampling, padding and spacing resampling."""
import numpy as np
import pytest

from ldseg_suite.data import patches


def _blob_case(shape=(60, 50), fg=((20, 26), (30, 35))):
    image = np.random.default_rng(0).random(shape + (1,)).astype(np.float32)
    label = np.zeros(shape, np.int32)
    label[fg[0][0]:fg[0][1], fg[1][0]:fg[1][1]] = 1
    return image, label


@pytest.mark.parametrize("fraction", [0.0, 0.33, 0.8])
def test_foreground_share_matches_fraction(fraction):
    image, label = _blob_case()
    rng = np.random.default_rng(1)
    points = patches.foreground_points(label, rng)
    n, centred, with_fg = 3000, 0, 0
    for _ in range(n):
        img, lab, c = patches.training_patch(image, label, (16, 16), rng, fraction, points)
        assert img.shape == (16, 16, 1) and lab.shape == (16, 16)
        centred += c
        with_fg += bool(lab.any())
        if c:
            assert lab.any()  # a centred patch holds its foreground voxel
    share = centred / n
    assert abs(share - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / n) + 1e-9
    # oversampling raises the share of patches that see foreground above uniform sampling's
    if fraction >= 0.33:
        assert with_fg / n > fraction


def test_small_cases_are_padded_to_the_patch():
    image, label = _blob_case((10, 40), fg=((2, 5), (3, 6)))
    img, lab, c = patches.random_patch(image, label, (16, 16), np.random.default_rng(0), True)
    assert img.shape == (16, 16, 1) and lab.shape == (16, 16) and c and lab.sum() == 9


def test_resample_round_trips_shape_and_values():
    vol = np.zeros((20, 20, 10), np.int32)
    vol[5:15, 4:12, 3:7] = 1
    up = patches.resample(vol, (1.0, 1.0, 2.0), (1.0, 1.0, 1.0), order=0)
    assert up.shape == (20, 20, 20)
    back = patches.resample(up, (1.0, 1.0, 1.0), (1.0, 1.0, 2.0), order=0)
    assert back.shape == vol.shape and (back == vol).mean() > 0.98
    assert patches.resample(vol, (1.0, 1.0, 2.0), (1.0, 1.0, 2.0), order=0) is vol
