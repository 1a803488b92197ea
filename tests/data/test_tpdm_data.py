"""The shipped TPDM volumes in data/tpdm/: format, value range, content, axis convention and the CT split.

Axis convention (RAS+ voxel order): axis 0 = left -> right (sagittal slices x[i]), axis 1 = posterior -> anterior
(coronal x[:, j]), axis 2 = inferior -> superior (axial x[:, :, k]).
"""
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

TPDM = Path(__file__).resolve().parents[2] / "data" / "tpdm"
NAMES = ("colin27_t1", "mni152_t1", "head_ct_train", "head_ct_test")
BRAINS = ("colin27_t1", "mni152_t1")
SIZES = [64] + ([128] if (TPDM / "128").is_dir() else [])


def folder(size):
    return TPDM if size == 64 else TPDM / str(size)


def load(name, size=64):
    img = nib.load(folder(size) / f"{name}.nii.gz")
    return img, np.asarray(img.dataobj)


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_format_range_and_content(name, size):
    img, x = load(name, size)
    assert x.shape == (size,) * 3 and x.dtype == np.float32 and img.get_data_dtype() == np.float32
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert x.std() > 0.05
    aff = img.affine
    spacing = np.diag(aff)[:3]
    assert np.allclose(aff, np.diag([*spacing, 1.0])) and (spacing > 0.5).all() and (spacing < 5.0).all()
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    assert (folder(size) / f"{name}.nii.gz").stat().st_size < 3e6


@pytest.mark.parametrize("name", BRAINS)
def test_brain_fills_the_cube_centred_and_left_right_symmetric(name):
    img, x = load(name)
    assert np.allclose(np.diag(img.affine)[:3], np.diag(img.affine)[0])  # isotropic voxels
    fg = x > 0.1
    idx = np.argwhere(fg)
    extent = idx.max(0) - idx.min(0) + 1
    assert extent.max() >= 56  # the longest extent (posterior-anterior) nearly fills the cube
    assert extent[1] > extent[0] and extent[1] > extent[2]  # a brain is longer front-to-back than wide or tall
    centre = idx.mean(0)
    assert (np.abs(centre - 31.5) < 5).all()
    # mirroring left-right changes a brain least: only axis 0 is the left-right axis
    lr, ap, si = corr(x, x[::-1]), corr(x, x[:, ::-1]), corr(x, x[:, :, ::-1])
    assert lr > 0.9 and lr > ap + 0.05 and lr > si + 0.05


def test_brains_are_two_different_subjects_on_comparable_grids():
    (ia, a), (ib, b) = load("colin27_t1"), load("mni152_t1")
    assert abs(ia.affine[0, 0] - ib.affine[0, 0]) < 0.2  # both ~3 mm: Colin27 trains, MNI152 tests
    assert not np.allclose(a, b)
    assert 0.5 < corr(a, b) < 0.99  # same anatomy, same orientation, not the same image


def test_ct_halves_differ_continue_each_other_and_share_the_in_plane_grid():
    (itr, tr), (ite, te) = load("head_ct_train"), load("head_ct_test")
    assert np.allclose(itr.affine, ite.affine)
    assert not np.allclose(tr, te) and np.abs(tr - te).mean() > 0.02
    # train = lower half, test = upper half: the train's top slice continues into the test's bottom slice
    top_bottom = corr(tr[:, :, -1], te[:, :, 0])
    assert top_bottom > 0.9
    assert top_bottom > corr(tr[:, :, 0], te[:, :, 0]) + 0.1 and top_bottom > corr(tr[:, :, -1], te[:, :, -1]) + 0.1
    # the upper half narrows towards the vertex, the head is centred left-right and mirror-symmetric there
    area = (te > 0.3).sum(axis=(0, 1))
    assert area[-1] < 0.2 * area[0]
    for x in (tr, te):
        idx = np.argwhere(x > 0.3)
        assert abs(idx[:, 0].mean() - 31.5) < 4
        assert corr(x, x[::-1]) > corr(x, x[:, ::-1]) + 0.1


def test_ct_window_air_and_bone():
    _, tr = load("head_ct_train")
    assert (tr == 0).mean() > 0.3  # air (<= -1000 HU) outside the head is exactly 0
    assert (tr > 0.75).mean() > 0.005  # dense bone (>= ~875 HU) is there: skull base, teeth
    water = tr[(tr > 0.35) & (tr < 0.5)]  # soft tissue and brain, ~0..250 HU -> 0.4..0.5
    assert water.size > 0.1 * tr.size


def test_notice_and_licence_files_ship_with_the_volumes():
    notice = (TPDM / "NOTICE.md").read_text()
    assert "Louis Collins" in notice and "GPL" in notice and "Chris Rorden" in notice
    assert "GNU GENERAL PUBLIC LICENSE" in (TPDM / "LICENSE-GPL-2").read_text()
