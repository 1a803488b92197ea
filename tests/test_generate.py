"""2D generation end to end at tiny sizes: classifier, pixel EBM, LEBM and LSD-EBM, sample grid, chain GIF, FID."""
import json

import numpy as np
import pandas as pd
import pytest

from ldseg_suite import cli, config, sections, training
from ldseg_suite.data.idx import write_idx
from ldseg_suite.tasks import generate


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("t10k", 24)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = np.zeros((n, 28, 28), np.uint8)
        for k, lab in enumerate(labels):  # a bar whose position codes the class
            images[k, 4 + 2 * lab:8 + 2 * lab, 6:22] = 200 + rng.integers(0, 55)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


HEAD = """[Run]
Method = {method}
Mode = {mode}
[Images]
Root = {root}
Size = 16
"""
TRAIN = """[Training]
Epochs = 1
BatchSize = 8
StepsPerEpoch = 2
RunEagerly = true
[Output]
Weights = {weights}
"""
GEN = """[Sample]
Samples = 24
BatchSize = 12
Grid = 4
[FID]
Classifier = {classifier}
ClassifierConfig = {classifier_cfg}
Compare = {compare}
"""
MODEL = """[Model]
LatentDim = 4
BaseChannels = 4
Levels = 2
[Prior]
EnergyHidden = 16
LangevinSteps = 3
"""


