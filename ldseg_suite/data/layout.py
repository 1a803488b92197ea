"""Find the cases of a data folder and load them as arrays.

Layouts (``[Data] Layout``):

- ``folders``: an image folder and a label folder, names matched case-insensitively (``images/``, ``Image/``,
  ``img/`` ... and ``labels/``, ``Label/``, ``masks/`` ...). A label belongs to an image when its stem equals
  the image's stem or the image's stem plus one of :data:`LABEL_SUFFIXES` (``Case1.bmp`` +
  ``Case1_label.bmp``, the LDSeg anchor's own demo layout; ``a.nii.gz`` + ``a_seg.nii.gz``).
- ``glas``: one flat folder of 2D images, ``train_1.bmp`` + ``train_1_anno.bmp`` (any of
  :data:`LABEL_SUFFIXES` pairs the same way).
- ``msd``: the Medical Segmentation Decathlon / nnU-Net v2 layout: ``imagesTr/<case>_0000.nii.gz`` (one file
  per channel ``_0000``, ``_0001`` ..., or MSD's one multi-channel file ``<case>.nii.gz``),
  ``labelsTr/<case>.nii.gz``, optional ``imagesTs/`` (unlabelled; see :func:`find_inputs`) and ``dataset.json``
  (see :func:`dataset_info`).
- ``auto``: ``msd`` when there is an ``imagesTr/``, ``folders`` when there is an image folder, else ``glas``;
  both ``imagesTr/`` and an image folder is an error that names both.

A case is 2D (image file), 3D (NIfTI / .npy volume; NIfTI reoriented to RAS+, see ``readers.Geometry``) or
2D+t (NIfTI (H, W, T) used as stored, or a folder of frames).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldseg_suite.data import readers
from ldseg_suite.errors import LDSegError

KNOWN = readers.IMAGE_SUFFIXES + readers.NIFTI_SUFFIXES + (".npy",)
KINDS = ("2d", "3d", "2d+t")
LAYOUTS = ("auto", "folders", "glas", "msd")
IMAGE_DIRS = ("images", "image", "imgs", "img")
LABEL_DIRS = ("labels", "label", "masks", "mask", "segmentations", "segmentation", "segs", "seg", "annotations",
              "annotation", "gt", "groundtruth", "ground_truth")
LABEL_SUFFIXES = ("_label", "_labels", "_seg", "_mask", "_anno", "_gt")
CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")  # nnU-Net: <case>_0000 ... one file per channel
DEFAULT_CLASSES, DEFAULT_CHANNELS = 2, 3  # what [Data] Classes / Channels = 0 mean without a dataset.json

TRIED = {"msd": "msd (imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz)",
         "folders": "folders (images/ + labels/, any case; labels named <case> or <case>_label|_seg|_mask|...)",
         "glas": "glas (name.png|bmp|tif + name_anno.png|bmp|tif in one folder)"}


@dataclass(frozen=True)
class CasePaths:
    """The files of one case. ``image`` is the image file (or frame folder), the first channel file when the
    channels are separate files (``channels``, nnU-Net's ``_0000``, ``_0001`` ...); error messages name it."""

    name: str
    image: Path
    label: Path | None
    channels: tuple = ()  # one path per channel, in channel order; () = ``image`` holds every channel

    @property
    def images(self) -> tuple:
        """Every image file of the case, in channel order."""
        return tuple(self.channels) or (self.image,)


@dataclass
class Case:
    name: str
    image: np.ndarray          # (*spatial, C) float32
    label: np.ndarray | None   # (*spatial) int32
    geometry: readers.Geometry


@dataclass(frozen=True)
class DatasetInfo:
    """What an MSD / nnU-Net ``dataset.json`` says about the data (None = not said)."""

    source: Path                          # the dataset.json
    classes: int | None                   # number of labels including background
    channels: int | None
    class_names: tuple | None             # class_names[value] = name
    channel_names: tuple | None           # channel_names[index] = name ("CT", "T2" ...)
    file_ending: str | None = None        # nnU-Net v2 ".nii.gz", ".png" ...
    num_training: int | None = None
    channel_key: str = "channel_names"    # which key gave the channels ("modality" in MSD files)


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


def _entries(folder: Path, accept, name_of=stem) -> dict[str, Path]:
    """Files and folders of ``folder`` accepted by ``accept``, by stem; two entries with one stem are an error."""
    out = {}
    for p in _listdir(folder):
        if p.name.startswith(".") or not accept(p):
            continue
        key = name_of(p)
        if key in out:
            raise LDSegError(f"{folder}: {out[key].name} and {p.name} have the same name {key!r}; "
                             "expected one file per case")
        out[key] = p
    return out


def _case_entry(p: Path) -> bool:
    return p.is_dir() or readers.suffix(p) in KNOWN


def _image_file(p: Path) -> bool:
    return p.is_file() and readers.suffix(p) in readers.IMAGE_SUFFIXES


def _child_dirs(root: Path, names) -> list[Path]:
    """Sub-folders of ``root`` whose lower-case name is one of ``names``."""
    return [p for p in _listdir(root) if p.is_dir() and p.name.lower() in names]


def _one_dir(root: Path, names, what: str) -> Path | None:
    found = _child_dirs(root, names)
    if len(found) > 1:
        raise LDSegError(f"{root}: {' and '.join(p.name + '/' for p in found)} are both {what} folders; "
                         "expected one")
    return found[0] if found else None


# ------------------------------------------------------------------------------------------- finding cases

def detect_layout(root) -> str:
    """The layout of ``root`` for ``Layout = auto`` (an error naming both when imagesTr/ and images/ exist)."""
    root = Path(root)
    msd = _child_dirs(root, ("imagestr",))
    folders = _child_dirs(root, IMAGE_DIRS)
    if msd and folders:
        raise LDSegError(f"{root}: ambiguous layout: found {msd[0].name}/ (Layout = msd) and {folders[0].name}/ "
                         "(Layout = folders); set [Data] Layout to the one to use")
    return "msd" if msd else "folders" if folders else "glas"


OTHER_FORMATS = {".dcm": "dcm2niix", ".ima": "dcm2niix", ".mha": "SimpleITK", ".mhd": "SimpleITK",
                 ".nrrd": "SimpleITK", ".nhdr": "SimpleITK", ".mgz": "nibabel", ".mnc": "nibabel"}


def other_formats_hint(folder: Path) -> str:
    """'; found N .dcm files ...' when ``folder`` or its subfolders hold medical image files this toolkit does not
    read (DICOM, MetaImage, NRRD, MGH, MINC), naming a converter; '' otherwise."""
    found: dict[str, int] = {}
    for path in [*folder.glob("*"), *folder.glob("*/*")]:
        ext = readers.suffix(path)
        if ext in OTHER_FORMATS and path.is_file():
            found[ext] = found.get(ext, 0) + 1
    if not found:
        return ""
    tools = sorted({OTHER_FORMATS[e] for e in found})
    return ("; found " + ", ".join(f"{n} {e} file(s)" for e, n in sorted(found.items())) + ", which are not read: "
            f"convert them to NIfTI (.nii.gz) first, e.g. with {' or '.join(tools)}")


def find_cases(root, layout: str = "auto") -> list[CasePaths]:
    """The cases of ``root``, sorted by name (natural order: train_2 before train_10). For ``msd`` these are
    the labelled ``imagesTr/`` cases (``imagesTs/`` is for :func:`find_inputs`)."""
    root = Path(root)
    if not root.is_dir():
        raise LDSegError(f"{root}: data folder not found")
    if layout not in LAYOUTS:
        raise LDSegError(f"Layout = {layout}: expected {', '.join(LAYOUTS[:-1])} or {LAYOUTS[-1]}")
    chosen = detect_layout(root) if layout == "auto" else layout
    cases = {"folders": _folders_cases, "glas": _glas_cases, "msd": _msd_cases}[chosen](root)
    if not cases:
        tried = [TRIED[name] for name in ("msd", "folders", "glas")] if layout == "auto" else [TRIED[chosen]]
        raise LDSegError(f"{root}: no cases found (Layout = {layout}; tried " + "; ".join(tried) + ")"
                         + other_formats_hint(root))
    return sorted(cases, key=lambda c: natural_key(c.name))


def _label_base(name: str) -> str | None:
    """``Case1_label`` -> ``Case1`` (any of LABEL_SUFFIXES, case-insensitive); None without a suffix."""
    low = name.lower()
    for sfx in LABEL_SUFFIXES:
        if low.endswith(sfx) and len(name) > len(sfx):
            return name[: -len(sfx)]
    return None


def _pair_labels(images: dict, labels: dict, where: Path) -> list[CasePaths]:
    """Each image with the label of the same stem or of its stem + a label suffix (two candidates: error)."""
    by_base: dict[str, list[Path]] = {}
    for name, p in labels.items():
        by_base.setdefault(name, []).append(p)
        base = _label_base(name)
        if base is not None:
            by_base.setdefault(base, []).append(p)
    cases = []
    for name, p in images.items():
        found = by_base.get(name, [])
        if len(found) > 1:
            raise LDSegError(f"{where}: {' and '.join(q.name for q in found)} are both labels of {p.name}; "
                             "expected one label per case")
        cases.append(CasePaths(name, p, found[0] if found else None))
    return cases


def _folders_cases(root: Path) -> list[CasePaths]:
    img_dir = _one_dir(root, IMAGE_DIRS, "image")
    if img_dir is None:
        raise LDSegError(f"{root}: expected an image folder ({', '.join(d + '/' for d in IMAGE_DIRS)}, any case) "
                         "and a label folder (labels/, masks/ ...) for Layout = folders")
    lab_dir = _one_dir(root, LABEL_DIRS, "label")
    images = _entries(img_dir, _case_entry)
    labels = _entries(lab_dir, _case_entry) if lab_dir is not None else {}
    return _pair_labels(images, labels, lab_dir or root)


def _glas_cases(root: Path) -> list[CasePaths]:
    files = _entries(root, _image_file)
    labels = {n: p for n, p in files.items() if n.endswith("_anno") or _label_base(n) in files}
    images = {n: p for n, p in files.items() if n not in labels}
    return _pair_labels(images, labels, root)


def _msd_cases(root: Path) -> list[CasePaths]:
    img_dir = _one_dir(root, ("imagestr",), "training image")
    if img_dir is None:
        raise LDSegError(f"{root}: expected an imagesTr/ folder (and labelsTr/, dataset.json) for Layout = msd")
    info = dataset_info(root)
    ending = info.file_ending if info is not None and info.file_ending else None
    images = _entries(img_dir, _with_ending(ending), _namer(ending))
    groups = group_channels(images, img_dir, strict=True)
    if groups and info is not None and info.channels is not None:
        n = len(next(iter(groups.values())))
        if n != info.channels:
            first = next(iter(groups.values()))[0]
            raise LDSegError(f"{info.source}: {info.channel_key} lists {info.channels} channel(s) but {first} "
                             f"belongs to a case of {n} channel file(s) in {img_dir.name}/")
    lab_dir = _one_dir(root, ("labelstr",), "training label")
    labels = _entries(lab_dir, _with_ending(ending), _namer(ending)) if lab_dir is not None else {}
    if groups is None:
        return [CasePaths(n, p, labels.get(n)) for n, p in images.items()]
    return [CasePaths(n, ch[0], labels.get(n), tuple(ch)) for n, ch in groups.items()]


def _with_ending(ending):
    if ending is None:
        return lambda p: p.is_file() and readers.suffix(p) in KNOWN
    return lambda p: p.is_file() and p.name.lower().endswith(ending.lower())


def _namer(ending):
    return stem if ending is None else (lambda p: p.name[: len(p.name) - len(ending)])


def group_channels(files: dict, where: Path, strict: bool = False, channels: int | None = None) -> dict | None:
    """nnU-Net channel files ``{"x_0000": p0, "x_0001": p1}`` -> ``{"x": [p0, p1]}``; None when the names
    are not all ``<case>_NNNN``, numbered ``_0000`` .. without gaps, with the same count for every case (and
    ``channels`` of them when given). ``strict``: names that break the rule are an error naming the file."""
    if not files:
        return None
    matches = {n: CHANNEL_RE.match(n) for n in files}
    plain = [files[n] for n, m in matches.items() if m is None]
    if plain:
        if strict and len(plain) < len(files):
            example = next(files[n].name for n, m in matches.items() if m is not None)
            raise LDSegError(f"{plain[0]}: no channel number; expected <case>_0000 names like {example} "
                             f"(one file per channel) for every file of {where.name}/")
        return None
    groups: dict[str, dict[int, Path]] = {}
    for n, m in matches.items():
        groups.setdefault(m[1], {})[int(m[2])] = files[n]
    counts = {}
    for case, chans in groups.items():
        if sorted(chans) != list(range(len(chans))):
            if not strict:
                return None
            numbers = ", ".join(f"_{k:04d}" for k in sorted(chans))
            raise LDSegError(f"{where}: case {case} has channel files {numbers}; expected _0000 .. "
                             f"_{len(chans) - 1:04d} without gaps")
        counts.setdefault(len(chans), case)
    if len(counts) > 1 or (channels is not None and set(counts) != {channels}):
        if not strict or len(counts) == 1:
            return None
        (n1, c1), (n2, c2) = sorted(counts.items())[:2]
        raise LDSegError(f"{where}: case {c1} has {n1} channel file(s) but case {c2} has {n2}; expected the "
                         "same channels for every case")
    return {case: [chans[k] for k in range(len(chans))] for case, chans in groups.items()}


def find_inputs(path, channels: int | None = None) -> list[CasePaths]:
    """Unlabelled cases to predict: one file, or the image files / frame folders of one folder (not recursive;
    files of unknown type are skipped). nnU-Net ``<case>_0000`` channel files are grouped into one case when
    every file follows that naming with ``channels`` files per case (any equal count when None)."""
    path = Path(path)
    if path.is_file():
        if readers.suffix(path) not in KNOWN:
            raise LDSegError(f"{path}: unsupported file type; expected PNG/BMP/JPG/TIFF, .nii(.gz) or .npy"
                             + (f"; convert it to NIfTI first, e.g. with {OTHER_FORMATS[readers.suffix(path)]}"
                                if readers.suffix(path) in OTHER_FORMATS else ""))
        return [CasePaths(stem(path), path, None)]
    if not path.is_dir():
        raise LDSegError(f"{path}: input not found (expected an image, a volume or a folder of them)")
    files = _entries(path, _case_entry)
    files_only = {n: p for n, p in files.items() if p.is_file()}
    groups = group_channels(files_only, path, channels=channels) if len(files_only) == len(files) else None
    if groups is not None and (channels is not None or len(groups) > 1 or len(files) == 1):
        cases = [CasePaths(n, ch[0], None, tuple(ch) if len(ch) > 1 else ()) for n, ch in groups.items()]
    else:
        cases = [CasePaths(n, p, None) for n, p in files.items()]
    if not cases:
        raise LDSegError(f"{path}: no images found (expected PNG/BMP/JPG/TIFF, .nii(.gz) or .npy files)"
                         + other_formats_hint(path))
    return sorted(cases, key=lambda c: natural_key(c.name))


def require_labels(cases) -> None:
    """Training cases must all have a label: one line naming the first image without one."""
    missing = [c for c in cases if c.label is None]
    if missing:
        c = missing[0]
        raise LDSegError(f"{c.image}: no label found for case {c.name}; training needs a label for every training "
                         f"case ({len(missing)} of {len(list(cases))} have none; a label is named {c.name} or "
                         f"{c.name}_label, _seg, _mask, _anno ... in the label folder)")


# ------------------------------------------------------------------------------------------- dataset.json

def dataset_info(root, layout: str = "auto") -> DatasetInfo | None:
    """``root/dataset.json`` (MSD or nnU-Net v2) -> DatasetInfo; None when there is none. ``labels``:
    nnU-Net v2 ``{"background": 0, "a": 1}`` or MSD ``{"0": "background", "1": "a"}`` (values 0 .. K-1);
    ``channel_names`` (v2) or ``modality`` (MSD): ``{"0": "CT"}``; ``file_ending``; ``numTraining``."""
    del layout  # any layout may carry a dataset.json
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise LDSegError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise LDSegError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(meta, dict):
        raise LDSegError(f"{path}: expected a JSON object with labels, channel_names, file_ending ...")
    class_names = _parse_labels(path, meta.get("labels"))
    key = "channel_names" if "channel_names" in meta else "modality"
    channel_names = _parse_channels(path, key, meta.get(key))
    ending = meta.get("file_ending")
    if ending is not None and not (isinstance(ending, str) and ending.startswith(".") and len(ending) > 1):
        raise LDSegError(f"{path}: file_ending = {ending!r}; expected a file ending such as \".nii.gz\"")
    num = meta.get("numTraining")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 0):
        raise LDSegError(f"{path}: numTraining = {num!r}; expected a whole number")
    return DatasetInfo(path, len(class_names) if class_names else None,
                       len(channel_names) if channel_names else None, class_names, channel_names, ending, num, key)


