"""File readers and writers. Every failure to read becomes an LDSegError naming the file."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ldseg_suite.errors import LDSegError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Geometry:
    """What travels with a case so predictions go back at the input's size and geometry."""

    shape: tuple                       # original spatial shape
    affine: np.ndarray = field(default_factory=lambda: np.eye(4), compare=False)
    spacing: tuple = ()                # voxel spacing per spatial axis


def plain_geometry(shape) -> Geometry:
    return Geometry(tuple(int(s) for s in shape), np.eye(4), (1.0,) * len(shape))


def suffix(path) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _need_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise LDSegError(f"{path}: file not found")
    return path


def read_image(path) -> np.ndarray:
    """PNG/BMP/JPG/TIFF -> float32 (H, W, C), C = 1 (grey) or 3 (RGB; alpha dropped)."""
    import imageio.v3 as iio

    path = _need_file(path)
    try:
        arr = _read_tiff_first_page(path) if suffix(path) in (".tif", ".tiff") else np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise LDSegError(f"{path}: cannot read image ({exc.__class__.__name__}); "
                         "expected PNG, BMP, JPG or TIFF") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise LDSegError(f"{path}: image of shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    return arr.astype(np.float32)


def _read_tiff_first_page(path) -> np.ndarray:
    """Only the first page: a corrupt IFD chain can otherwise make a reader walk pages for ever."""
    import logging

    import tifffile

    logging.getLogger("tifffile").setLevel(logging.ERROR)
    with tifffile.TiffFile(path) as tif:
        return np.asarray(tif.pages.first.asarray())


def read_label_image(path) -> np.ndarray:
    """A label image -> int32 (H, W); for RGB label images the first channel."""
    return read_image(path)[..., 0].astype(np.int32)


def read_nifti(path):
    """NIfTI -> (float32 array as stored, Geometry with the affine and header voxel spacing)."""
    import nibabel as nib

    path = _need_file(path)
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        affine = np.asarray(img.affine, np.float64)
    except Exception as exc:  # noqa: BLE001
        raise LDSegError(f"{path}: cannot read NIfTI ({exc.__class__.__name__}); "
                         "expected a .nii or .nii.gz file") from None
    spatial = arr.shape[:3] if arr.ndim >= 3 else arr.shape
    spacing = zooms[:len(spatial)] + (1.0,) * (len(spatial) - len(zooms))
    return arr, Geometry(tuple(int(s) for s in spatial), affine, spacing)


def read_npy(path) -> np.ndarray:
    path = _need_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise LDSegError(f"{path}: cannot read .npy ({exc.__class__.__name__})") from None
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise LDSegError(f"{path}: .npy of dtype {arr.dtype}; expected a numeric array")
    return arr


def read_volume(path):
    """NIfTI or .npy -> (array, Geometry)."""
    if suffix(path) in NIFTI_SUFFIXES:
        return read_nifti(path)
    if suffix(path) == ".npy":
        arr = read_npy(path).astype(np.float32)
        return arr, plain_geometry(arr.shape[:3])
    raise LDSegError(f"{path}: unsupported volume format; expected .nii, .nii.gz or .npy")


def _atomic(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_nifti(path, array, affine) -> Path:
    import nibabel as nib

    array = np.asarray(array)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    img = nib.Nifti1Image(array, np.asarray(affine, np.float64))
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    return _atomic(path, lambda p: nib.save(img, str(p)))  # the temp name keeps the .nii.gz suffix


def write_png(path, array) -> Path:
    import imageio.v3 as iio

    return _atomic(path, lambda p: iio.imwrite(p, np.asarray(array), extension=".png"))
