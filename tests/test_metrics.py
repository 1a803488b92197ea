import numpy as np
import pytest

from ldseg_suite import metrics


@pytest.fixture
def pair():
    # 10 pixels: TP = 3, FP = 1, FN = 2, TN = 4
    pred = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    target = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], bool)
    return pred, target


def test_confusion_and_overlap_metrics(pair):
    pred, target = pair
    assert metrics.confusion(pred, target) == (3, 1, 2, 4)
    assert metrics.dice(pred, target) == pytest.approx(6 / 9)
    assert metrics.iou(pred, target) == pytest.approx(3 / 6)
    assert metrics.volumetric_similarity(pred, target) == pytest.approx(1 - 1 / 9)
    assert metrics.sensitivity(pred, target) == pytest.approx(3 / 5)
    assert metrics.specificity(pred, target) == pytest.approx(4 / 5)
    # p_o = 7/10; p_e = (4*5 + 6*5) / 100 = 0.5
    assert metrics.cohen_kappa(pred, target) == pytest.approx((0.7 - 0.5) / 0.5)


def test_nmi_hand_case():
    a = np.array([0, 0, 1, 1])
    assert metrics.nmi(a, a) == pytest.approx(1.0)
    assert metrics.nmi(a, np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)


def test_hd95_uses_spacing():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b[5:10, 8:13] = True  # shifted by 3 columns
    assert metrics.hd95(a, b) == pytest.approx(3.0)
    assert metrics.hd95(a, b, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    assert metrics.hd95(a, a) == 0.0
    assert np.isnan(metrics.hd95(a, np.zeros_like(a)))


def test_empty_masks_are_perfect():
    z = np.zeros((4, 4), bool)
    assert metrics.dice(z, z) == 1.0 and metrics.hd95(z, z) == 0.0