def _int_key(text) -> int | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, str) and text.strip().isdigit():
        return int(text.strip())
    return None


def _parse_labels(path: Path, labels) -> tuple | None:
    if labels is None:
        return None
    expected = 'expected {"background": 0, "name": 1, ...} (nnU-Net v2) or {"0": "background", ...} (MSD)'
    if not isinstance(labels, dict) or not labels:
        raise LDSegError(f"{path}: labels = {labels!r}; {expected}")
    if all(isinstance(v, str) and _int_key(k) is not None for k, v in labels.items()):
        by_value = {_int_key(k): v for k, v in labels.items()}           # MSD: "0": "background"
    else:
        by_value = {}
        for name, value in labels.items():                             # nnU-Net v2: "background": 0
            if isinstance(value, (list, tuple)):
                raise LDSegError(f"{path}: labels {name!r} = {value}: region-based labels are not supported; "
                                 "expected one integer per class")
            if str(name).lower() == "ignore":
                raise LDSegError(f"{path}: labels has an 'ignore' label; not supported (expected classes only)")
            v = _int_key(value)
            if v is None or v in by_value:
                raise LDSegError(f"{path}: labels {name!r} = {value!r}; {expected} with distinct integers")
            by_value[v] = str(name)
    if sorted(by_value) != list(range(len(by_value))):
        raise LDSegError(f"{path}: label values {sorted(by_value)}; expected consecutive 0 .. {len(by_value) - 1} "
                         "(0 = background)")
    if len(by_value) < 2:
        raise LDSegError(f"{path}: labels has only {by_value}; expected background and at least one class")
    return tuple(by_value[k] for k in range(len(by_value)))


