"""The U-Net baseline end to end (patch training at native size, sliding windows, input geometry and orientation)
and LDSeg's --mode compare against it and Otsu."""
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ldseg_suite import cli
from tests.configs import tiny_ini, write_glas

UNET_3D = """
[Run]
Method = unet
Seed = 0
[Data]
Root = {root}
Kind = 3d
Size = 8, 8, 8
Channels = 1
Classes = 2
Split = 0.5, 0.25, 0.25
Patch = 8, 8, 8
Spacing = 1, 1, 1
[Model]
BaseChannels = 4
ChannelMult = 1, 2
[Inference]
Window = 8, 8, 8
BatchSize = 3
[Training]
Epochs = 1
StepsPerEpoch = 3
BatchSize = 2
EMA = 0
"""


def _blob_volume(k, shape=(20, 18, 12)):
    rng = np.random.default_rng(k)
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    mask = (((grid - centre[:, None, None, None]) / np.array([6, 5, 3])[:, None, None, None]) ** 2).sum(0) < 1
    image = mask * 1.0 + 0.2 * rng.standard_normal(shape)
    return image.astype(np.float32), mask.astype(np.uint8)


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory):
    """A U-Net trained on patches of anisotropic (1 x 1 x 2 mm) volumes resampled to 1 mm."""
    tmp = tmp_path_factory.mktemp("u3d")
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 4, 7]
    for k in range(4):
        image, mask = _blob_volume(k)
        (tmp / "data/images").mkdir(parents=True, exist_ok=True)
        (tmp / "data/labels").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, affine), tmp / f"data/images/v{k}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), tmp / f"data/labels/v{k}.nii.gz")
    cfg = tmp / "unet3d.ini"
    cfg.write_text(UNET_3D.format(root=tmp / "data"))
    out = tmp / "run"
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", str(out)]) == 0
    return cfg, out, affine


def test_patch_trained_unet_predicts_at_the_input_shape_and_affine(trained_3d):
    cfg, out, affine = trained_3d
    assert cli.main(["--cfg", str(cfg), "--mode", "infer", "--out", str(out)]) == 0
    preds = sorted((out / "predictions").glob("*.nii.gz"))
    assert len(preds) == 1
    img = nib.load(preds[0])
    assert img.shape == (20, 18, 12)
    np.testing.assert_allclose(img.affine, affine)
    table = pd.read_csv(out / "metrics.csv")
    assert table.case.iloc[-1] == "mean" and 0 <= table.dice.iloc[-1] <= 1


def test_predict_keeps_a_flipped_permuted_input_orientation(trained_3d, tmp_path):
    cfg, out, affine = trained_3d
    image, _ = _blob_volume(9)
    ras = nib.Nifti1Image(image, affine)
    # the same scan stored with its axes permuted and two of them flipped
    stored = ras.as_reoriented(np.array([[2, -1], [0, 1], [1, -1]], float))
    assert stored.shape == (18, 12, 20) and nib.aff2axcodes(stored.affine) != ("R", "A", "S")
    (tmp_path / "ras").mkdir()
    (tmp_path / "stored").mkdir()
    nib.save(ras, tmp_path / "ras/scan.nii.gz")
    nib.save(stored, tmp_path / "stored/scan.nii.gz")
    for name in ("ras", "stored"):
        assert cli.main(["--cfg", str(cfg), "--mode", "predict", "--input", str(tmp_path / name),
                         "--out", str(tmp_path / f"out_{name}"),
                         "--set", f"Output.Weights={out / 'model.weights.h5'}"]) == 0
    pred_ras = nib.load(tmp_path / "out_ras/predictions/scan.nii.gz")
    pred_stored = nib.load(tmp_path / "out_stored/predictions/scan.nii.gz")
    np.testing.assert_allclose(pred_stored.affine, stored.affine)
    assert pred_stored.shape == stored.shape
    np.testing.assert_array_equal(np.asarray(nib.as_closest_canonical(pred_stored).dataobj),
                                  np.asarray(pred_ras.dataobj))




def test_compare_tables_ldseg_unet_and_otsu_with_sign_tests(tmp_path, capsys):
    root = write_glas(tmp_path / "data")
    (tmp_path / "unet.ini").write_text(tiny_ini(root, "unet"))
    assert cli.main(["--cfg", str(tmp_path / "unet.ini"), "--mode", "train", "--out", str(tmp_path / "u")]) == 0
    unet_cfg = tmp_path / "u/config.ini"  # the U-Net run's own config names its trained weights
    ld_cfg = tmp_path / "ldseg.ini"
    ld_cfg.write_text(tiny_ini(root, Model={"Prediction": "x0"}, Compare={"Baseline": unet_cfg, "Samples": 2},
                              Training={"EMA": 0}))
    out = tmp_path / "l"
    assert cli.main(["--cfg", str(ld_cfg), "--mode", "train", "--out", str(out)]) == 0
    assert cli.main(["--cfg", str(ld_cfg), "--mode", "compare", "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv")
    split = pd.read_csv(out / "split.csv")
    assert list(table.case[:-1]) == list(split[split.split == "test"].name) and table.case.iloc[-1] == "mean"
    for m in ("ldseg", "ldseg_2samples", "unet", "otsu"):
        assert table[f"dice_{m}"].between(0, 1).all()
        assert table[f"dice_{m}"].iloc[-1] == pytest.approx(table[f"dice_{m}"].iloc[:-1].mean(), abs=1e-4)
    md = (out / "compare.md").read_text()
    assert "| unet |" in md and "vs otsu" in md and "p = " in md

    # a baseline trained on other data, or on some of this run's test cases, is refused
    other = tmp_path / "other_root"
    other.mkdir()
    (other / "config.ini").write_text(unet_cfg.read_text().replace(f"Root = {root}", f"Root = {tmp_path}"))
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "config.ini").write_text(unet_cfg.read_text())
    (leaky / "split.csv").write_text("name,split\n" + "".join(f"{n},train\n" for n in split.name))
    for baseline, message in ((other, "is not this config's"), (leaky, "its training split holds")):
        capsys.readouterr()
        assert cli.main(["--cfg", str(ld_cfg), "--mode", "compare", "--out", str(out), "--overwrite",
                         "--set", f"Compare.Baseline={baseline / 'config.ini'}"]) == 2
        assert message in capsys.readouterr().err

    assert cli.main(["--cfg", str(ld_cfg), "--mode", "diagnose", "--out", str(out)]) == 0
    diag = pd.read_csv(out / "diagnose.csv")
    assert {"ceiling", "one_step_t0", "one_step_t49", "sampled"} <= set(diag.columns)
    assert diag.drop(columns="case").stack().between(0, 1).all()
