"""Builders of small data folders in the layouts users already have (for the layout and end-to-end tests).

- :func:`make_anchor_folder`: the LDSeg anchor's demo layout, ``Image/CaseN.<ext>`` + ``Label/CaseN_label.<ext>``
  (2D: 32x32 RGB BMP; 3D: 16^3 NIfTI).
- :func:`make_msd_folder`: an MSD / nnU-Net v2 folder, ``imagesTr/<case>_0000.nii.gz`` + ``_0001``,
  ``labelsTr/<case>.nii.gz``, ``imagesTs/`` and ``dataset.json`` with three labels (background, a, b).
- :func:`store_reoriented`: a copy of a NIfTI file stored with other axis order / flips (same world space).

Every image has a bright object where its label is foreground, so a few training steps can learn something.
"""
from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ldseg_suite.data import readers

MSD_LABELS = ("background", "a", "b")
MSD_CHANNELS = ("T1", "T2")


def _disc(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


def make_anchor_folder(tmp, kind: str = "2d", cases: int = 3, seed: int = 0) -> Path:
    """``tmp/anchor_<kind>/Image/CaseN`` + ``Label/CaseN_label`` (N = 1..cases); labels 0 / 1.

    2D: 32x32 RGB ``.bmp``; 3D: 16^3 ``.nii.gz`` with 1 x 1 x 2 mm voxels."""
    if kind not in ("2d", "3d"):
        raise ValueError(kind)
    rng = np.random.default_rng(seed)
    root = Path(tmp) / f"anchor_{kind}"
    (root / "Image").mkdir(parents=True)
    (root / "Label").mkdir()
    for n in range(1, cases + 1):
        shape = (32, 32) if kind == "2d" else (16, 16, 16)
        centre = [int(c) for c in rng.integers(6, min(shape) - 6, len(shape))]
        label = _disc(shape, centre, 4 + n % 2).astype(np.uint8)
        if kind == "2d":
            rgb = rng.integers(0, 80, (*shape, 3)).astype(np.uint8)
            rgb[label > 0] += np.array([150, 90, 40], np.uint8)
            iio.imwrite(root / "Image" / f"Case{n}.bmp", rgb)
            iio.imwrite(root / "Label" / f"Case{n}_label.bmp", label)
        else:
            vol = (rng.normal(0.0, 0.1, shape) + label).astype(np.float32)
            affine = np.diag([1.0, 1.0, 2.0, 1.0])
            readers.write_nifti(root / "Image" / f"Case{n}.nii.gz", vol, affine)
            readers.write_nifti(root / "Label" / f"Case{n}_label.nii.gz", label, affine)
    return root


def make_msd_folder(tmp, cases: int = 5, test_cases: int = 2, style: str = "nnunet", seed: int = 0) -> Path:
    """``tmp/Dataset001_Tiny``: ``imagesTr/case_00K_0000.nii.gz`` + ``_0001`` (16^3), ``labelsTr/case_00K.nii.gz``
    (labels 0 background, 1 a, 2 b), ``imagesTs/test_00K_000{0,1}.nii.gz`` and ``dataset.json``.

    ``style``: ``nnunet`` (v2: ``channel_names``, ``labels`` name -> int, ``file_ending``) or ``msd`` (the
    Decathlon's ``modality`` and ``labels`` "0" -> name, ``training`` / ``test`` lists)."""
    if style not in ("nnunet", "msd"):
        raise ValueError(style)
    rng = np.random.default_rng(seed)
    root = Path(tmp) / "Dataset001_Tiny"
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    affine[:3, 3] = [-8.0, -9.6, -12.0]
    shape = (16, 16, 16)

    def write_case(folder, name, label_folder=None):
        a = _disc(shape, [int(c) for c in rng.integers(5, 11, 3)], 3)
        b = _disc(shape, [int(c) for c in rng.integers(5, 11, 3)], 2) & ~a
        label = (a + 2 * b).astype(np.uint8)
        t1 = rng.normal(0.0, 0.1, shape) + 1.0 * a + 0.3 * b
        t2 = rng.normal(0.0, 0.1, shape) + 0.2 * a + 1.0 * b
        for c, vol in enumerate((t1, t2)):
            readers.write_nifti(root / folder / f"{name}_{c:04d}.nii.gz", vol.astype(np.float32), affine)
        if label_folder is not None:
            readers.write_nifti(root / label_folder / f"{name}.nii.gz", label, affine)

    train = [f"case_{k:03d}" for k in range(cases)]
    test = [f"test_{k:03d}" for k in range(test_cases)]
    for name in train:
        write_case("imagesTr", name, "labelsTr")
    for name in test:
        write_case("imagesTs", name)
    if style == "nnunet":
        meta = {"channel_names": {str(i): n for i, n in enumerate(MSD_CHANNELS)},
                "labels": {n: i for i, n in enumerate(MSD_LABELS)},
                "numTraining": cases, "file_ending": ".nii.gz", "name": "Tiny"}
    else:
        meta = {"name": "Tiny", "tensorImageSize": "3D",
                "modality": {str(i): n for i, n in enumerate(MSD_CHANNELS)},
                "labels": {str(i): n for i, n in enumerate(MSD_LABELS)},
                "numTraining": cases, "numTest": test_cases,
                "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in train],
                "test": [f"./imagesTs/{n}.nii.gz" for n in test]}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def store_reoriented(src, dst, axcodes=("P", "S", "L")) -> Path:
    """Write ``src`` (NIfTI) to ``dst`` with its voxel axes permuted / flipped to ``axcodes``; the image is the
    same in world space (nibabel's ``as_reoriented``), only the stored voxel order and affine change."""
    import nibabel as nib

    img = nib.load(str(src))
    now = nib.orientations.io_orientation(img.affine)
    moved = img.as_reoriented(nib.orientations.ornt_transform(now, nib.orientations.axcodes2ornt(axcodes)))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    nib.save(moved, str(dst))
    return Path(dst)
