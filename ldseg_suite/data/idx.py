"""IDX files (the MNIST / Fashion-MNIST format), plain or gzip. Every failure becomes an LDSegError naming the file.

Layout: magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data, big-endian, row-major.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ldseg_suite.data.readers import _atomic, _need_file
from ldseg_suite.errors import LDSegError

# IDX type byte -> big-endian dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(t).newbyteorder("="): code for code, t in IDX_TYPES.items()}
SPLITS = ("train", "t10k")
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by content, so a misnamed file still reads)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise LDSegError(f"{path}: cannot read ({exc.__class__.__name__}); "
                         "expected a complete IDX file, plain or gzip-compressed") from None


def read_idx(path) -> np.ndarray:
    """IDX (plain or .gz) -> array of the stored type and shape, native byte order."""
    path = _need_file(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise LDSegError(f"{path}: truncated IDX file ({len(buf)} bytes); expected at least the 4-byte magic")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in IDX_TYPES or buf[3] == 0:
        raise LDSegError(f"{path}: bad IDX magic {buf[:4].hex(' ')}; expected 00 00 <type in "
                         f"{', '.join(f'{c:02x}' for c in IDX_TYPES)}> <ndim >= 1>")
    dtype, ndim = np.dtype(IDX_TYPES[buf[2]]), buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise LDSegError(f"{path}: truncated IDX header ({len(buf)} bytes); expected {header} bytes for {ndim} dims")
    shape = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, 4))
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(buf) - header
    if have < need:
        raise LDSegError(f"{path}: truncated IDX data ({have} bytes); expected {need} bytes for shape {shape}")
    if have > need:
        raise LDSegError(f"{path}: {have - need} trailing bytes after the IDX data; expected {need} bytes "
                         f"for shape {shape}")
    arr = np.frombuffer(buf, dtype, offset=header, count=need // dtype.itemsize).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable native-order copy


def write_idx(path, array) -> Path:
    """Array (uint8, int8, int16, int32, float32 or float64; bool as uint8) -> IDX, gzip when the name ends in .gz.

    Written atomically; gzip output has no time stamp or name, so the same array gives the same bytes.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None or not 1 <= array.ndim <= 255 or max(array.shape) >= 2 ** 32:
        raise LDSegError(f"{path}: cannot write {array.dtype} array of shape {array.shape} as IDX; expected "
                         "uint8, int8, int16, int32, float32 or float64 with 1..255 dims")
    data = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
            + np.ascontiguousarray(array, IDX_TYPES[code]).tobytes())

    def write(p):
        if str(path).lower().endswith(".gz"):
            with open(p, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(data)
        else:
            Path(p).write_bytes(data)

    return _atomic(path, write)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise LDSegError(f"{root / name}[.gz]: file not found; expected an MNIST-style IDX folder")


def load_idx_pair(root, split: str = "train"):
    """``root/<split>-images-idx3-ubyte[.gz]`` and ``<split>-labels-idx1-ubyte[.gz]`` -> (uint8 (N, 28, 28),
    uint8 (N,)); split is "train" or "t10k". Works on a full MNIST or Fashion-MNIST folder."""
    if split not in SPLITS:
        raise LDSegError(f"{root}: IDX split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    images_path = _find(root, f"{split}-images-idx3-ubyte")
    labels_path = _find(root, f"{split}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise LDSegError(f"{images_path}: {images.dtype} array of shape {images.shape}; "
                         "expected uint8 images of shape (N, 28, 28)")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise LDSegError(f"{labels_path}: {labels.dtype} array of shape {labels.shape}; "
                         "expected uint8 labels of shape (N,)")
    if len(images) != len(labels):
        raise LDSegError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}; "
                         "expected one label per image")
    return images, labels
