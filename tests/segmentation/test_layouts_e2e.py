"""Data as users already have it trains and infers with Layout = auto: the LDSeg anchor's Image/ + Label/
folders (2D BMP and NIfTI) and an MSD / nnU-Net folder with two channel files per case and dataset.json."""
import pandas as pd
import pytest

from ldseg_suite import cli
from tests.data.fixtures import make_anchor_folder, make_msd_folder

CONFIG = """
[Run]
Method = {method}
Seed = 0
[Data]
Root = {root}
Layout = auto
Kind = {kind}
Size = {size}
{counts}
Split = 0.34, 0, 0.66
[Model]
{model}
[Training]
Epochs = 1
BatchSize = 2
EMA = 0
[Output]
Gifs = 0
"""
LDSEG_MODEL = "LatentChannels = 2\nImageLatentChannels = 4\nDownsample = 2\nBaseChannels = 8\nChannelMult = 1\n" \
              "Attention = false\n" \
              "[NoiseScheduler]\nTimesteps = 20\n[Sampler]\nSampling_Steps = 2"
UNET_MODEL = "BaseChannels = 4\nChannelMult = 1, 2"


def _train_infer(tmp_path, root, method, kind, size, counts=""):
    cfg = tmp_path / f"{method}.ini"
    model = LDSEG_MODEL if method == "ldseg" else UNET_MODEL
    cfg.write_text(CONFIG.format(method=method, root=root, kind=kind, size=size, counts=counts, model=model))
    out = tmp_path / f"run_{method}"
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", str(out)]) == 0
    assert cli.main(["--cfg", str(cfg), "--mode", "infer", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("kind,size,method", [("2d", "16, 16", "ldseg"), ("3d", "16, 16, 16", "unet")])
def test_anchor_layout_trains_and_infers_without_renaming(tmp_path, kind, size, method):
    root = make_anchor_folder(tmp_path, kind=kind)
    counts = "Channels = 3\nClasses = 2" if kind == "2d" else "Channels = 1\nClasses = 2"
    out = _train_infer(tmp_path, root, method, kind, size, counts)
    split = pd.read_csv(out / "split.csv")
    assert sorted(split.name) == ["Case1", "Case2", "Case3"]
    test = split[split.split == "test"].name.tolist()
    ext = ".png" if kind == "2d" else ".nii.gz"
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(f"{n}{ext}" for n in test)
    assert pd.read_csv(out / "metrics.csv").case.iloc[-1] == "mean"


def test_msd_folder_with_two_channels_uses_dataset_json_and_class_names(tmp_path, capsys):
    root = make_msd_folder(tmp_path)
    out = _train_infer(tmp_path, root, "unet", "3d", "16, 16, 16")  # Classes / Channels left out: dataset.json
    table = pd.read_csv(out / "metrics.csv")
    assert {"dice_a", "dice_b", "hd95_a", "hd95_b"} <= set(table.columns)
    assert "dice_1" not in table.columns
    resolved = (out / "config.ini").read_text()
    assert "Classes = 3" in resolved and "Channels = 2" in resolved
    # the run's config.ini names the run's own weights, so it predicts new scans (two channel files each) with them
    weights = out / "model.weights.h5"
    assert f"Weights = {weights}" in resolved
    capsys.readouterr()
    assert cli.main(["--cfg", str(out / "config.ini"), "--mode", "predict", "--input", str(root / "imagesTs"),
                     "--out", str(tmp_path / "pred")]) == 0
    assert f"weights: {weights}" in capsys.readouterr().out
    assert len(list((tmp_path / "pred/predictions").glob("*.nii.gz"))) == 2
