"""idx: IDX read/write round trips, named errors, and the shipped Fashion-MNIST subset."""
import gzip
from pathlib import Path

import numpy as np
import pytest

from ldseg_suite.data import idx
from ldseg_suite.errors import LDSegError

FASHION = Path(__file__).resolve().parents[2] / "data" / "fashion"


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_uint8_round_trip_plain_and_gz(tmp_path, name):
    arr = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    out = idx.write_idx(tmp_path / name, arr)
    raw = out.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    if not name.endswith(".gz"):
        assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]) and len(raw) == 16 + 60
    back = idx.read_idx(out)
    assert back.dtype == np.uint8 and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # atomic: no temp file left behind


def test_gz_output_is_deterministic(tmp_path):
    arr = np.arange(100, dtype=np.uint8)
    a, b = idx.write_idx(tmp_path / "a.gz", arr), idx.write_idx(tmp_path / "b.gz", arr)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_other_types_round_trip_big_endian(tmp_path, dtype):
    arr = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    out = idx.write_idx(tmp_path / "x.idx", arr)
    code = {np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}[dtype]
    raw = out.read_bytes()
    assert raw[:4] == bytes([0, 0, code, 2]) and raw[12:] == arr.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    back = idx.read_idx(out)
    assert back.dtype == dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_reads_a_hand_made_int16_file(tmp_path):
    (tmp_path / "h").write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2]) + b"\x01\x02\xff\xfe")
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "h"), [258, -2])


def _write(path, data: bytes, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("data, gz, words", [
    (bytes([0, 0, 8, 1, 0, 0, 0, 5]) + b"abc", False, "truncated IDX data"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5]) + b"abc", True, "truncated IDX data"),
    (bytes([0, 0, 8, 3, 0, 0, 0]), False, "truncated IDX header"),
    (b"\x00\x00", False, "expected at least the 4-byte magic"),
    (bytes([0, 1, 8, 1, 0, 0, 0, 1, 7]), False, "bad IDX magic"),
    (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]), False, "bad IDX magic"),
    (bytes([0, 0, 8, 0]), False, "bad IDX magic"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, False, "bad IDX magic"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 7, 8]), False, "trailing bytes"),
])
def test_bad_files_name_the_file(tmp_path, data, gz, words):
    path = _write(tmp_path / "bad-idx1-ubyte", data, gz)
    with pytest.raises(LDSegError, match=words) as err:
        idx.read_idx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_cut_gzip_and_missing_file(tmp_path):
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 200]) + bytes(200))[:-12])
    with pytest.raises(LDSegError, match="cut.gz: cannot read"):
        idx.read_idx(cut)
    with pytest.raises(LDSegError, match="nope.gz: file not found"):
        idx.read_idx(tmp_path / "nope.gz")


def test_write_rejects_unsupported_arrays(tmp_path):
    for arr in (np.zeros(3, np.int64), np.zeros((), np.uint8), np.array(["a"])):
        with pytest.raises(LDSegError, match="x.gz: cannot write"):
            idx.write_idx(tmp_path / "x.gz", arr)
    assert list(tmp_path.iterdir()) == []


def _pair(root, n_images=4, n_labels=4, image_shape=(28, 28), gz=True):
    ext = ".gz" if gz else ""
    idx.write_idx(root / f"train-images-idx3-ubyte{ext}", np.zeros((n_images, *image_shape), np.uint8))
    idx.write_idx(root / f"train-labels-idx1-ubyte{ext}", np.arange(n_labels, dtype=np.uint8))


@pytest.mark.parametrize("gz", [True, False])
def test_load_pair_plain_or_gz(tmp_path, gz):
    _pair(tmp_path, gz=gz)
    images, labels = idx.load_idx_pair(tmp_path, "train")
    assert images.shape == (4, 28, 28) and labels.tolist() == [0, 1, 2, 3]


def test_load_pair_errors_name_the_file(tmp_path):
    with pytest.raises(LDSegError, match=r"train-images-idx3-ubyte\[\.gz\]: file not found"):
        idx.load_idx_pair(tmp_path, "train")
    with pytest.raises(LDSegError, match="expected one of train, t10k"):
        idx.load_idx_pair(tmp_path, "test")
    _pair(tmp_path, n_labels=3)
    with pytest.raises(LDSegError, match="train-labels-idx1-ubyte.gz: 3 labels for 4 images") as err:
        idx.load_idx_pair(tmp_path, "train")
    assert "expected one label per image" in str(err.value)
    _pair(tmp_path, image_shape=(28, 27))
    with pytest.raises(LDSegError, match=r"train-images-idx3-ubyte.gz: .*expected uint8 images of shape \(N, 28, 28\)"):
        idx.load_idx_pair(tmp_path, "train")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(LDSegError, match=r"t10k-labels-idx1-ubyte\[\.gz\]: file not found"):
        idx.load_idx_pair(tmp_path, "t10k")
    idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(LDSegError, match="t10k-images-idx3-ubyte: truncated"):
        idx.load_idx_pair(tmp_path, "t10k")


@pytest.mark.parametrize("split, n, per_class", [("train", 6000, 600), ("t10k", 1000, 100)])
def test_shipped_fashion_subset(split, n, per_class):
    images, labels = idx.load_idx_pair(FASHION, split)
    assert images.shape == (n, 28, 28) and labels.shape == (n,)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    assert images.max() == 255 and images.mean() > 50  # real pictures, not blank


def test_shipped_fashion_subset_size():
    files = sorted(p.name for p in FASHION.iterdir())
    assert files == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                     "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert sum(p.stat().st_size for p in FASHION.iterdir()) < 5_000_000
