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
    """PNG/BMP/JPG/TIFF -> float32 (H, W, C), C = 1 (grey) or 3 (RGB; alpha dropped); raw intensities."""
    return _read_pixels(path, palette_indices=False).astype(np.float32)


def _read_pixels(path, palette_indices: bool) -> np.ndarray:
    """-> (H, W, 1 or 3) in the file's own dtype."""
    import imageio.v3 as iio

    path = _need_file(path)
    try:
        if suffix(path) in (".tif", ".tiff"):
            arr = _read_tiff_first_page(path)
        elif palette_indices and iio.immeta(path).get("mode") == "P":
            arr = np.asarray(iio.imread(path, mode="P"))  # the indices are the label ids, not the colours
        else:
            arr = np.asarray(iio.imread(path))
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"pixel type {arr.dtype}")
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise LDSegError(f"{path}: cannot read image ({exc.__class__.__name__}); "
                         "expected PNG, BMP, JPG or TIFF") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise LDSegError(f"{path}: image of shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    return arr


def _read_tiff_first_page(path) -> np.ndarray:
    """Only the first page: a corrupt IFD chain can otherwise make a reader walk pages for ever."""
    import logging

    import tifffile

    logging.getLogger("tifffile").setLevel(logging.ERROR)
    with tifffile.TiffFile(path) as tif:
        return np.asarray(tif.pages.first.asarray())


def read_label_image(path) -> np.ndarray:
    """A label image -> int32 (H, W); for RGB label images the first channel, for palette images the indices."""
    arr = _read_pixels(path, palette_indices=True)[..., 0]
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise LDSegError(f"{path}: label contains NaN or Inf values")
        arr = np.rint(arr)
    return arr.astype(np.int32)


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
    """.npy -> the stored numeric array (no pickles)."""
    path = _need_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise LDSegError(f"{path}: cannot read .npy ({exc.__class__.__name__}); expected a NumPy .npy array") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise LDSegError(f"{path}: an .npz archive; expected a single .npy array")
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
    """Write to a hidden temp file beside ``path`` (same suffix, unique per process) then rename it."""
    path = Path(path)
    tmp = path.with_name(f".tmp_{os.getpid()}_{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except LDSegError:
        raise
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, an array the format cannot hold
        detail = (str(exc).splitlines() or [""])[0][:120]
        raise LDSegError(f"{path}: cannot write ({exc.__class__.__name__}: {detail})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_nifti(path, array, affine) -> Path:
    """Array + 4x4 affine -> .nii / .nii.gz, written atomically; spacing comes from the affine."""
    import nibabel as nib

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    affine = np.asarray(affine, np.float64)
    if affine.shape != (4, 4):
        raise LDSegError(f"{path}: affine of shape {affine.shape}; expected 4x4")
    if suffix(path) not in NIFTI_SUFFIXES:
        raise LDSegError(f"{path}: expected a .nii or .nii.gz file name")

    def write(p):
        img = nib.Nifti1Image(array, affine)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        nib.save(img, str(p))  # the temp name keeps the .nii.gz suffix

    return _atomic(path, write)


def write_png(path, array_uint8) -> Path:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) -> PNG, written atomically (bool is written as 0/1)."""
    import imageio.v3 as iio

    array = np.asarray(array_uint8)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))):
        raise LDSegError(f"{path}: cannot write {array.dtype} array of shape {array.shape} as PNG; "
                         "expected uint8 (H, W), (H, W, 3) or (H, W, 4)")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return _atomic(path, lambda p: iio.imwrite(p, array, extension=".png"))
