"""The bad-input catalogue: each case exits 2 with one line naming the file or key, and loses nothing."""
import numpy as np
import pytest

from ldseg_suite import cli
from ldseg_suite.data import readers


def run_expect_error(capsys, args, *needles):
    rc = cli.main(list(map(str, args)))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def edit(cfg, old, new):
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))


def test_missing_config(capsys, tmp_path):
    run_expect_error(capsys, ["--cfg", tmp_path / "missing.ini"], "missing.ini: config file not found")


def test_config_not_ini(capsys, tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("this is not = an ini\n[")
    run_expect_error(capsys, ["--cfg", bad], "bad.ini: not a valid .ini file")


def test_unknown_section(capsys, tiny):
    edit(tiny[0], "[Sampler]", "[Sampling]")
    run_expect_error(capsys, ["--cfg", tiny[0]], "unknown section [Sampling]", "did you mean 'Sampler'")


def test_unknown_key(capsys, tiny):
    edit(tiny[0], "Timesteps = 50", "TimeSteps_ = 50")
    run_expect_error(capsys, ["--cfg", tiny[0]], "unknown key 'TimeSteps_' in [NoiseScheduler]",
                     "did you mean 'Timesteps'")


def test_wrong_type(capsys, tiny):
    edit(tiny[0], "Sampling_Steps = 3", "Sampling_Steps = three")
    run_expect_error(capsys, ["--cfg", tiny[0]], "[Sampler] Sampling_Steps = three: expected an integer")


def test_out_of_range(capsys, tiny):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", "Sampler.Sigma=1.5"],
                     "[Sampler] Sigma = 1.5: expected a value <= 1.0")


def test_contradictory_values(capsys, tiny):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", "Sampler.Sampling_Steps=80"],
                     "Sampling_Steps = 80 exceeds [NoiseScheduler] Timesteps = 50")


def test_bad_set_syntax(capsys, tiny):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", "Epochs"], "--set Epochs: expected SECTION.KEY=VALUE")


def test_unknown_mode(capsys, tiny, tmp_path):
    run_expect_error(capsys, ["--cfg", tiny[0], "--mode", "trian", "--out", tmp_path / "o"],
                     "--mode trian: expected one of train, infer, predict, compare, diagnose, gif, sweep")


def test_data_root_missing(capsys, tiny, tmp_path):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", "Data.Root=/nonexistent", "--out", tmp_path / "o"],
                     "[Data] Root = /nonexistent")


def test_empty_data_folder(capsys, tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", f"Data.Root={tmp_path / 'empty'}", "--out", tmp_path / "o"],
                     "empty: no cases found")


def test_too_few_cases_for_the_split(capsys, tiny, tmp_path):
    root = tiny[1]
    for p in list(root.glob("train_[2-6]*")):
        p.unlink()
    run_expect_error(capsys, ["--cfg", tiny[0], "--out", tmp_path / "o"], "1 subject(s) found", "needs at least")


def test_corrupt_image(capsys, tiny, tmp_path):
    (tiny[1] / "train_3.bmp").write_bytes(b"BM not really a bitmap")
    run_expect_error(capsys, ["--cfg", tiny[0], "--out", tmp_path / "o"], "train_3.bmp: cannot read image")


def test_missing_label_for_training(capsys, tiny, tmp_path):
    for k in range(1, 7):
        (tiny[1] / f"train_{k}_anno.bmp").unlink()
    run_expect_error(capsys, ["--cfg", tiny[0], "--mode", "train", "--out", tmp_path / "o"],
                     "training needs a label for every training case")


def test_image_and_label_shapes_differ(capsys, tiny, tmp_path):
    lab = readers.read_label_image(tiny[1] / "train_2_anno.bmp")
    readers.write_png(tiny[1] / "train_2_anno.png", lab[:10].astype(np.uint8))
    (tiny[1] / "train_2_anno.bmp").unlink()
    run_expect_error(capsys, ["--cfg", tiny[0], "--out", tmp_path / "o"],
                     "train_2_anno.png: label shape (10, 24) differs from image train_2.bmp shape (24, 24)")


def test_label_values_outside_classes(capsys, tiny, tmp_path):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", "Data.Binarize=false", "--out", tmp_path / "o"],
                     "_anno.bmp: label values", "outside [0, 1]")


