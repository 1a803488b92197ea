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
    """What travels with a case so predictions go back at the input's size, orientation and affine.

    ``shape``, ``spacing`` and ``affine`` describe the array the network sees: for a NIfTI volume that is the
    array reoriented to RAS+ (nibabel's closest canonical orientation), so ``affine`` is the canonical affine
    and ``spacing`` is the header's voxel size permuted to the RAS+ axes. ``input_affine``, ``input_shape``
    and ``ornt`` describe the file as stored; ``to_input`` maps an array on the RAS+ grid back to the file's
    voxel order and :func:`write_nifti_like` writes it with the file's own affine and qform/sform.
    2D images, frame folders and .npy volumes have ``ornt = None`` (used as stored).
    """

    shape: tuple                       # spatial shape of the array the network sees (RAS+ for NIfTI)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4), compare=False)  # affine of that array
    spacing: tuple = ()                # voxel spacing per spatial axis of that array
    input_affine: np.ndarray | None = field(default=None, compare=False)  # the file's own affine (None = affine)
    ornt: np.ndarray | None = field(default=None, compare=False)  # stored axes -> RAS+ (nibabel ornt); None = same
    header: object = field(default=None, compare=False, repr=False)  # the file's NIfTI header (qform/sform codes)

    @property
    def input_shape(self) -> tuple:
        """Spatial shape of the file as stored."""
        if self.ornt is None:
            return self.shape
        return tuple(self.shape[int(self.ornt[i, 0])] for i in range(len(self.ornt)))

    @property
    def input_spacing(self) -> tuple:
        """Voxel spacing per spatial axis of the file as stored."""
        if self.ornt is None:
            return self.spacing
        return tuple(self.spacing[int(self.ornt[i, 0])] for i in range(len(self.ornt)))

    def to_canonical(self, array) -> np.ndarray:
        """An array in the file's voxel order (spatial axes first, any trailing axes kept) -> RAS+ order."""
        if self.ornt is None:
            return np.asarray(array)
        import nibabel as nib

        return np.ascontiguousarray(nib.orientations.apply_orientation(np.asarray(array), self.ornt))

    def to_input(self, array) -> np.ndarray:
        """An array on the RAS+ grid (spatial axes first, any trailing axes kept) -> the file's voxel order."""
        if self.ornt is None:
            return np.asarray(array)
        import nibabel as nib

        back = nib.orientations.ornt_transform(_IDENTITY_ORNT[: len(self.ornt)], self.ornt)
        return np.ascontiguousarray(nib.orientations.apply_orientation(np.asarray(array), back))


_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


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
    return label_ids(_read_pixels(path, palette_indices=True)[..., 0], path)


def label_ids(arr: np.ndarray, path) -> np.ndarray:
    """A label array -> int32. Float labels must hold whole numbers (up to 0.01, e.g. 0.9999 from a float
    export); others (a label resampled with interpolation, a probability map) are an error naming the file."""
    if arr.dtype.kind != "f":
        return arr.astype(np.int32)
    if not np.all(np.isfinite(arr)):
        raise LDSegError(f"{path}: label contains NaN or Inf values")
    ids = np.rint(arr)
    off = np.abs(arr - ids) > 0.01
    if off.any():
        raise LDSegError(f"{path}: label holds non-integer values (e.g. {arr[off].flat[0]:g}); expected a label map "
                         f"of class ids (was it resampled with interpolation instead of nearest neighbour?)")
    return ids.astype(np.int32)


def read_nifti(path, canonical: bool = True):
    """NIfTI -> (float32 array, Geometry).

    ``canonical``: reorient the first three axes to RAS+ (nibabel's closest canonical orientation; any 4th
    axis, e.g. channels, is kept). The Geometry describes the returned array and remembers the stored
    orientation (see :class:`Geometry`). ``canonical=False`` returns the array as stored.
    """
    import nibabel as nib

    path = _need_file(path)
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        affine = np.asarray(img.affine, np.float64)
        header = img.header.copy()
    except Exception as exc:  # noqa: BLE001
        raise LDSegError(f"{path}: cannot read NIfTI ({exc.__class__.__name__}); "
                         "expected a .nii or .nii.gz file") from None
    spatial = arr.shape[:3] if arr.ndim >= 3 else arr.shape
    spacing = zooms[:len(spatial)] + (1.0,) * (len(spatial) - len(zooms))
    shape = tuple(int(s) for s in spatial)
    if not canonical or arr.ndim < 3:
        return arr, Geometry(shape, affine, spacing, affine, None, header)
    ornt = nib.orientations.io_orientation(affine)
    axes = ornt[:, 0].astype(int)
    ras_shape, ras_spacing = [0] * 3, [0.0] * 3
    for i in range(3):
        ras_shape[axes[i]], ras_spacing[axes[i]] = shape[i], spacing[i]
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    geom = Geometry(tuple(ras_shape), ras_affine, tuple(ras_spacing), affine, ornt, header)
    return geom.to_canonical(arr), geom


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


def read_volume(path, canonical: bool = True):
    """NIfTI (reoriented to RAS+ when ``canonical``) or .npy (as stored) -> (array, Geometry)."""
    if suffix(path) in NIFTI_SUFFIXES:
        return read_nifti(path, canonical)
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


def write_nifti_like(path, array, geometry: Geometry) -> Path:
    """An array on the grid the network saw (RAS+ for NIfTI inputs) -> .nii/.nii.gz in the input's own voxel
    order, affine and qform/sform codes (written atomically). Trailing axes beyond the spatial ones (e.g.
    class probabilities) are kept. Geometries without a NIfTI source are written with ``geometry.affine``."""
    import nibabel as nib

    array = np.asarray(array)
    if array.shape[:len(geometry.shape)] != tuple(geometry.shape):
        raise LDSegError(f"{path}: array of shape {array.shape}; expected the input grid {tuple(geometry.shape)}")
    if geometry.input_affine is None or geometry.header is None:
        return write_nifti(path, array, geometry.affine)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    data = geometry.to_input(array)
    if suffix(path) not in NIFTI_SUFFIXES:
        raise LDSegError(f"{path}: expected a .nii or .nii.gz file name")
    src = geometry.header

    def write(p):
        img = nib.Nifti1Image(data, np.asarray(geometry.input_affine, np.float64))
        hdr = img.header
        hdr.set_qform(src.get_qform(), code=int(src["qform_code"]))
        hdr.set_sform(src.get_sform(), code=int(src["sform_code"]))
        zooms = tuple(src.get_zooms()[:3])
        hdr.set_zooms(zooms[:min(3, data.ndim)] + (1.0,) * (data.ndim - min(3, data.ndim)))
        hdr.set_xyzt_units(*src.get_xyzt_units())
        nib.save(img, str(p))

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