def _parse_channels(path: Path, key: str, channels) -> tuple | None:
    if channels is None:
        return None
    if not isinstance(channels, dict) or not channels:
        raise LDSegError(f"{path}: {key} = {channels!r}; expected {{\"0\": \"CT\", \"1\": \"T2\", ...}}")
    by_index = {_int_key(k): str(v) for k, v in channels.items()}
    if None in by_index or sorted(by_index) != list(range(len(by_index))):
        raise LDSegError(f"{path}: {key} keys {list(channels)}; expected \"0\" .. \"{len(channels) - 1}\"")
    return tuple(by_index[k] for k in range(len(by_index)))


def resolve_counts(info: DatasetInfo | None, classes: int, channels: int, binarize: bool = False):
    """``[Data] Classes`` / ``Channels`` (0 = left out) with dataset.json -> (classes, channels, class_names).

    A value left out comes from dataset.json, else DEFAULT_CLASSES / DEFAULT_CHANNELS; a value set in the
    config that contradicts dataset.json is an error naming both. ``class_names`` is dataset.json's names
    (index = label value) or None; with ``binarize`` the labels are foreground / background, so dataset.json's
    classes are neither compared nor named."""
    names = None
    if binarize:
        classes = classes or DEFAULT_CLASSES
    elif info is not None and info.classes is not None:
        if classes and classes != info.classes:
            raise LDSegError(f"{info.source}: labels lists {info.classes} classes ({', '.join(info.class_names)}) "
                             f"but [Data] Classes = {classes}; leave Classes out to use dataset.json, or make "
                             "them agree")
        classes, names = info.classes, info.class_names
    else:
        classes = classes or DEFAULT_CLASSES
    if info is not None and info.channels is not None:
        if channels and channels != info.channels:
            raise LDSegError(f"{info.source}: {info.channel_key} lists {info.channels} channel(s) "
                             f"({', '.join(info.channel_names)}) but [Data] Channels = {channels}; leave Channels "
                             "out to use dataset.json, or make them agree")
        channels = info.channels
    else:
        channels = channels or DEFAULT_CHANNELS
    return classes, channels, names


