"""Classical segmentation baselines that need no network: global (multi-)Otsu thresholds."""
from __future__ import annotations

import math
import sys

import numpy as np
from skimage.filters import threshold_multiotsu


def _bins(image: np.ndarray, classes: int) -> np.ndarray:
    """Intensity bins (0 .. classes-1) of the channel-mean image by global multi-Otsu thresholds of this image."""
    grey = image.mean(axis=-1)
    try:
        thresholds = threshold_multiotsu(grey, classes=classes)
    except ValueError:  # a constant image has no thresholds
        return np.zeros(grey.shape, np.int64)
    return np.digitize(grey, thresholds)


class Otsu:
    """Global Otsu (multi-Otsu for more than two classes) on each case's own intensities.

    Thresholding is unsupervised; which intensity bin is which class (bright or dark foreground, the order of the
    classes) is learnt once from the training cases, so no test label is used: each bin takes the class whose
    training voxels fall into it most often, relative to the class's size (a plain majority vote would give every
    bin to the background when the foreground is small).
    """

    def __init__(self, classes: int):
        self.classes = classes
        self.mapping = np.arange(classes)

    def fit(self, pairs) -> "Otsu":
        """``pairs``: iterable of (image (*spatial, C), label (*spatial)) training cases."""
        counts = np.zeros((self.classes, self.classes), np.int64)
        for image, label in pairs:
            np.add.at(counts, (_bins(image, self.classes).ravel(), np.clip(label, 0, self.classes - 1).ravel()), 1)
        if not counts.any():  # no labelled voxels: keep the identity (brighter bin, higher class)
            return self
        share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)  # of each class's voxels, per bin
        self.mapping = share.argmax(axis=1)
        return self

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.mapping[_bins(image, self.classes)].astype(np.uint8)


OTSU_TRAINING_CASES = 64  # enough to learn which intensity bin is which class; a large cohort is not read whole


def otsu_for(train_reader, classes: int) -> Otsu:
    """The Otsu baseline of a run: its bin-to-class mapping learnt on the labelled training cases of
    ``train_reader`` (a ``CaseReader``; at most ``OTSU_TRAINING_CASES`` of them, evenly spaced), read as stored."""
    paths = [p for p in train_reader.paths if p.label is not None]
    picked = paths[::math.ceil(len(paths) / OTSU_TRAINING_CASES)] if paths else []
    return Otsu(classes).fit(pair for pair in map(lambda p: _readable(train_reader, p), picked) if pair)


def _readable(reader, paths):
    """(image, label) of one training case, or None (reported on stderr) when it cannot be read: one bad case
    does not stop the scoring of the others."""
    try:
        case = reader.load(paths)
    except Exception as exc:  # noqa: BLE001 - reported, the baseline is learnt on the other cases
        print(f"Otsu baseline: skipped {paths.image}: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr, flush=True)
        return None
    return case.image, case.label
