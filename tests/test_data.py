"""Readers, layouts, the tf.data pipeline, splits and the demo-data generators."""
import imageio.v3 as iio
import numpy as np
import pytest

from ldseg_suite.data import layout, pipeline, readers, splits, synthetic
from ldseg_suite.errors import LDSegError


def test_nifti_round_trip_keeps_affine_and_spacing(tmp_path):
    affine = np.array([[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    vol = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    readers.write_nifti(tmp_path / "v.nii.gz", vol, affine)
    back, geom = readers.read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(back, vol)
    np.testing.assert_allclose(geom.affine, affine)
    assert geom.spacing == pytest.approx((0.5, 0.7, 2.0)) and geom.shape == (6, 5, 4)
    assert not list(tmp_path.glob(".tmp_*"))  # written atomically, no leftovers


def _write_pair(folder, name, shape=(8, 8), label_value=1):
    iio.imwrite(folder / f"{name}.bmp", np.full(shape + (3,), 100, np.uint8))
    lab = np.zeros(shape, np.uint8)
    lab[2:5, 2:5] = label_value
    iio.imwrite(folder / f"{name}_anno.bmp", lab)


def test_glas_naming_pairs_images_with_their_annotations(tmp_path):
    for name in ("train_1", "train_2", "train_10", "testA_1"):
        _write_pair(tmp_path, name, label_value=3)
    cases = layout.find_cases(tmp_path, "auto")
    assert [c.name for c in cases] == ["testA_1", "train_1", "train_2", "train_10"]
    assert all(c.label.name == f"{c.name}_anno.bmp" for c in cases)
    case = layout.load_case(cases[1], "2d", classes=2, binarize=True)
    assert case.image.shape == (8, 8, 3) and case.label.max() == 1  # instance ids -> foreground
    with pytest.raises(LDSegError, match=r"train_1_anno.bmp: label values \[3\] outside \[0, 1\]"):
        layout.load_case(cases[1], "2d", classes=2)


def test_folders_layout_pairs_by_stem_including_nii_gz(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("b", "a"):
        readers.write_nifti(tmp_path / "images" / f"{name}.nii.gz", np.zeros((4, 4, 3)), np.eye(4))
        readers.write_nifti(tmp_path / "labels" / f"{name}.nii.gz", np.zeros((4, 4, 3)), np.eye(4))
    cases = layout.find_cases(tmp_path)
    assert [(c.name, c.label.name) for c in cases] == [("a", "a.nii.gz"), ("b", "b.nii.gz")]
    case = layout.load_case(cases[0], "3d", classes=3)
    assert case.image.shape == (4, 4, 3, 1) and case.label.shape == (4, 4, 3)


@pytest.mark.parametrize("problem, needle", [
    ("shape", "label shape (6, 8, 4) differs from image img.nii.gz shape (8, 8, 4)"),
    ("nan", "contains NaN or Inf"),
    ("corrupt", "cannot read NIfTI"),
    ("missing", "file not found"),
])
def test_bad_files_raise_named_errors(tmp_path, problem, needle):
    img = tmp_path / "img.nii.gz"
    lab = tmp_path / "lab.nii.gz"
    data = np.zeros((8, 8, 4), np.float32)
    if problem == "nan":
        data[0, 0, 0] = np.nan
    readers.write_nifti(img, data, np.eye(4))
    readers.write_nifti(lab, np.zeros((6, 8, 4) if problem == "shape" else (8, 8, 4)), np.eye(4))
    if problem == "corrupt":
        img.write_bytes(b"not a nifti file at all")
    if problem == "missing":
        img.unlink()
    with pytest.raises(LDSegError) as exc:
        layout.load_case(layout.CasePaths("x", img, lab), "3d", classes=2)
    assert needle in str(exc.value)
    assert ("lab.nii.gz" if problem == "shape" else "img.nii.gz") in str(exc.value)


def test_2d_plus_t_from_a_folder_of_frames(tmp_path):
    (tmp_path / "images" / "cine1").mkdir(parents=True)
    (tmp_path / "labels" / "cine1").mkdir(parents=True)
    for t in range(3):
        iio.imwrite(tmp_path / "images" / "cine1" / f"frame_{t}.png", np.full((6, 5), 10 * t, np.uint8))
        iio.imwrite(tmp_path / "labels" / "cine1" / f"frame_{t}.png", np.full((6, 5), t % 2, np.uint8))
    (case_paths,) = layout.find_cases(tmp_path)
    case = layout.load_case(case_paths, "2d+t", classes=2)
    assert case.image.shape == (6, 5, 3, 1) and case.label.shape == (6, 5, 3)
    np.testing.assert_array_equal(case.image[0, 0, :, 0], [0, 10, 20])
    np.testing.assert_array_equal(case.label[0, 0], [0, 1, 0])


def test_empty_or_missing_data_folder(tmp_path):
    with pytest.raises(LDSegError, match="no cases found"):
        layout.find_cases(tmp_path)
    with pytest.raises(LDSegError, match="data folder not found"):
        layout.find_cases(tmp_path / "nope")


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 8)])
def test_dataset_shapes_and_dtypes(shape):
    n = 5
    images = np.random.default_rng(0).random((n, *shape, 1)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 3, (n, *shape))
    ds = pipeline.make_dataset(images, labels, classes=3, batch_size=2, augment=True, shuffle=True, seed=0)
    x, y = next(iter(ds))
    assert x.shape == (2, *shape, 1) and x.dtype == "float32"
    assert y.shape == (2, *shape, 3) and y.dtype == "float32"
    np.testing.assert_allclose(np.asarray(y).sum(-1), 1.0)
    assert sum(1 for _ in ds) == 3


def test_augmentation_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (8, 16, 16))
    labels[:, 0, :5] = 1  # asymmetric content so flips and rotations are visible
    images = labels[..., None].astype(np.float32)
    changed = 0
    for seed in range(4):
        ds = pipeline.make_dataset(images, labels, classes=2, batch_size=8, augment=True, seed=seed)
        x, y = next(iter(ds))
        x, y = np.asarray(x)[..., 0], np.asarray(y)[..., 1]
        # intensity jitter: x = y * scale + shift, so foreground pixels are exactly those above the midpoint
        for xi, yi in zip(x, y):
            lo, hi = xi.min(), xi.max()
            np.testing.assert_array_equal(xi > (lo + hi) / 2, yi > 0.5)
        changed += int(not np.array_equal(y, labels))
    assert changed >= 1


