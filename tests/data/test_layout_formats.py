"""layout: the layouts users already have (anchor Image/ + Label/, label suffixes, MSD / nnU-Net v2 with
dataset.json), Layout = auto, predict inputs, and dataset.json against the config."""
import json

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest

from ldseg_suite.data import layout, readers
from ldseg_suite.errors import LDSegError
from tests.data.fixtures import make_anchor_folder, make_msd_folder, store_reoriented


def test_anchor_2d_folder_is_found_with_auto_and_loads(tmp_path):
    root = make_anchor_folder(tmp_path, "2d")
    assert layout.detect_layout(root) == "folders"
    cases = layout.find_cases(root)
    assert [(c.name, c.image.name, c.label.name) for c in cases] == [
        ("Case1", "Case1.bmp", "Case1_label.bmp"), ("Case2", "Case2.bmp", "Case2_label.bmp"),
        ("Case3", "Case3.bmp", "Case3_label.bmp")]
    case = layout.load_case(cases[0], "2d", classes=2, channels=3)
    assert case.image.shape == (32, 32, 3) and case.label.shape == (32, 32)
    assert np.unique(case.label).tolist() == [0, 1]
    assert case.image[case.label > 0].mean() > case.image[case.label == 0].mean() + 60  # the object is bright


def test_grey_image_saved_as_rgb_or_rgba_is_one_channel_and_colour_is_not(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (12, 10), dtype=np.uint8)
    label = (grey > 128).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", np.stack([grey, grey, grey, np.full_like(grey, 255)], -1))  # RGBA, R = G = B
    iio.imwrite(tmp_path / "g_label.png", label)
    iio.imwrite(tmp_path / "c.png", np.stack([grey, grey, 255 - grey], -1))
    paths = {c.name: c for c in layout.find_cases(tmp_path, "glas")}
    case = layout.load_case(paths["g"], "2d", classes=2, channels=1)
    assert case.image.shape == (12, 10, 1) and np.array_equal(case.image[..., 0], grey)
    assert layout.load_case(paths["g"], "2d", classes=2, channels=3).image.shape == (12, 10, 3)
    with pytest.raises(LDSegError, match=r"c\.png: has 3 channels but \[Data\] Channels = 1"):
        layout.load_case(paths["c"], "2d", classes=2, channels=1)


def test_anchor_nifti_folder_is_found_with_auto_and_loads(tmp_path):
    root = make_anchor_folder(tmp_path, "3d")
    cases = layout.find_cases(root, "auto")
    assert [(c.image.name, c.label.name) for c in cases][2] == ("Case3.nii.gz", "Case3_label.nii.gz")
    case = layout.load_case(cases[1], "3d", classes=2, channels=1)
    assert case.image.shape == (16, 16, 16, 1) and case.label.shape == (16, 16, 16)
    assert case.geometry.spacing == (1.0, 1.0, 2.0) and 100 < case.label.sum() < 1000


@pytest.mark.parametrize("img_dir, lab_dir, suffix", [
    ("images", "labels", ""), ("Images", "Masks", "_mask"), ("img", "LABEL", "_seg"), ("IMAGE", "gt", "_gt"),
    ("image", "labels", "_labels"), ("Images", "annotations", "_anno"), ("images", "mask", "_Label")])
def test_folder_names_any_case_and_label_suffixes(tmp_path, img_dir, lab_dir, suffix):
    for name in ("a1", "a2", "a10"):
        readers.write_png(tmp_path / img_dir / f"{name}.png", np.full((4, 5), 7, np.uint8))
        if name != "a2":
            readers.write_png(tmp_path / lab_dir / f"{name}{suffix}.png", np.eye(4, 5, dtype=np.uint8))
    cases = layout.find_cases(tmp_path)
    assert [(c.name, c.label.name if c.label else None) for c in cases] == [
        ("a1", f"a1{suffix}.png"), ("a2", None), ("a10", f"a10{suffix}.png")]
    assert layout.load_case(cases[2], "2d", classes=2).label.sum() == 4


