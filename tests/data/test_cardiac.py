"""Cardiac cine phantom: determinism, anatomy and EF, sparse SAX indices, LAX planes, classical segmentation."""
import numpy as np
import pytest

from ldseg_suite import metrics
from ldseg_suite.data import cardiac


@pytest.fixture(scope="module")
def cases():
    return cardiac.make_cardiac_cases(4, seed=0)


def test_deterministic_by_seed_and_different_across_seeds():
    a, b, c = (cardiac.make_cardiac_case(s, size=32, slices=8, frames=4) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.labels, c.labels)
    assert a.image.shape == a.labels.shape == (32, 32, 8, 4)
    assert a.image.dtype == np.float32 and a.labels.dtype == np.uint8
    assert 0 <= a.image.min() and a.image.max() <= 1
    assert a.spacing == pytest.approx((4.0, 4.0, 14.0))  # the field of view is kept when the grid shrinks


def test_anatomy_intensities_and_ejection_fraction(cases):
    for case in cases:
        ed, es = case.labels[..., case.ed_frame], case.labels[..., case.es_frame]
        assert np.unique(ed).tolist() == [0, 1, 2, 3]
        assert case.ed_frame == 0 and case.es_frame == case.labels.shape[-1] // 2
        img = case.image[..., case.ed_frame]
        assert 0.8 < np.median(img[ed == 1]) < 1.0 and 0.8 < np.median(img[ed == 3]) < 1.0
        assert 0.2 < np.median(img[ed == 2]) < 0.4 and np.median(img[ed == 0]) < 0.5
        lv_slices = np.nonzero((ed == 1).any((0, 1)))[0]
        assert lv_slices[0] <= 1 and lv_slices[-1] < case.labels.shape[2] - 1  # base at the top, apex inside
        v = cardiac.case_volumes(case)
        assert v["edv"] > v["esv"] > 0 and 35 <= v["ef"] <= 70
        assert 40 < v["edv"] < 200
        vols = cardiac.volumes_ml(case.labels, case.spacing)
        assert vols["lv"].shape == (case.labels.shape[-1],) and vols["rv"][0] > vols["rv"][case.es_frame]
        assert vols["myo"].min() > 0.9 * vols["myo"].max()  # the myocardium is (nearly) incompressible
        assert cardiac.volumes_ml(es, case.spacing)["lv"] == pytest.approx(v["esv"])
    assert cardiac.ejection_fraction(100.0, 40.0) == pytest.approx(60.0)


def test_sax_observed():
    np.testing.assert_array_equal(cardiac.sax_observed(16), [0, 3, 6, 9, 12, 15])
    np.testing.assert_array_equal(cardiac.sax_observed(16, 4), [0, 4, 8, 12, 15])
    np.testing.assert_array_equal(cardiac.sax_observed(16, 2, missing=(4, 0, 15)), [0, 2, 6, 8, 10, 12, 14, 15])


def test_lax_planes_cut_through_the_heart(cases):
    from ldseg_suite.inverse import planes

    for case in cases[:2]:
        lab = case.labels[..., case.ed_frame]
        onehot = np.stack([(lab == c) for c in range(4)], -1).astype(np.float32)
        pl = cardiac.lax_planes(case)
        assert set(pl) == {"2ch", "3ch", "4ch"}
        for view, plane in pl.items():
            img = planes.sample_plane(onehot, *plane).numpy()
            iso = planes.trilinear(onehot, cardiac.lax_coords(case, view)).numpy()
            for sample in (img, iso):
                present = (sample > 0.5).sum((0, 1))
                assert present[1] > 10 and present[2] > 10, view
                if view == "4ch":
                    assert present[3] > 5
            # rows run base -> apex: LV blood appears in more rows of the isotropic image than of the slice-step one
            assert (iso[..., 1] > 0.5).any(1).sum() > (img[..., 1] > 0.5).any(1).sum()
        origin, u, v, _ = pl["4ch"]
        assert np.linalg.norm(origin - case.lv_centre) < 15  # both on the long axis, near the middle
        # the 4ch columns point at the RV, the 2ch ones are perpendicular (in mm)
        sp = np.asarray(case.spacing)
        w4, w2 = pl["4ch"][2] * sp, pl["2ch"][2] * sp
        assert abs(w4 @ w2) / np.linalg.norm(w4) / np.linalg.norm(w2) < 1e-6


def test_segment_by_intensity_matches_the_labels(cases):
    for case in cases[:3]:
        frames = [case.ed_frame, case.es_frame]
        seg = cardiac.segment_by_intensity(case.image[..., frames], spacing=case.spacing)
        for n, f in enumerate(frames):
            for c in (1, 2, 3):
                assert metrics.dice(seg[..., n] == c, case.labels[..., f] == c) > 0.85, (c, f)


def test_segmentation_keeps_the_ventricles_apart_when_interpolation_blurs_the_septum(cases):
    """Linear through-plane interpolation of every 3rd slice opens one-pixel gaps in the septum of these
    two phantoms at ED; 3D connected components alone then merged LV and RV into one pool (RV Dice 0)."""
    from scipy.interpolate import interp1d

    for case in (cases[1], cases[3]):
        truth = case.image[..., case.ed_frame]
        kept = cardiac.sax_observed(truth.shape[2], 3)
        blurred = interp1d(kept, truth[..., kept], axis=2)(np.arange(truth.shape[2]))
        seg = cardiac.segment_by_intensity(blurred, spacing=case.spacing)
        labels = case.labels[..., case.ed_frame]
        assert metrics.dice(seg == 1, labels == 1) > 0.85
        assert metrics.dice(seg == 3, labels == 3) > 0.7
