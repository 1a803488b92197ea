"""layout: finding cases (folders / glas), loading them as 2D, 3D and 2D+t arrays, and the checks."""
import imageio.v3 as iio
import numpy as np
import pytest

from ldseg_suite.data import layout, readers
from ldseg_suite.errors import LDSegError


def test_glas_naming_pairs_images_with_their_annotations(glas_folder):
    cases = layout.find_cases(glas_folder)  # auto -> glas (no images/ folder)
    assert [c.name for c in cases] == ["testA_3", "testA_4", "train_1", "train_2", "train_10"]  # natural sort
    pairs = {c.name: (c.image.name, c.label.name if c.label else None) for c in cases}
    assert pairs["train_1"] == ("train_1.bmp", "train_1_anno.bmp")
    assert pairs["testA_3"] == ("testA_3.bmp", "testA_3_anno.bmp")
    assert pairs["testA_4"] == ("testA_4.bmp", None)
    assert layout.find_cases(glas_folder, "glas") == cases


def test_glas_case_loads_as_2d_and_binarizes_instances(glas_folder):
    case = layout.load_case(layout.CasePaths("train_2", glas_folder / "train_2.bmp", glas_folder / "train_2_anno.bmp"),
                            "2d", classes=2, binarize=True)
    assert case.image.shape == (8, 10, 3) and case.image.dtype == np.float32
    assert case.label.shape == (8, 10) and case.label.dtype == np.int32
    assert np.unique(case.label).tolist() == [0, 1] and case.label.sum() == 9 + 8
    assert case.geometry.shape == (8, 10) and case.geometry.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(case.geometry.affine, np.eye(4))


def test_instance_labels_without_binarize_name_file_values_and_range(glas_folder):
    paths = layout.CasePaths("train_1", glas_folder / "train_1.bmp", glas_folder / "train_1_anno.bmp")
    with pytest.raises(LDSegError) as exc:
        layout.load_case(paths, "2d", classes=2)
    msg = str(exc.value)
    assert "train_1_anno.bmp" in msg and "label values [3]" in msg and "[0, 1]" in msg
    assert layout.load_case(paths, "2d", classes=4).label.max() == 3


def test_folders_layout_pairs_by_stem_including_nii_gz(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    vol = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    for name in ("case10", "case2", "case1.v2"):
        readers.write_nifti(tmp_path / "images" / f"{name}.nii.gz", vol, np.diag([0.8, 0.8, 2.5, 1]))
    for name in ("case10", "case1.v2"):
        readers.write_nifti(tmp_path / "labels" / f"{name}.nii.gz", (vol > 30).astype(np.uint8), np.eye(4))
    (tmp_path / "labels" / "notes.txt").write_text("ignored")
    cases = layout.find_cases(tmp_path)
    assert [(c.name, c.label.name if c.label else None) for c in cases] == [
        ("case1.v2", "case1.v2.nii.gz"), ("case2", None), ("case10", "case10.nii.gz")]
    case = layout.load_case(cases[2], "3d", classes=2)
    assert case.image.shape == (4, 5, 3, 1) and case.label.shape == (4, 5, 3)
    assert case.label.dtype == np.int32 and case.label.sum() == 29
    assert case.geometry.shape == (4, 5, 3) and case.geometry.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert case.geometry.affine[2, 2] == pytest.approx(2.5)
    assert layout.load_case(cases[1], "3d", classes=2).label is None


def test_folders_layout_with_npy_volumes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "images" / "a.npy", np.ones((4, 4, 2, 2), np.float32))  # already has a channel axis
    np.save(tmp_path / "labels" / "a.npy", np.ones((4, 4, 2), np.uint8))
    case = layout.load_case(layout.find_cases(tmp_path, "folders")[0], "3d", classes=2)
    assert case.image.shape == (4, 4, 2, 2) and case.label.shape == (4, 4, 2)
    assert case.geometry.spacing == (1.0, 1.0, 1.0)


def test_two_files_with_one_stem_are_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    readers.write_png(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint8))
    np.save(tmp_path / "images" / "a.npy", np.zeros((4, 4, 2)))
    with pytest.raises(LDSegError, match="a.npy and a.png have the same name 'a'"):
        layout.find_cases(tmp_path)