def test_generation_models_train_sample_and_score(idx_root, tmp_path):
    fc = tmp_path / "fc.ini"
    fc.write_text(HEAD.format(method="fid_classifier", mode="infer", root=idx_root)
                  + "[Classifier]\nBaseChannels = 4\nFeatures = 8\n"
                  + TRAIN.format(weights=tmp_path / "fc" / "model.weights.h5"))
    assert cli.main(["--cfg", str(fc), "--mode", "train", "--out", str(tmp_path / "fc")]) == 0
    assert cli.main(["--cfg", str(fc), "--mode", "infer", "--out", str(tmp_path / "fc")]) == 0
    assert 0 <= pd.read_csv(tmp_path / "fc" / "accuracy.csv").accuracy[0] <= 1
    common = dict(classifier=tmp_path / "fc" / "model.weights.h5", classifier_cfg=fc)
    configs = {
        "ebm": "[EBM]\nBaseChannels = 4\nLangevinSteps = 3\nBufferSize = 16\n",
        "lebm_2d": MODEL,
        "lsd_ebm_2d": MODEL + "[Diffusion]\nSegments = 3\n",
    }
    for method, body in configs.items():
        cfg = tmp_path / f"{method}.ini"
        compare = tmp_path / "ebm.ini" if method == "lsd_ebm_2d" else ""
        cfg.write_text(HEAD.format(method=method, mode="sample", root=idx_root) + body
                       + GEN.format(compare=compare, **common)
                       + TRAIN.format(weights=tmp_path / method / "model.weights.h5"))
        out = tmp_path / method
        assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", str(out)]) == 0
        # one more epoch from the checkpoint (the model classes must be registered before it loads)
        assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", str(out), "--resume",
                         "--set", "Training.Epochs=2"]) == 0
        assert json.loads((out / "checkpoints" / "latest.json").read_text())["epoch"] == 2
        assert cli.main(["--cfg", str(cfg), "--mode", "sample", "--out", str(out)]) == 0
        assert (out / "samples.png").stat().st_size > 0 and (out / "chain.gif").stat().st_size > 0
        table = pd.read_csv(out / "fid.csv")
        assert np.isfinite(table.fid_local).all() and (table.fid_local >= -1e-6).all()
        assert len(table) == (3 if method == "lsd_ebm_2d" else 2)
        assert "not comparable to Inception FID" in (out / "fid.md").read_text()
    # the energy alone, trained on the fixed encoder and generator of the LSD-EBM just trained
    source = tmp_path / "lsd_ebm_2d" / "model.weights.h5"
    out = tmp_path / "fixed"
    assert cli.main(["--cfg", str(tmp_path / "lsd_ebm_2d.ini"), "--mode", "train", "--out", str(out), "--set",
                     f"Prior.Backbone={source}", "--set", "Prior.TrainBackbone=false", "--set",
                     "Prior.GradPenalty=0.1"]) == 0
    cfg = config.load(tmp_path / "lsd_ebm_2d.ini", sections.schema_for, [f"Prior.Backbone={source}"])
    before, after = generate.build_model(cfg), generate.build_model(cfg)
    training.load_weights(before, source, "w")
    # a fixed backbone: the exported file holds the energy only, read back on top of [Prior] Backbone
    assert (out / "model.weights.h5").stat().st_size < source.stat().st_size / 2
    generate.load_weights(after, cfg, out / "model.weights.h5", "w")
    for a, b in zip(before.backbone_weights(), after.backbone_weights(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(before.energy.weights, after.energy.weights))
    # the same energy fitted by denoising score matching instead (no chains in training)
    sm = ["--set", f"Prior.Backbone={source}", "--set", "Prior.TrainBackbone=false", "--set",
          "Prior.Objective=score_matching", "--set", "Prior.EnergyActivation=silu", "--set", "Prior.ScoreSamples=2"]
    assert cli.main(["--cfg", str(tmp_path / "lsd_ebm_2d.ini"), "--mode", "train", "--out", str(tmp_path / "sm"),
                     *sm]) == 0
    assert cli.main(["--cfg", str(tmp_path / "lsd_ebm_2d.ini"), "--mode", "sample", "--out", str(tmp_path / "sm"),
                     *sm]) == 0
    assert np.isfinite(pd.read_csv(tmp_path / "sm" / "fid.csv").fid_local).all()


@pytest.mark.parametrize("method, sets, expected", [
    ("lebm_2d", ["Prior.Objective=score_matching"], "only for Method = lsd_ebm_2d"),
    ("lsd_ebm_2d", ["Prior.Objective=score_matching", "Prior.Backbone=w.h5", "Prior.TrainBackbone=false"],
     "needs EnergyActivation = silu"),
    ("lsd_ebm_2d", ["Prior.Objective=score_matching", "Prior.EnergyActivation=silu"], "needs TrainBackbone = false"),
])
def test_score_matching_settings_are_checked(idx_root, tmp_path, capsys, method, sets, expected):
    cfg = tmp_path / "c.ini"
    cfg.write_text(HEAD.format(method=method, mode="train", root=idx_root) + MODEL + TRAIN.format(weights=""))
    args = [a for s in sets for a in ("--set", s)]
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_idx_folder_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "c.ini"
    cfg.write_text(HEAD.format(method="fid_classifier", mode="train", root=tmp_path / "nowhere")
                   + TRAIN.format(weights=""))
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", str(tmp_path / "o")]) == 2
    assert "[Images] Root" in capsys.readouterr().err


def test_shipped_lsd_ebm_2d_is_a_prior_on_the_lebm_generator_that_generalises_and_stays_in_range():
    """cfg/fashion_lsd_ebm.ini: its weights file holds the energy (and the whitening) only, on top of the shipped
    LEBM's encoder and generator (the same weights); on posterior samples of test images (never trained on) its
    score-matching loss at segment 1 (fresh noise) is below the zero energy's, the whitened Gaussian's
    (docs/lsd_ebm.md, section 6: 18.5 against 20.2); and prior chains from noise end where posterior samples of test
    images are in the prior's own space u (the whitened latent, as ``--mode sample``'s latent.csv measures it)."""
    from pathlib import Path

    import tensorflow as tf

    from ldseg_suite.tasks import shapes

    lsd_cfg = config.load("cfg/fashion_lsd_ebm.ini", sections.schema_for)
    lebm_cfg = config.load("cfg/fashion_lebm.ini", sections.schema_for)
    assert shapes._prior_only_attrs(Path(lsd_cfg.Output.Weights))["backbone"] == lebm_cfg.Output.Weights
    lsd, lebm = generate._load(lsd_cfg, None), generate._load(lebm_cfg, None)
    for a, b in zip(lsd.backbone_weights(), lebm.backbone_weights(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    test, _ = generate.load_images(lsd_cfg.Images, "t10k")
    mean, logvar = (np.asarray(v) for v in lsd.encode(test[:500]))
    rng = np.random.default_rng(0)
    z = mean + np.exp(0.5 * logvar) * rng.normal(size=mean.shape)
    d = mean.shape[-1]
    assert lsd.standardizer is not None and lsd.standardizer.full  # [Prior] Whiten
    u = lsd.to_unit(z.astype(np.float32))
    t = tf.ones((len(z),), tf.int32)
    eps = tf.constant(rng.normal(size=z.shape), tf.float32)
    learnt = float(tf.reduce_mean(lsd.score_matching_loss(u, t, eps)))
    gauss = float(tf.reduce_mean(lsd.score_matching_loss(u, t, eps, learnt=False)))
    post = np.linalg.norm(u.numpy(), axis=-1) / np.sqrt(d)
    lo, hi = np.percentile(post, [1, 99])
    end = np.linalg.norm(lsd.to_unit(lsd.sample_latents(48, seed=0)[0]).numpy(), axis=-1) / np.sqrt(d)
    print(f"held-out score matching at segment 1: learnt {learnt:.2f}, Gaussian {gauss:.2f}; posterior samples "
          f"{post.mean():.2f} ({lo:.2f}-{hi:.2f}), chain ends {end.mean():.2f}")
    assert learnt < 0.95 * gauss
    assert lo < end.mean() < hi