def resolve_data(data_cfg):
    """A ``[Data]`` section with Classes / Channels filled in (see :func:`resolve_counts`) ->
    (new section, class names or None, DatasetInfo or None)."""
    import dataclasses

    info = dataset_info(data_cfg.Root, data_cfg.Layout) if Path(data_cfg.Root).is_dir() else None
    classes, channels, names = resolve_counts(info, data_cfg.Classes, data_cfg.Channels, data_cfg.Binarize)
    return dataclasses.replace(data_cfg, Classes=classes, Channels=channels), names, info


# ------------------------------------------------------------------------------------------- loading

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


def _read(path: Path, kind: str, is_label: bool, canonical: bool = True):
    """-> (array, geometry); images get a channel axis, labels none. 3D NIfTI is reoriented to RAS+ when
    ``canonical``."""
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
    arr, geom = readers.read_volume(path, canonical=canonical and kind == "3d")  # 2d+t: keep the time axis
    if arr.ndim == 4 and not is_label:
        return arr, geom
    if arr.ndim == 4 and arr.shape[-1] == 1:  # a label volume stored with a channel axis
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise LDSegError(f"{path}: array of shape {arr.shape}; Kind = {kind} expects (H, W, "
                         f"{'T' if kind == '2d+t' else 'D'})" + ("" if is_label else " or with a channel axis"))
    if is_label:
        return readers.label_ids(arr, path), geom
    return arr[..., None], geom


