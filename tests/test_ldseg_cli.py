"""End to end through run.py's main() on tiny data: train, resume, infer, sweep, 2D and 2D+t."""
import numpy as np
import pandas as pd
import pytest

from ldseg_suite import cli, config, sections
from ldseg_suite.baselines import otsu_for
from ldseg_suite.data import cases, layout, readers, synthetic
from tests.configs import tiny_ini, write_glas


def tiny_cli_ini(root, kind, size, channels, classes, binarize):
    """The tiny LDSeg config by Kind (no Layout), with GIFs and a short noise sweep."""
    return tiny_ini(root, Run={"Mode": "infer"},
                    Data={"Layout": None, "Kind": kind, "Size": size, "Channels": channels, "Classes": classes,
                          "Binarize": binarize},
                    Sampler={"Sampling_Steps": 4, "BatchSize": 4}, Output={"Gifs": 1, "GifFrames": 3},
                    Sweep={"Sigma_Stop": 0.1, "Sigma_Step": 0.05})


@pytest.fixture(scope="module")
def glas_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("glas")
    write_glas(root, size=40)
    cfg = root / "tiny.ini"
    cfg.write_text(tiny_cli_ini(root, "2d", "16, 16", 3, 2, "true"))
    return cfg


def test_train_resume_infer_sweep_2d(glas_cfg, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["--cfg", str(glas_cfg), "--mode", "train", "--out", out]) == 0
    assert (tmp_path / "run/checkpoints/epoch_0001.keras").is_file()
    assert cli.main(["--cfg", str(glas_cfg), "--mode", "train", "--out", out, "--set", "Training.Epochs=2"]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert (tmp_path / "run/checkpoints/epoch_0002.keras").is_file()

    assert cli.main(["--cfg", str(glas_cfg), "--out", out]) == 0
    split = pd.read_csv(tmp_path / "run/split.csv")
    test_names = split[split.split == "test"].name.tolist()
    assert not set(test_names) & set(split[split.split == "train"].name)
    preds = sorted(p.stem for p in (tmp_path / "run/predictions").glob("*.png"))
    assert preds == sorted(test_names)
    assert readers.read_image(tmp_path / f"run/predictions/{test_names[0]}.png").shape[:2] == (40, 40)
    table = pd.read_csv(tmp_path / "run/metrics.csv")
    assert {"dice", "iou", "hd95"} <= set(table.columns) and table.case.iloc[-1] == "mean"
    # the Otsu baseline beside every Dice: its mapping learnt on the training cases only
    run_cfg = config.load(tmp_path / "run/config.ini", sections.schema_for)
    train_reader = cases.CaseReader([p for p in layout.find_cases(run_cfg.Data.Root, run_cfg.Data.Layout)
                                     if p.name in set(split[split.split == "train"].name)], run_cfg.Data)
    otsu = otsu_for(train_reader, 2)
    first = cases.CaseReader([p for p in layout.find_cases(run_cfg.Data.Root, run_cfg.Data.Layout)
                              if p.name == table.case.iloc[0]], run_cfg.Data)[0].case
    pred = otsu(first.image) == 1
    expected = 2 * (pred & (first.label == 1)).sum() / (pred.sum() + (first.label == 1).sum())
    assert table.otsu_dice.iloc[0] == pytest.approx(expected, abs=1e-4)
    assert "Otsu baseline" in capsys.readouterr().out
    assert len(list((tmp_path / "run/gifs").glob("*.gif"))) == 1

    # a second inference into the same directory refuses to overwrite
    assert cli.main(["--cfg", str(glas_cfg), "--out", out]) == 2

    assert cli.main(["--cfg", str(glas_cfg), "--mode", "sweep", "--out", out]) == 0
    sweep = pd.read_csv(tmp_path / "run/sweep.csv")
    assert len(sweep) == 3 * len(test_names)  # sigma 0, 0.05, 0.1
    clean = sweep[sweep.sigma == 0].set_index("case")["dice_1"]
    infer = table[table.case != "mean"].set_index("case")["dice"]
    np.testing.assert_allclose(clean.loc[infer.index], infer, atol=1e-4)
    assert (tmp_path / "run/sweep.png").is_file()
    assert list((tmp_path / "run/gifs").glob("robustness_*.gif"))

    # several stochastic samples per image: the mean mask and a per-pixel uncertainty map
    assert cli.main(["--cfg", str(glas_cfg), "--out", out, "--overwrite", "--set", "Sampler.Samples=3",
                     "--set", "Sampler.Sigma=1.0", "--set", "Output.Gifs=0"]) == 0
    unc = readers.read_image(tmp_path / f"run/predictions/{test_names[0]}_uncertainty.png")
    assert unc.shape[:2] == (40, 40) and unc.max() > 0


def test_2d_plus_t_writes_nifti_with_input_affine_and_per_frame_metrics(tmp_path):
    root = tmp_path / "echo"
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    affine[:3, 3] = [3, -2, 0]
    for k, (cine, lab, _) in enumerate(synthetic.make_echo(6, 16, 4, seed=0)):
        readers.write_nifti(root / "images" / f"e{k}.nii.gz", cine, affine)
        readers.write_nifti(root / "labels" / f"e{k}.nii.gz", lab, affine)
    cfg = tmp_path / "echo.ini"
    cfg.write_text(tiny_cli_ini(root, "2d+t", "16, 16, 4", 1, 3, "false"))
    out = str(tmp_path / "run")
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", out]) == 0
    assert cli.main(["--cfg", str(cfg), "--out", out]) == 0
    preds = list((tmp_path / "run/predictions").glob("*.nii.gz"))
    assert preds
    arr, geom = readers.read_nifti(preds[0])
    np.testing.assert_allclose(geom.affine, affine)
    assert arr.shape == (16, 16, 4)
    table = pd.read_csv(tmp_path / "run/metrics.csv")
    assert "frame" in table and len(table) == 4 * len(preds) + 1
    assert {"dice_1", "dice_2", "hd95_2", "otsu_dice"} <= set(table.columns)
    assert table.otsu_dice.between(0, 1).all()
    assert list((tmp_path / "run/gifs").glob("*_frames.gif"))