def test_wrong_channel_count(capsys, tiny, tmp_path):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", "Data.Channels=1", "--out", tmp_path / "o"],
                     "has 3 channels but [Data] Channels = 1")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_input(capsys, tmp_path, bad):
    root = tmp_path / "vols"
    for k in range(4):
        vol = np.random.default_rng(k).random((8, 8, 4)).astype(np.float32)
        if k == 2:
            vol[1, 1, 1] = bad
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", vol, np.eye(4))
        readers.write_nifti(root / "labels" / f"v{k}.nii.gz", np.zeros((8, 8, 4)), np.eye(4))
    cfg = tmp_path / "v.ini"
    cfg.write_text(f"[Run]\nMethod = ldseg\n[Data]\nRoot = {root}\nKind = 3d\nSize = 8, 8, 4\nChannels = 1\n"
                   "Split = 0.5, 0.25, 0.25\n[Model]\nDownsample = 2\nChannelMult = 1, 2\n")
    run_expect_error(capsys, ["--cfg", cfg, "--out", tmp_path / "o"], "v2.nii.gz: contains NaN or Inf")


def test_corrupt_nifti(capsys, tmp_path):
    root = tmp_path / "vols"
    for k in range(4):
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", np.zeros((8, 8, 4)), np.eye(4))
    (root / "images" / "v1.nii.gz").write_bytes(b"\x1f\x8b garbage")
    cfg = tmp_path / "v.ini"
    cfg.write_text(f"[Run]\nMethod = ldseg\n[Data]\nRoot = {root}\nKind = 3d\nSize = 8, 8, 4\nChannels = 1\n"
                   "Split = 0.5, 0.25, 0.25\n[Model]\nDownsample = 2\nChannelMult = 1, 2\n")
    run_expect_error(capsys, ["--cfg", cfg, "--out", tmp_path / "o"], "v1.nii.gz: cannot read NIfTI")


def test_output_directory_not_writable(capsys, tiny, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run_expect_error(capsys, ["--cfg", tiny[0], "--out", blocker / "run"], "cannot write to the run directory")


def test_output_is_a_file(capsys, tiny, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    run_expect_error(capsys, ["--cfg", tiny[0], "--out", blocker], "exists and is not a directory")
    assert blocker.read_text() == "keep me"


def test_earlier_outputs_are_not_overwritten(capsys, tiny, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.csv").write_text("earlier results")
    run_expect_error(capsys, ["--cfg", tiny[0], "--out", out], "already holds metrics.csv", "--overwrite")
    assert (out / "metrics.csv").read_text() == "earlier results"


def test_missing_weights_file(capsys, tiny, tmp_path):
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", f"Output.Weights={tmp_path / 'none.weights.h5'}",
                              "--out", tmp_path / "o"], "[Output] Weights", "none.weights.h5: weights file not found")


def test_weights_of_another_configuration(capsys, tiny, tmp_path):
    from ldseg_suite.models.ldseg import LDSeg

    other = LDSeg(in_channels=3, base_channels=16, channel_mult=(1, 2), downsample=2, latent_channels=2,
                  image_latent_channels=4, timesteps=50)
    other.build((None, 16, 16, 3))
    other.save_weights(tmp_path / "other.weights.h5")
    run_expect_error(capsys, ["--cfg", tiny[0], "--set", f"Output.Weights={tmp_path / 'other.weights.h5'}",
                              "--out", tmp_path / "o"], "other.weights.h5: weights do not match this config's [Model]")


def test_checkpoint_without_resume(capsys, tiny, tmp_path):
    out = tmp_path / "o"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.json").write_text('{"epoch": 1, "file": "epoch_0001.keras"}')
    (out / "checkpoints" / "epoch_0001.keras").write_text("x")
    run_expect_error(capsys, ["--cfg", tiny[0], "--mode", "train", "--set", "Training.Resume=false", "--out", out],
                     "has a checkpoint (epoch 1); pass --resume")
    run_expect_error(capsys, ["--cfg", tiny[0], "--mode", "train", "--out", out],
                     "epoch_0001.keras: cannot load checkpoint")
