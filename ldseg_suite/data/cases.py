"""Cases read lazily from disk and prepared for a network: normalised, then resized to ``[Data] Size`` or kept at
native resolution (optionally resampled to ``[Data] Spacing``) for patch training and sliding windows.

Memory is set by the bounded cache (``[Data] Cache`` cases), never by the number of cases.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ldseg_suite.data import layout, patches, pipeline
from ldseg_suite.errors import LDSegError


@dataclass
class PreparedCase:
    name: str
    image: np.ndarray            # (*net spatial, C) float32, normalised
    label: np.ndarray | None     # (*net spatial) int32
    case: layout.Case            # as read (image, label, geometry) at the input's own grid
    points: dict | None = field(default=None, repr=False)  # foreground voxels for patch sampling

    @property
    def input_shape(self) -> tuple:
        return tuple(self.case.image.shape[:-1])


def prepare(case: layout.Case, data_cfg, source=None) -> PreparedCase:
    """Normalise, then resize to Size (no Patch) or resample to Spacing (Patch with Spacing)."""
    if case.image.shape[-1] != data_cfg.Channels:
        raise LDSegError(f"{source or case.name}: has {case.image.shape[-1]} channels but "
                         f"[Data] Channels = {data_cfg.Channels}")
    if not data_cfg.Patch:
        image, label = pipeline.prepare_case(case, tuple(data_cfg.Size), data_cfg.Normalize,
                                             data_cfg.IntensityRange)
        return PreparedCase(case.name, image, label, case)
    image = pipeline.normalize(case.image, data_cfg.Normalize, data_cfg.IntensityRange)
    label = case.label
    if data_cfg.Spacing:
        spacing = case.geometry.spacing[:len(data_cfg.Spacing)]
        image = patches.resample(image, spacing, data_cfg.Spacing, order=1).astype(np.float32)
        if label is not None:
            label = patches.resample(label, spacing, data_cfg.Spacing, order=0).astype(np.int32)
    return PreparedCase(case.name, image, label, case)


def to_input_grid(values: np.ndarray, prepared: PreparedCase) -> np.ndarray:
    """Per-voxel values (*net spatial, K) on the network grid -> the input's own grid (linear, no-op if equal)."""
    return pipeline.resize_image(values, prepared.input_shape)


class CaseReader:
    """``reader[i]`` reads, checks and prepares case ``i`` of ``paths``; the last ``cache`` cases are kept.

    Thread-safe, so tf.data may call it from parallel map workers.
    """

    def __init__(self, paths: list, data_cfg, cache: int | None = None):
        self.paths, self.cfg = list(paths), data_cfg
        self.cache_size = data_cfg.Cache if cache is None else cache
        self._cache: OrderedDict[int, PreparedCase] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.paths)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.paths]

    def __getitem__(self, i: int) -> PreparedCase:
        i = int(i)
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        p = self.paths[i]
        prepared = prepare(self.load(p), self.cfg, source=p.image)
        if self.cache_size:
            with self._lock:
                self._cache[i] = prepared
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return prepared

    def load(self, p: layout.CasePaths) -> layout.Case:
        """Read and check one case as stored (channels, label shape and values; RAS+ unless Orientation =
        stored)."""
        c = self.cfg
        return layout.load_case(p, c.Kind, c.Classes, c.Binarize, channels=c.Channels,
                                canonical=c.Orientation == "RAS")

    def verify(self) -> None:
        """Read every case once (nothing kept): a bad file stops the run at its start with one line naming it,
        not hours into training."""
        for p in self.paths:
            self.load(p)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def has_labels(self) -> bool:
        return all(p.label is not None for p in self.paths)
