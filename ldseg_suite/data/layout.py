"""Find the cases of a data folder and load them as arrays.

Layouts: ``folders`` (``images/`` + ``labels/`` matched by file stem) and ``glas`` (one folder,
``train_1.bmp`` + ``train_1_anno.bmp``). A case is 2D (image file), 3D (NIfTI / .npy volume) or 2D+t
(NIfTI (H, W, T) or a folder of frames).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldseg_suite.data import readers
from ldseg_suite.errors import LDSegError

KNOWN = readers.IMAGE_SUFFIXES + readers.NIFTI_SUFFIXES + (".npy",)
KINDS = ("2d", "3d", "2d+t")


@dataclass(frozen=True)
class CasePaths:
    name: str
    image: Path
    label: Path | None


@dataclass
class Case:
    name: str
    image: np.ndarray          # (*spatial, C) float32
    label: np.ndarray | None   # (*spatial) int32
    geometry: readers.Geometry


def natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def stem(path: Path) -> str:
    name = path.name
    sfx = readers.suffix(path)
    return name[: len(name) - len(sfx)] if sfx and path.is_file() else name


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise LDSegError(f"{folder}: cannot list folder ({exc.__class__.__name__})") from None


def _entries(folder: Path, accept) -> dict[str, Path]:
    """Files and folders of ``folder`` accepted by ``accept``, by stem; two entries with one stem are an error."""
    out = {}
    for p in _listdir(folder):
        if p.name.startswith(".") or not accept(p):
            continue
        key = stem(p)
        if key in out:
            raise LDSegError(f"{folder}: {out[key].name} and {p.name} have the same name {key!r}; "
                             "expected one file per case")
        out[key] = p
    return out


def _case_entry(p: Path) -> bool:
    return p.is_dir() or readers.suffix(p) in KNOWN


def _image_file(p: Path) -> bool:
    return p.is_file() and readers.suffix(p) in readers.IMAGE_SUFFIXES


def find_cases(root, layout: str = "auto") -> list[CasePaths]:
    """The cases of ``root``, sorted by name (natural order: train_2 before train_10)."""
    root = Path(root)
    if not root.is_dir():
        raise LDSegError(f"{root}: data folder not found")
    if layout == "auto":
        layout = "folders" if (root / "images").is_dir() else "glas"
    if layout == "folders":
        if not (root / "images").is_dir():
            raise LDSegError(f"{root}: expected an images/ folder (and labels/) for Layout = folders")
        images = _entries(root / "images", _case_entry)
        labels = _entries(root / "labels", _case_entry) if (root / "labels").is_dir() else {}
        cases = [CasePaths(n, p, labels.get(n)) for n, p in images.items()]
    elif layout == "glas":
        files = _entries(root, _image_file)
        cases = [CasePaths(n, p, files.get(f"{n}_anno")) for n, p in files.items() if not n.endswith("_anno")]
    else:
        raise LDSegError(f"Layout = {layout}: expected auto, folders or glas")
    if not cases:
        raise LDSegError(f"{root}: no cases found (Layout = {layout}; expected "
                         + ("images/*.png|bmp|tif|nii.gz|npy" if layout == "folders" else "name.bmp + name_anno.bmp")
                         + ")")
    return sorted(cases, key=lambda c: natural_key(c.name))


def _read_frames(folder: Path, is_label: bool) -> np.ndarray:
    """A folder of 2D frames (natural order of file names) -> (H, W, T, C) image or (H, W, T) label."""
    frames = sorted((p for p in _listdir(folder) if _image_file(p) and not p.name.startswith(".")),
                    key=lambda p: natural_key(p.name))
    if not frames:
        raise LDSegError(f"{folder}: no frames found (expected PNG/BMP/TIFF images)")
    arrays = [readers.read_label_image(p) if is_label else readers.read_image(p) for p in frames]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise LDSegError(f"{folder}: frames of different shapes {sorted(shapes)}; expected one frame size")
    return np.stack(arrays, axis=2)


def _read(path: Path, kind: str, is_label: bool):
    """-> (array, geometry); images get a channel axis, labels none."""
    if not path.exists():
        raise LDSegError(f"{path}: file not found")
    if kind == "2d":
        if path.is_dir() or readers.suffix(path) not in readers.IMAGE_SUFFIXES:
            raise LDSegError(f"{path}: Kind = 2d expects PNG/BMP/JPG/TIFF images")
        arr = readers.read_label_image(path) if is_label else readers.read_image(path)
        return arr, readers.plain_geometry(arr.shape[:2])
    if path.is_dir():
        if kind != "2d+t":
            raise LDSegError(f"{path}: a folder of frames is only valid for Kind = 2d+t")
        arr = _read_frames(path, is_label)
        return arr, readers.plain_geometry(arr.shape[:3])
    arr, geom = readers.read_volume(path)
    if arr.ndim == 4 and not is_label:
        return arr, geom
    if arr.ndim == 4 and arr.shape[-1] == 1:  # a label volume stored with a channel axis
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise LDSegError(f"{path}: array of shape {arr.shape}; Kind = {kind} expects (H, W, "
                         f"{'T' if kind == '2d+t' else 'D'})" + ("" if is_label else " or with a channel axis"))
    if is_label:
        if not np.all(np.isfinite(arr)):
            raise LDSegError(f"{path}: label contains NaN or Inf values")
        return np.rint(arr).astype(np.int32), geom
    return arr[..., None], geom


def load_case(paths: CasePaths, kind: str, classes: int, binarize: bool = False) -> Case:
    """Read one case and check it: finite image, label of the image's spatial shape, values in [0, classes)."""
    if kind not in KINDS:
        raise LDSegError(f"Kind = {kind}: expected one of {', '.join(KINDS)}")
    image, geom = _read(Path(paths.image), kind, is_label=False)
    if not np.all(np.isfinite(image)):
        raise LDSegError(f"{paths.image}: contains NaN or Inf values")
    label = None
    if paths.label is not None:
        label, _ = _read(Path(paths.label), kind, is_label=True)
        if label.shape != image.shape[:-1]:
            raise LDSegError(f"{paths.label}: label shape {label.shape} differs from image {Path(paths.image).name} "
                             f"shape {image.shape[:-1]}")
        if binarize:
            label = (label > 0).astype(np.int32)
        bad = np.unique(label[(label < 0) | (label >= classes)])
        if bad.size:
            raise LDSegError(f"{paths.label}: label values {bad[:5].tolist()} outside [0, {classes - 1}] "
                             f"([Data] Classes = {classes}; set Binarize = true for instance labels)")
    return Case(paths.name, image.astype(np.float32), label, geom)
