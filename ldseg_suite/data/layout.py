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


def _entries(folder: Path):
    """Case files (known suffixes) and frame folders of ``folder``, by stem."""
    out = {}
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir() or readers.suffix(p) in KNOWN:
            out[stem(p)] = p
    return out


def find_cases(root, layout: str = "auto") -> list[CasePaths]:
    root = Path(root)
    if not root.is_dir():
        raise LDSegError(f"{root}: data folder not found")
    if layout == "auto":
        layout = "folders" if (root / "images").is_dir() else "glas"
    if layout == "folders":
        if not (root / "images").is_dir():
            raise LDSegError(f"{root}: expected an images/ folder (and labels/) for Layout = folders")
        images = _entries(root / "images")
        labels = _entries(root / "labels") if (root / "labels").is_dir() else {}
        cases = [CasePaths(n, p, labels.get(n)) for n, p in images.items()]
    elif layout == "glas":
        files = {stem(p): p for p in root.iterdir()
                 if p.is_file() and readers.suffix(p) in readers.IMAGE_SUFFIXES}
        cases = [CasePaths(n, p, files.get(f"{n}_anno")) for n, p in files.items() if not n.endswith("_anno")]
    else:
        raise LDSegError(f"Layout = {layout}: expected auto, folders or glas")
    if not cases:
        raise LDSegError(f"{root}: no cases found (Layout = {layout}; expected "
                         + ("images/*.png|bmp|tif|nii.gz|npy" if layout == "folders" else "name.bmp + name_anno.bmp")
                         + ")")
    return sorted(cases, key=lambda c: natural_key(c.name))


def _read_frames(folder: Path) -> np.ndarray:
    frames = sorted((p for p in folder.iterdir() if readers.suffix(p) in readers.IMAGE_SUFFIXES),
                    key=lambda p: natural_key(p.name))
    if not frames:
        raise LDSegError(f"{folder}: no frames found (expected PNG/BMP/TIFF images)")
    arrays = [readers.read_image(p) for p in frames]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise LDSegError(f"{folder}: frames of different shapes {sorted(shapes)}")
    return np.stack(arrays, axis=2)  # (H, W, T, C)


def _read(path: Path, kind: str, is_label: bool):
    """-> (array, geometry); images get a channel axis, labels none."""
    if kind == "2d":
        if readers.suffix(path) not in readers.IMAGE_SUFFIXES:
            raise LDSegError(f"{path}: Kind = 2d expects PNG/BMP/JPG/TIFF images")
        arr = readers.read_image(path)
        geom = readers.plain_geometry(arr.shape[:2])
        return (arr[..., 0].astype(np.int32) if is_label else arr), geom
    if path.is_dir():
        if kind != "2d+t":
            raise LDSegError(f"{path}: a folder of frames is only valid for Kind = 2d+t")
        arr = _read_frames(path)
        geom = readers.plain_geometry(arr.shape[:3])
        return (arr[..., 0].astype(np.int32) if is_label else arr), geom
    arr, geom = readers.read_volume(path)
    if arr.ndim == 4 and not is_label:
        return arr, geom
    if arr.ndim != 3:
        raise LDSegError(f"{path}: array of shape {arr.shape}; Kind = {kind} expects (H, W, "
                         f"{'T' if kind == '2d+t' else 'D'})" + ("" if is_label else " or with a channel axis"))
    return (np.rint(arr).astype(np.int32) if is_label else arr[..., None]), geom


def load_case(paths: CasePaths, kind: str, classes: int, binarize: bool = False) -> Case:
    image, geom = _read(paths.image, kind, is_label=False)
    if not np.all(np.isfinite(image)):
        raise LDSegError(f"{paths.image}: contains NaN or Inf values")
    label = None
    if paths.label is not None:
        label, _ = _read(paths.label, kind, is_label=True)
        if label.shape != image.shape[:-1]:
            raise LDSegError(f"{paths.label}: label shape {label.shape} differs from image {paths.image.name} "
                             f"shape {image.shape[:-1]}")
        if binarize:
            label = (label > 0).astype(np.int32)
        bad = np.unique(label[(label < 0) | (label >= classes)])
        if bad.size:
            raise LDSegError(f"{paths.label}: label values {bad[:5].tolist()} outside [0, {classes - 1}] "
                             f"([Data] Classes = {classes}; set Binarize = true for instance labels)")
    return Case(paths.name, image.astype(np.float32), label, geom)
