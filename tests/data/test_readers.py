"""readers: image / label / NIfTI / npy reading, atomic writers, named errors."""
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from ldseg_suite.data import readers
from ldseg_suite.errors import LDSegError


def test_nifti_round_trip_keeps_values_affine_and_spacing(tmp_path):
    affine = np.array([[0.5, 0, 0, 10.0], [0, 0.7, 0, -3.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    vol = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    out = tmp_path / "sub" / "v.nii.gz"
    readers.write_nifti(out, vol, affine)
    back, geom = readers.read_nifti(out)
    assert back.dtype == np.float32 and back.shape == (6, 5, 4)
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(geom.affine, affine)
    assert geom.affine.dtype == np.float64 and geom.affine.shape == (4, 4)
    assert geom.spacing == pytest.approx((0.5, 0.7, 2.0))
    assert geom.shape == (6, 5, 4)
    assert [p.name for p in out.parent.iterdir()] == ["v.nii.gz"]  # atomic: no temp file left behind


def test_nifti_labels_keep_integer_values(tmp_path):
    lab = np.random.default_rng(1).integers(0, 3, (4, 4, 2))  # int64 is stored as int32
    readers.write_nifti(tmp_path / "l.nii", lab, np.diag([1.5, 1.5, 3.0, 1.0]))
    back, geom = readers.read_nifti(tmp_path / "l.nii")
    np.testing.assert_array_equal(back, lab)
    assert geom.spacing == (1.5, 1.5, 3.0)


def test_read_image_channels(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    iio.imwrite(tmp_path / "g.png", grey)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    iio.imwrite(tmp_path / "a.png", rgba)
    g, a = readers.read_image(tmp_path / "g.png"), readers.read_image(tmp_path / "a.png")
    assert g.shape == (3, 4, 1) and g.dtype == np.float32 and g[2, 3, 0] == 11.0  # raw intensities
    assert a.shape == (3, 4, 3) and a[0, 0].tolist() == [200.0, 0.0, 0.0]  # alpha dropped
    wide = np.full((3, 4), 40000, np.uint16)
    iio.imwrite(tmp_path / "w.tif", wide)
    assert readers.read_image(tmp_path / "w.tif")[0, 0, 0] == 40000.0


def test_read_label_image_rgb_first_channel_and_palette_indices(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = (2, 9, 9)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    lab = readers.read_label_image(tmp_path / "rgb.png")
    assert lab.dtype == np.int32 and lab.tolist() == [[0, 2], [0, 0]]
    pal = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)  # colours are not the ids
    pal.save(tmp_path / "pal.png")
    assert readers.read_label_image(tmp_path / "pal.png").tolist() == [[0, 1], [2, 3]]


def test_write_png_round_trip_and_dtype_check(tmp_path):
    arr = np.arange(20, dtype=np.uint8).reshape(4, 5)
    readers.write_png(tmp_path / "p" / "x.png", arr)
    np.testing.assert_array_equal(readers.read_label_image(tmp_path / "p" / "x.png"), arr)
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["x.png"]
    with pytest.raises(LDSegError, match=r"y\.png: cannot write float32"):
        readers.write_png(tmp_path / "y.png", arr.astype(np.float32))


def test_read_npy(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((2, 3, 4), np.int16))
    assert readers.read_npy(tmp_path / "v.npy").shape == (2, 3, 4)
    np.savez(tmp_path / "v.npz", a=np.zeros(3))
    with pytest.raises(LDSegError, match=r"v\.npz: an \.npz archive"):
        readers.read_npy(tmp_path / "v.npz")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(LDSegError, match=r"s\.npy: \.npy of dtype <U1"):
        readers.read_npy(tmp_path / "s.npy")


@pytest.mark.parametrize("name, reader, needle", [
    ("broken.png", readers.read_image, "cannot read image"),
    ("broken.bmp", readers.read_label_image, "cannot read image"),
    ("broken.tif", readers.read_image, "cannot read image"),
    ("broken.nii.gz", readers.read_nifti, "cannot read NIfTI"),
    ("broken.nii", readers.read_nifti, "cannot read NIfTI"),
    ("broken.npy", readers.read_npy, "cannot read .npy"),
])
def test_corrupt_and_missing_files_raise_ldseg_errors_naming_the_file(tmp_path, name, reader, needle):
    with pytest.raises(LDSegError, match="file not found") as exc:
        reader(tmp_path / name)
    assert name in str(exc.value)
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n this is not really an image or volume" * 3)
    with pytest.raises(LDSegError) as exc:
        reader(tmp_path / name)
    msg = str(exc.value)
    assert str(tmp_path / name) in msg and needle in msg and "\n" not in msg


def test_truncated_nifti_raises_ldseg_error(tmp_path):
    readers.write_nifti(tmp_path / "t.nii.gz", np.ones((8, 8, 8), np.float32), np.eye(4))
    data = (tmp_path / "t.nii.gz").read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(LDSegError, match=r"t\.nii\.gz: cannot read NIfTI"):
        readers.read_nifti(tmp_path / "t.nii.gz")


def test_writer_errors_are_ldseg_errors(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LDSegError, match=r"afile/v\.nii\.gz: cannot write"):
        readers.write_nifti(tmp_path / "afile" / "v.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(LDSegError, match="affine of shape"):
        readers.write_nifti(tmp_path / "v.nii.gz", np.zeros((2, 2, 2)), np.eye(3))


# ------------------------------------------------------------------------------------------- orientation

def _ras_volume(tmp_path, shape=(5, 6, 7), zooms=(0.8, 1.1, 2.5)):
    """A RAS+ volume with distinct values everywhere, its affine and path."""
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [10.0, -4.0, 3.0]
    vol = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    path = readers.write_nifti(tmp_path / "ras.nii.gz", vol, affine)
    return vol, affine, path


@pytest.mark.parametrize("axcodes", [("P", "S", "L"), ("L", "P", "S"), ("I", "R", "A")])
def test_reoriented_file_reads_to_the_same_ras_array_and_writes_back_as_stored(tmp_path, axcodes):
    import nibabel as nib

    from tests.data.fixtures import store_reoriented

    vol, affine, ras_path = _ras_volume(tmp_path)
    stored_path = store_reoriented(ras_path, tmp_path / "stored.nii.gz", axcodes)
    stored = nib.load(str(stored_path))
    assert nib.aff2axcodes(stored.affine) == axcodes
    assert stored.shape != vol.shape or not np.array_equal(np.asarray(stored.dataobj), vol)  # stored otherwise

    arr, geom = readers.read_nifti(stored_path)
    np.testing.assert_array_equal(arr, vol)  # the network sees the RAS+ array whatever the storage
    np.testing.assert_allclose(geom.affine, affine, atol=1e-5)
    assert geom.shape == (5, 6, 7) and geom.spacing == pytest.approx((0.8, 1.1, 2.5))
    assert geom.input_shape == stored.shape
    assert geom.input_spacing == pytest.approx(stored.header.get_zooms())
    np.testing.assert_array_equal(geom.input_affine, stored.affine)

    out = readers.write_nifti_like(tmp_path / "pred.nii.gz", (arr > 100).astype(np.uint8), geom)
    back = nib.load(str(out))
    np.testing.assert_array_equal(back.affine, stored.affine)  # the input's own affine, bit for bit
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(stored.dataobj) > 100)
    assert back.get_data_dtype() == np.uint8
    assert int(back.header["sform_code"]) == int(stored.header["sform_code"])
    assert int(back.header["qform_code"]) == int(stored.header["qform_code"])
    assert back.header.get_zooms() == pytest.approx(stored.header.get_zooms())


def test_spacing_permutes_with_the_axes(tmp_path):
    import nibabel as nib

    affine = np.zeros((4, 4))
    affine[0, 1], affine[1, 2], affine[2, 0], affine[3, 3] = -0.5, 2.0, 1.5, 1.0  # stored axes: z, -x, y
    readers.write_nifti(tmp_path / "p.nii.gz", np.zeros((3, 4, 5), np.float32), affine)
    assert nib.aff2axcodes(nib.load(str(tmp_path / "p.nii.gz")).affine) == ("S", "L", "A")
    arr, geom = readers.read_nifti(tmp_path / "p.nii.gz")
    assert arr.shape == geom.shape == (4, 5, 3)  # RAS+: x (stored axis 1), y (2), z (0)
    assert geom.spacing == pytest.approx((0.5, 2.0, 1.5))
    assert geom.input_shape == (3, 4, 5) and geom.input_spacing == pytest.approx((1.5, 0.5, 2.0))
    assert nib.aff2axcodes(geom.affine) == ("R", "A", "S")
    raw, raw_geom = readers.read_nifti(tmp_path / "p.nii.gz", canonical=False)
    assert raw.shape == raw_geom.shape == (3, 4, 5) and raw_geom.spacing == pytest.approx((1.5, 0.5, 2.0))


def test_ras_files_are_untouched_and_extra_axes_follow(tmp_path):
    vol, affine, path = _ras_volume(tmp_path)
    arr, geom = readers.read_nifti(path)
    np.testing.assert_array_equal(arr, vol)
    np.testing.assert_array_equal(geom.affine, geom.input_affine)
    probs = np.stack([arr, -arr], axis=-1)  # (H, W, D, K) class maps keep their trailing axis
    np.testing.assert_array_equal(geom.to_input(probs), probs)
    readers.write_nifti_like(tmp_path / "probs.nii.gz", probs, geom)
    back, _ = readers.read_nifti(tmp_path / "probs.nii.gz")
    np.testing.assert_array_equal(back, probs)
    with pytest.raises(LDSegError, match=r"bad\.nii\.gz: array of shape \(5, 6\); expected the input grid"):
        readers.write_nifti_like(tmp_path / "bad.nii.gz", arr[:, :, 0], geom)


def test_write_nifti_like_of_a_plain_geometry_uses_its_affine(tmp_path):
    geom = readers.plain_geometry((4, 4, 2))
    readers.write_nifti_like(tmp_path / "n.nii.gz", np.ones((4, 4, 2), np.uint8), geom)
    back, g = readers.read_nifti(tmp_path / "n.nii.gz")
    assert back.sum() == 32 and g.affine.tolist() == np.eye(4).tolist()


def test_multichannel_volume_reorients_spatial_axes_only(tmp_path):
    import nibabel as nib

    from tests.data.fixtures import store_reoriented

    vol = np.random.default_rng(0).random((4, 5, 6, 2)).astype(np.float32)  # MSD: channels on the 4th axis
    readers.write_nifti(tmp_path / "a.nii.gz", vol, np.diag([1.0, 2.0, 3.0, 1.0]))
    store_reoriented(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", ("S", "L", "P"))
    arr, geom = readers.read_nifti(tmp_path / "b.nii.gz")
    assert nib.load(str(tmp_path / "b.nii.gz")).shape == (6, 4, 5, 2)
    np.testing.assert_array_equal(arr, vol)
    assert geom.shape == (4, 5, 6) and geom.spacing == (1.0, 2.0, 3.0)
    readers.write_nifti_like(tmp_path / "c.nii.gz", arr, geom)
    back = nib.load(str(tmp_path / "c.nii.gz"))
    np.testing.assert_array_equal(back.affine, nib.load(str(tmp_path / "b.nii.gz")).affine)
    assert back.shape == (6, 4, 5, 2) and back.header.get_zooms() == (3.0, 1.0, 2.0, 1.0)


def test_float_labels_must_hold_class_ids(tmp_path):
    import nibabel as nib

    from ldseg_suite.data import layout

    exported = np.array([0.0, 0.9999, 2.00001], np.float32)  # a float export of ids: read as ids
    assert readers.label_ids(exported, "x").tolist() == [0, 1, 2]
    resampled = np.zeros((6, 6, 4), np.float32)
    resampled[2:4, 2:4] = 1.0
    resampled[1, 2:4] = 0.5  # what linear interpolation of a label leaves at its border
    for k, lab in enumerate((resampled > 0.7, resampled)):
        for sub in ("images", "labels"):
            (tmp_path / sub).mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.random.default_rng(k).random((6, 6, 4)).astype(np.float32), np.eye(4)),
                 tmp_path / "images" / f"c{k}.nii.gz")
        nib.save(nib.Nifti1Image(lab.astype(np.float32), np.eye(4)), tmp_path / "labels" / f"c{k}.nii.gz")
    good, bad = layout.find_cases(tmp_path, "folders")
    assert layout.load_case(good, "3d", classes=2, channels=1).label.sum() == 16
    with pytest.raises(LDSegError, match=r"c1\.nii\.gz: label holds non-integer values \(e\.g\. 0\.5\)"):
        layout.load_case(bad, "3d", classes=2, channels=1)
