"""Segmentation and reconstruction metrics on numpy arrays (binary masks unless stated).

Conventions: a metric of two empty masks is perfect (Dice 1, HD95 0); HD95 with exactly one empty mask
is ``nan`` (undefined), so means are taken with ``nanmean`` and the count of such cases is reported.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def confusion(pred, target):
    """TP, FP, FN, TN of two binary masks, as Python ints."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    tn = int(pred.size - tp - fp - fn)
    return tp, fp, fn, tn


def dice(pred, target) -> float:
    tp, fp, fn, _ = confusion(pred, target)
    return 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2.0 * tp + fp + fn)


def iou(pred, target) -> float:
    tp, fp, fn, _ = confusion(pred, target)
    return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)


def _surface(mask):
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred, target, spacing=None) -> float:
    """95th-percentile symmetric Hausdorff distance between mask surfaces, in units of ``spacing``.

    As in medpy / MONAI: the larger of the two directed 95th percentiles.
    """
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() and not target.any():
        return 0.0
    if not pred.any() or not target.any():
        return float("nan")
    spacing = (1.0,) * pred.ndim if spacing is None else tuple(float(s) for s in spacing)
    sp, st = _surface(pred), _surface(target)
    dist_to_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(dist_to_t[sp], 95), np.percentile(dist_to_p[st], 95)))


def volumetric_similarity(pred, target) -> float:
    """VS = 1 - |FN - FP| / (2TP + FP + FN)."""
    tp, fp, fn, _ = confusion(pred, target)
    return 1.0 if 2 * tp + fp + fn == 0 else 1.0 - abs(fn - fp) / (2.0 * tp + fp + fn)


def sensitivity(pred, target) -> float:
    """SEN = TP / (TP + FN) (recall of the target)."""
    tp, _, fn, _ = confusion(pred, target)
    return 1.0 if tp + fn == 0 else tp / (tp + fn)


def specificity(pred, target) -> float:
    """SPEC = TN / (TN + FP)."""
    _, fp, _, tn = confusion(pred, target)
    return 1.0 if tn + fp == 0 else tn / (tn + fp)


def cohen_kappa(pred, target) -> float:
    """Cohen's kappa of two binary masks: (p_o - p_e) / (1 - p_e)."""
    tp, fp, fn, tn = confusion(pred, target)
    n = tp + fp + fn + tn
    p_o = (tp + tn) / n
    p_e = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def nmi(pred, target) -> float:
    """Normalised mutual information of two label maps, I(A;B) / sqrt(H(A) H(B)) (1 if both constant)."""
    a, b = np.asarray(pred).ravel(), np.asarray(target).ravel()
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])))
    ha = -float(np.sum(pa[pa > 0] * np.log(pa[pa > 0])))
    hb = -float(np.sum(pb[pb > 0] * np.log(pb[pb > 0])))
    if ha == 0 or hb == 0:
        return 1.0 if ha == hb else 0.0
    return mi / np.sqrt(ha * hb)


def per_class(pred_labels, target_labels, classes: int, spacing=None) -> dict:
    """Dice, IoU and HD95 for every foreground class of two label maps: {'dice_1': ..., 'hd95_1': ...}."""
    out = {}
    for c in range(1, classes):
        p, t = pred_labels == c, target_labels == c
        out[f"dice_{c}"] = dice(p, t)
        out[f"iou_{c}"] = iou(p, t)
        out[f"hd95_{c}"] = hd95(p, t, spacing)
    return out