def test_2d_plus_t_from_nifti_and_from_frame_folders(tmp_path):
    cine = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    readers.write_nifti(tmp_path / "images" / "c0.nii.gz", cine, np.diag([0.5, 0.5, 1.0, 1.0]))
    readers.write_nifti(tmp_path / "labels" / "c0.nii.gz", (cine > 0.5).astype(np.uint8), np.eye(4))
    for t in range(3):
        readers.write_png(tmp_path / "images" / "c1" / f"frame_{t * 5}.png", np.full((6, 5), 10 * t, np.uint8))
        readers.write_png(tmp_path / "labels" / "c1" / f"frame_{t * 5}.png", np.full((6, 5), t % 2, np.uint8))
    c0, c1 = layout.find_cases(tmp_path)
    a = layout.load_case(c0, "2d+t", classes=2)
    assert a.image.shape == (6, 5, 4, 1) and a.label.shape == (6, 5, 4)
    assert a.geometry.spacing == pytest.approx((0.5, 0.5, 1.0))
    b = layout.load_case(c1, "2d+t", classes=2)
    assert b.image.shape == (6, 5, 3, 1) and b.label.shape == (6, 5, 3)
    np.testing.assert_array_equal(b.image[0, 0, :, 0], [0, 10, 20])  # frame_0, frame_5, frame_10: natural order
    np.testing.assert_array_equal(b.label[0, 0], [0, 1, 0])
    with pytest.raises(LDSegError, match="only valid for Kind = 2d\\+t"):
        layout.load_case(c1, "3d", classes=2)


def _volume_case(tmp_path, image_shape=(8, 8, 4), label_shape=(8, 8, 4), nan=False, label_value=1):
    img, lab = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    data = np.zeros(image_shape, np.float32)
    if nan:
        data[1, 2, 3] = np.inf if nan == "inf" else np.nan
    readers.write_nifti(img, data, np.eye(4))
    readers.write_nifti(lab, np.full(label_shape, label_value, np.uint8), np.eye(4))
    return layout.CasePaths("x", img, lab)


def test_mismatched_shapes_name_both_files_and_shapes(tmp_path):
    paths = _volume_case(tmp_path, label_shape=(6, 8, 4))
    with pytest.raises(LDSegError) as exc:
        layout.load_case(paths, "3d", classes=2)
    msg = str(exc.value)
    assert "lab.nii.gz" in msg and "img.nii.gz" in msg and "(6, 8, 4)" in msg and "(8, 8, 4)" in msg


@pytest.mark.parametrize("nan", [True, "inf"])
def test_nan_or_inf_image_names_the_file(tmp_path, nan):
    with pytest.raises(LDSegError, match=r"img\.nii\.gz: contains NaN or Inf"):
        layout.load_case(_volume_case(tmp_path, nan=nan), "3d", classes=2)


def test_bad_label_values_name_file_values_and_range(tmp_path):
    with pytest.raises(LDSegError) as exc:
        layout.load_case(_volume_case(tmp_path, label_value=5), "3d", classes=3)
    msg = str(exc.value)
    assert "lab.nii.gz" in msg and "[5]" in msg and "[0, 2]" in msg


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    paths = _volume_case(tmp_path)
    paths.label.unlink()
    with pytest.raises(LDSegError, match=r"lab\.nii\.gz: file not found"):
        layout.load_case(paths, "3d", classes=2)
    paths.image.write_bytes(b"garbage")
    with pytest.raises(LDSegError, match=r"img\.nii\.gz: cannot read NIfTI"):
        layout.load_case(paths, "3d", classes=2)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(LDSegError, match=r"x\.png: cannot read image"):
        layout.load_case(layout.CasePaths("x", tmp_path / "x.png", None), "2d", classes=2)


def test_wrong_kind_or_format(tmp_path):
    paths = _volume_case(tmp_path)
    with pytest.raises(LDSegError, match="Kind = 2D: expected one of 2d, 3d, 2d\\+t"):
        layout.load_case(paths, "2D", classes=2)
    with pytest.raises(LDSegError, match=r"img\.nii\.gz: Kind = 2d expects PNG"):
        layout.load_case(paths, "2d", classes=2)
    iio.imwrite(tmp_path / "p.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(LDSegError, match=r"p\.png: unsupported volume format"):
        layout.load_case(layout.CasePaths("p", tmp_path / "p.png", None), "3d", classes=2)


def test_missing_or_empty_data_folder(tmp_path):
    with pytest.raises(LDSegError, match="nope: data folder not found"):
        layout.find_cases(tmp_path / "nope")
    with pytest.raises(LDSegError, match="no cases found"):
        layout.find_cases(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(LDSegError, match="no cases found"):
        layout.find_cases(tmp_path)
    with pytest.raises(LDSegError, match="Layout = grid: expected auto, folders, glas or msd"):
        layout.find_cases(tmp_path, "grid")
