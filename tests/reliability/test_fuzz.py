"""200 randomly corrupted files through the readers: only the project's own error type may come out."""
import io

import imageio.v3 as iio
import numpy as np

from ldseg_suite.data import layout, readers
from ldseg_suite.errors import LDSegError


def seeds(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    out = {}
    for ext in (".png", ".bmp", ".tif"):
        buf = io.BytesIO()
        iio.imwrite(buf, img, extension=ext)
        out[ext] = buf.getvalue()
    for ext in (".nii.gz", ".nii"):
        readers.write_nifti(tmp_path / f"seed{ext}", rng.random((6, 5, 4)).astype(np.float32), np.eye(4))
        out[ext] = (tmp_path / f"seed{ext}").read_bytes()
    buf = io.BytesIO()
    np.save(buf, rng.random((6, 5, 4)).astype(np.float32))
    out[".npy"] = buf.getvalue()
    return out


def corrupt(data: bytes, rng) -> bytes:
    b = bytearray(data)
    how = rng.integers(0, 4)
    if how == 0:  # flip random bytes
        for i in rng.integers(0, len(b), rng.integers(1, 20)):
            b[i] = rng.integers(0, 256)
    elif how == 1:  # truncate
        b = b[: rng.integers(0, len(b))]
    elif how == 2:  # insert junk
        at = rng.integers(0, len(b))
        b[at:at] = bytes(rng.integers(0, 256, rng.integers(1, 64)).astype(np.uint8))
    else:  # corrupt the header region
        for i in rng.integers(0, min(len(b), 400), 8):
            b[i] = rng.integers(0, 256)
    return bytes(b)


def test_fuzzed_files_raise_only_ldseg_errors(tmp_path):
    rng = np.random.default_rng(1234)
    originals = seeds(tmp_path)
    kinds = list(originals)
    outcomes = {"ok": 0, "LDSegError": 0}
    for i in range(200):
        ext = kinds[i % len(kinds)]
        path = tmp_path / f"f{i}{ext}"
        path.write_bytes(corrupt(originals[ext], rng))
        kind = "2d" if ext in (".png", ".bmp", ".tif") else "3d"
        try:
            layout.load_case(layout.CasePaths(f"f{i}", path, None), kind, classes=2)
            outcomes["ok"] += 1
        except LDSegError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            outcomes["LDSegError"] += 1
    assert sum(outcomes.values()) == 200
    assert outcomes["LDSegError"] >= 50  # most corruptions must actually be caught