def test_split_is_deterministic_and_by_subject():
    names = [f"s{i:02d}_f{j}" for i in range(10) for j in range(3)]
    by_subject = dict(subject_of=lambda n: n.split("_")[0])
    a = splits.split_cases(names, (0.6, 0.2, 0.2), seed=1, **by_subject)
    b = splits.split_cases(names, (0.6, 0.2, 0.2), seed=1, **by_subject)
    c = splits.split_cases(names, (0.6, 0.2, 0.2), seed=2, **by_subject)
    assert a == b and a != c
    assert sorted(sum(a.values(), [])) == sorted(names)
    for part in ("train", "val"):
        assert not {n.split("_")[0] for n in a[part]} & {n.split("_")[0] for n in a["test"]}
    with pytest.raises(LDSegError, match="needs at least"):
        splits.split_cases(["only"], (0.7, 0.1, 0.2))


def test_split_file_round_trip(tmp_path):
    split = splits.split_cases([f"c{i}" for i in range(10)], seed=0)
    splits.write_split(tmp_path / "split.csv", split)
    assert splits.read_split(tmp_path / "split.csv") == split


def test_resize_restores_original_shape():
    lab = np.zeros((50, 70), np.int32)
    lab[10:30, 20:50] = 1
    small = pipeline.resize_label(lab, (32, 32))
    back = pipeline.restore_label(small, (50, 70))
    assert back.shape == (50, 70) and set(np.unique(back)) == {0, 1}
    assert (back == lab).mean() > 0.95


def test_generators_are_deterministic():
    a, b = synthetic.make_glands(2, 64, seed=3), synthetic.make_glands(2, 64, seed=3)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert a[0][1].max() >= 1
    e1, e2 = synthetic.make_echo(1, 32, 8, seed=0), synthetic.make_echo(1, 32, 8, seed=0)
    np.testing.assert_array_equal(e1[0][0], e2[0][0])
    assert set(np.unique(e1[0][1])) == {0, 1, 2}
    k = synthetic.make_knee(1, (32, 32, 16), seed=0)
    assert set(np.unique(k[0][1])) == {0, 1, 2}