def _read_image(paths: CasePaths, kind: str, canonical: bool = True):
    """All channel files of a case -> ((*spatial, C) image, geometry of the first file)."""
    files = [Path(p) for p in paths.images]
    image, geom = _read(files[0], kind, False, canonical)
    if not np.all(np.isfinite(image)):
        raise LDSegError(f"{files[0]}: contains NaN or Inf values")
    if len(files) == 1:
        return image, geom
    parts = [image]
    for f in files[1:]:
        arr, _ = _read(f, kind, False, canonical)
        if arr.shape[:-1] != image.shape[:-1]:
            raise LDSegError(f"{f}: shape {arr.shape[:-1]} differs from channel file {files[0].name} shape "
                             f"{image.shape[:-1]}; expected one grid for every channel of a case")
        if not np.all(np.isfinite(arr)):
            raise LDSegError(f"{f}: contains NaN or Inf values")
        parts.append(arr)
    return np.concatenate(parts, axis=-1), geom


def load_case(paths: CasePaths, kind: str, classes: int, binarize: bool = False,
              channels: int | None = None, canonical: bool = True) -> Case:
    """Read one case and check it: finite image, ``channels`` channels (when given; an RGB image with equal
    channels is one grey channel), label of the image's spatial shape, values in [0, classes). Separate channel
    files (``paths.channels``) are stacked.
    ``canonical``: 3D NIfTI images and labels are reoriented to RAS+ (``[Data] Orientation = RAS``)."""
    if kind not in KINDS:
        raise LDSegError(f"Kind = {kind}: expected one of {', '.join(KINDS)}")
    image, geom = _read_image(paths, kind, canonical)
    if channels == 1 and image.shape[-1] == 3 and (image == image[..., :1]).all():
        image = image[..., :1]  # a grey image saved as RGB (R = G = B) holds one channel
    if channels is not None and image.shape[-1] != channels:
        files = "" if len(paths.images) == 1 else f" (+{len(paths.images) - 1} channel file(s))"
        raise LDSegError(f"{paths.image}{files}: has {image.shape[-1]} channels but [Data] Channels = {channels}")
    label = None
    if paths.label is not None:
        label, _ = _read(Path(paths.label), kind, True, canonical)
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