def test_two_labels_for_one_image_and_two_image_folders_are_errors(tmp_path):
    readers.write_png(tmp_path / "Image" / "c.png", np.zeros((4, 4), np.uint8))
    readers.write_png(tmp_path / "Label" / "c.png", np.zeros((4, 4), np.uint8))
    readers.write_png(tmp_path / "Label" / "c_label.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(LDSegError, match=r"Label: c.png and c_label.png are both labels of c.png"):
        layout.find_cases(tmp_path)
    (tmp_path / "Label" / "c.png").unlink()
    assert layout.find_cases(tmp_path)[0].label.name == "c_label.png"
    (tmp_path / "images").mkdir()
    with pytest.raises(LDSegError, match=r"Image/ and images/ are both image folders"):
        layout.find_cases(tmp_path)


def test_flat_folder_pairs_other_label_suffixes_too(tmp_path):
    for name in ("x1", "x2"):
        iio.imwrite(tmp_path / f"{name}.png", np.zeros((4, 4, 3), np.uint8))
    iio.imwrite(tmp_path / "x1_mask.png", np.ones((4, 4), np.uint8))
    cases = layout.find_cases(tmp_path)  # auto -> glas
    assert [(c.name, c.label.name if c.label else None) for c in cases] == [("x1", "x1_mask.png"), ("x2", None)]


@pytest.mark.parametrize("style", ["nnunet", "msd"])
def test_msd_folder_stacks_channel_files_and_reads_dataset_json(tmp_path, style):
    root = make_msd_folder(tmp_path, cases=4, style=style)
    assert layout.detect_layout(root) == "msd"
    cases = layout.find_cases(root)
    assert [c.name for c in cases] == ["case_000", "case_001", "case_002", "case_003"]  # imagesTs/ not here
    first = cases[0]
    assert [p.name for p in first.images] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
    assert first.image.name == "case_000_0000.nii.gz" and first.label.name == "case_000.nii.gz"
    case = layout.load_case(first, "3d", classes=3, channels=2)
    assert case.image.shape == (16, 16, 16, 2) and case.label.shape == (16, 16, 16)
    assert sorted(np.unique(case.label).tolist()) == [0, 1, 2]
    t1, t2 = case.image[..., 0], case.image[..., 1]
    assert t1[case.label == 1].mean() > 0.8 and t2[case.label == 2].mean() > 0.8  # channel order kept
    assert case.geometry.spacing == pytest.approx((1.0, 1.2, 1.5))
    info = layout.dataset_info(root)
    assert (info.classes, info.channels) == (3, 2)
    assert info.class_names == ("background", "a", "b") and info.channel_names == ("T1", "T2")
    assert info.num_training == 4 and info.source == root / "dataset.json"
    assert info.file_ending == (".nii.gz" if style == "nnunet" else None)
    with pytest.raises(LDSegError, match=r"case_000_0000\.nii\.gz \(\+1 channel file\(s\)\): has 2 channels but "
                                         r"\[Data\] Channels = 1"):
        layout.load_case(first, "3d", classes=3, channels=1)


def test_msd_test_images_are_predict_inputs(tmp_path):
    root = make_msd_folder(tmp_path, cases=4, test_cases=2)
    inputs = layout.find_inputs(root / "imagesTs", channels=2)
    assert [(c.name, len(c.images), c.label) for c in inputs] == [("test_000", 2, None), ("test_001", 2, None)]
    assert layout.load_case(inputs[1], "3d", classes=3, channels=2).image.shape == (16, 16, 16, 2)
    singles = layout.find_inputs(root / "imagesTs", channels=1)  # one channel per model: every file is a case
    assert [c.name for c in singles] == ["test_000_0000", "test_000_0001", "test_001_0000", "test_001_0001"]


def test_predict_inputs_of_plain_folders_and_single_files(tmp_path):
    for k in range(12):
        readers.write_png(tmp_path / "in" / f"frame_{k:04d}.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "in" / "notes.txt").write_text("skipped")
    cases = layout.find_inputs(tmp_path / "in")
    assert len(cases) == 12 and cases[0].name == "frame_0000" and not cases[0].channels
    assert len(layout.find_inputs(tmp_path / "in", channels=3)) == 12
    one = layout.find_inputs(tmp_path / "in" / "frame_0003.png")
    assert [(c.name, c.image.name) for c in one] == [("frame_0003", "frame_0003.png")]
    with pytest.raises(LDSegError, match=r"notes\.txt: unsupported file type"):
        layout.find_inputs(tmp_path / "in" / "notes.txt")
    with pytest.raises(LDSegError, match=r"nope: input not found"):
        layout.find_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LDSegError, match=r"empty: no images found"):
        layout.find_inputs(tmp_path / "empty")


def test_msd_naming_errors_name_the_file(tmp_path):
    root = make_msd_folder(tmp_path, cases=3, test_cases=0)
    (root / "imagesTr" / "case_001_0001.nii.gz").rename(root / "imagesTr" / "case_001_0002.nii.gz")
    with pytest.raises(LDSegError, match=r"imagesTr: case case_001 has channel files _0000, _0002; expected "
                                         r"_0000 \.\. _0001 without gaps"):
        layout.find_cases(root)
    (root / "imagesTr" / "case_001_0002.nii.gz").unlink()
    with pytest.raises(LDSegError, match=r"case case_001 has 1 channel file\(s\) but case case_000 has 2"):
        layout.find_cases(root)
    (root / "imagesTr" / "case_001_0000.nii.gz").rename(root / "imagesTr" / "case_001.nii.gz")
    with pytest.raises(LDSegError, match=r"case_001\.nii\.gz: no channel number; expected <case>_0000 names"):
        layout.find_cases(root)


def test_msd_dataset_json_channel_count_must_match_the_files(tmp_path):
    root = make_msd_folder(tmp_path, cases=3, test_cases=0)
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(LDSegError, match=r"dataset\.json: channel_names lists 1 channel\(s\) but .*case_000_0000"):
        layout.find_cases(root)


def test_msd_original_one_file_per_case_and_missing_label(tmp_path):
    aff = np.eye(4)
    for name in ("hippo_001", "hippo_002"):
        readers.write_nifti(tmp_path / "imagesTr" / f"{name}.nii.gz", np.zeros((4, 4, 4, 2), np.float32), aff)
    readers.write_nifti(tmp_path / "labelsTr" / "hippo_001.nii.gz", np.ones((4, 4, 4), np.uint8), aff)
    (tmp_path / "imagesTr" / "._hippo_001.nii.gz").write_bytes(b"AppleDouble")  # MSD tarballs carry these
    cases = layout.find_cases(tmp_path)
    assert [(c.name, c.channels, c.label.name if c.label else None) for c in cases] == [
        ("hippo_001", (), "hippo_001.nii.gz"), ("hippo_002", (), None)]
    assert layout.load_case(cases[0], "3d", classes=2, channels=2).image.shape == (4, 4, 4, 2)


def test_channel_files_of_different_shapes_name_both(tmp_path):
    root = make_msd_folder(tmp_path, cases=3, test_cases=0)
    readers.write_nifti(root / "imagesTr" / "case_002_0001.nii.gz", np.zeros((16, 16, 8), np.float32), np.eye(4))
    case = layout.find_cases(root)[2]
    with pytest.raises(LDSegError) as exc:
        layout.load_case(case, "3d", classes=3)
    msg = str(exc.value)
    assert "case_002_0001.nii.gz: shape (16, 16, 8) differs from channel file case_002_0000.nii.gz shape " \
           "(16, 16, 16)" in msg and "\n" not in msg


def test_auto_with_both_layouts_is_an_error_naming_both(tmp_path):
    root = make_msd_folder(tmp_path, cases=2, test_cases=0)
    (root / "Images").mkdir()
    with pytest.raises(LDSegError, match=r"ambiguous layout: found imagesTr/ \(Layout = msd\) and Images/ "
                                         r"\(Layout = folders\)"):
        layout.find_cases(root)
    assert len(layout.find_cases(root, "msd")) == 2


def test_no_cases_lists_the_layouts_tried(tmp_path):
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(LDSegError) as exc:
        layout.find_cases(tmp_path)
    msg = str(exc.value)
    assert "no cases found (Layout = auto; tried msd (imagesTr/" in msg and "folders (images/" in msg
    assert "glas (name.png" in msg
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(LDSegError, match=r"no cases found \(Layout = auto; tried msd"):
        layout.find_cases(tmp_path)
    with pytest.raises(LDSegError, match=r"expected an imagesTr/ folder"):
        layout.find_cases(tmp_path / "imagesTr", "msd")


def test_reoriented_case_loads_like_its_ras_twin_and_label_follows(tmp_path):
    root = make_anchor_folder(tmp_path, "3d", cases=1)
    twin = tmp_path / "twin"
    store_reoriented(root / "Image" / "Case1.nii.gz", twin / "Image" / "Case1.nii.gz", ("A", "I", "L"))
    store_reoriented(root / "Label" / "Case1_label.nii.gz", twin / "Label" / "Case1_label.nii.gz", ("L", "A", "I"))
    a = layout.load_case(layout.find_cases(root)[0], "3d", classes=2)
    b = layout.load_case(layout.find_cases(twin)[0], "3d", classes=2)  # image and label stored differently
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert b.geometry.spacing == a.geometry.spacing == (1.0, 1.0, 2.0)
    assert nib.aff2axcodes(b.geometry.input_affine) == ("A", "I", "L")
    stored = layout.load_case(layout.find_cases(twin)[0], "3d", classes=2, canonical=False)  # Orientation = stored
    assert stored.image.shape == (16, 16, 16, 1) and not np.array_equal(stored.image, a.image)
    assert stored.geometry.spacing == (1.0, 2.0, 1.0)  # A, I (the 2 mm axis), L as stored
    assert not np.array_equal(stored.label, a.label)  # each file in its own stored order


# ------------------------------------------------------------------------------------------- dataset.json

def _json(tmp_path, meta):
    (tmp_path / "dataset.json").write_text(json.dumps(meta) if not isinstance(meta, str) else meta)
    return tmp_path


@pytest.mark.parametrize("meta, needle", [
    ("{not json", "dataset.json: not valid JSON"),
    ([1, 2], "expected a JSON object"),
    ({"labels": {"background": 0, "tumour": [1, 2]}}, "region-based labels are not supported"),
    ({"labels": {"background": 0, "a": 1, "ignore": 2}}, "'ignore' label; not supported"),
    ({"labels": {"background": 0, "a": 2}}, "label values [0, 2]; expected consecutive 0 .. 1"),
    ({"labels": {"0": "background", "2": "a"}}, "label values [0, 2]"),
    ({"labels": {"background": 0, "a": "x"}}, "labels 'a' = 'x'"),
    ({"labels": {"background": 0}}, "expected background and at least one class"),
    ({"channel_names": {"0": "CT", "2": "PET"}}, "channel_names keys ['0', '2']"),
    ({"modality": ["CT"]}, "modality = ['CT']"),
    ({"file_ending": "nii"}, "file_ending = 'nii'"),
    ({"numTraining": "many"}, "numTraining = 'many'"),
])
def test_bad_dataset_json_is_one_line_naming_it(tmp_path, meta, needle):
    with pytest.raises(LDSegError) as exc:
        layout.dataset_info(_json(tmp_path, meta))
    msg = str(exc.value)
    assert str(tmp_path / "dataset.json") in msg and needle in msg and "\n" not in msg


def test_dataset_info_absent_or_partial(tmp_path):
    assert layout.dataset_info(tmp_path) is None
    info = layout.dataset_info(_json(tmp_path, {"labels": {"background": "0", "liver": "1"}}))
    assert info.classes == 2 and info.class_names == ("background", "liver") and info.channels is None


def test_resolve_counts_fills_left_out_keys_and_rejects_contradictions(tmp_path):
    info = layout.dataset_info(make_msd_folder(tmp_path, cases=2, test_cases=0))
    assert layout.resolve_counts(info, 0, 0) == (3, 2, ("background", "a", "b"))
    assert layout.resolve_counts(info, 3, 2) == (3, 2, ("background", "a", "b"))
    assert layout.resolve_counts(None, 0, 0) == (layout.DEFAULT_CLASSES, layout.DEFAULT_CHANNELS, None)
    assert layout.resolve_counts(None, 4, 1) == (4, 1, None)
    assert layout.resolve_counts(info, 0, 2, binarize=True) == (2, 2, None)
    with pytest.raises(LDSegError) as exc:
        layout.resolve_counts(info, 2, 0)
    msg = str(exc.value)
    assert msg.startswith(str(info.source)) and "labels lists 3 classes (background, a, b)" in msg
    assert "[Data] Classes = 2" in msg
    with pytest.raises(LDSegError, match=r"dataset\.json: channel_names lists 2 channel\(s\) \(T1, T2\) but "
                                         r"\[Data\] Channels = 3"):
        layout.resolve_counts(info, 0, 3)


# ------------------------------------------------------------------------------------------- [Data] keys

def _data_cfg(root, extra=""):
    from ldseg_suite import config, sections

    text = f"[Run]\nMethod = ldseg\n[Data]\nRoot = {root}\nKind = 3d\nSize = 16, 16, 16\n{extra}"
    return config.parse(text, "t.ini", sections.schema_for("ldseg", "t.ini"))


def test_config_takes_left_out_classes_and_channels_from_dataset_json(tmp_path):
    root = make_msd_folder(tmp_path, cases=2, test_cases=0)
    cfg = _data_cfg(root)
    assert (cfg.Data.Classes, cfg.Data.Channels, cfg.Data.Layout, cfg.Data.Orientation) == (3, 2, "auto", "RAS")
    assert "Classes = 3" in cfg.to_ini() and "Channels = 2" in cfg.to_ini()  # the run's config records them
    assert (_data_cfg(root, "Classes = 3\nChannels = 2\n").Data.Classes) == 3
    plain = _data_cfg(tmp_path / "elsewhere")  # no dataset.json (or no folder yet): the old defaults
    assert (plain.Data.Classes, plain.Data.Channels) == (2, 3)
    with pytest.raises(LDSegError) as exc:
        _data_cfg(root, "Classes = 2\n")
    msg = str(exc.value)
    assert msg.startswith("t.ini: [Data] ") and str(root / "dataset.json") in msg
    assert "labels lists 3 classes (background, a, b) but [Data] Classes = 2" in msg and "\n" not in msg
    with pytest.raises(LDSegError, match=r"t\.ini: \[Data\] Classes = 1: expected at least 2"):
        _data_cfg(root, "Classes = 1\n")
    with pytest.raises(LDSegError, match=r"\[Data\] Layout = grid: expected one of auto, folders, glas, msd"):
        _data_cfg(root, "Layout = grid\n")


def test_require_labels_names_the_first_unlabelled_image(tmp_path):
    cases = layout.find_cases(make_anchor_folder(tmp_path, "2d"))
    layout.require_labels(cases)
    (tmp_path / "anchor_2d" / "Label" / "Case2_label.bmp").unlink()
    with pytest.raises(LDSegError) as exc:
        layout.require_labels(layout.find_cases(tmp_path / "anchor_2d"))
    msg = str(exc.value)
    assert msg.startswith(str(tmp_path / "anchor_2d" / "Image" / "Case2.bmp") + ": no label found for case Case2")
    assert "training needs a label for every training case (1 of 3 have none" in msg


def test_dicom_or_metaimage_folders_get_a_conversion_hint(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        for k in range(2):
            (tmp_path / sub / f"case{k}.dcm").write_bytes(b"DICM")
            (tmp_path / sub / f"case{k}.mha").write_text("ObjectType = Image")
    with pytest.raises(LDSegError, match=r"no cases found .*found 4 \.dcm file\(s\), 4 \.mha file\(s\), which are "
                                         r"not read: convert them to NIfTI \(\.nii\.gz\) first"):
        layout.find_cases(tmp_path)
    with pytest.raises(LDSegError, match=r"no images found .*found 2 \.dcm file\(s\)"):
        layout.find_inputs(tmp_path / "images")
    with pytest.raises(LDSegError, match=r"case0\.mha: unsupported file type.*convert it to NIfTI first"):
        layout.find_inputs(tmp_path / "images" / "case0.mha")
