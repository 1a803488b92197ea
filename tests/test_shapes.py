"""Thick-slice shape reconstruction: the vertebra generator, the VAE, and the runner's metric table."""
import numpy as np
import pandas as pd

from ldseg_suite import cli, metrics
from ldseg_suite.data import readers, shapes
from ldseg_suite.tasks import shape_compare
from ldseg_suite.tasks import shapes as shape_task


def test_vertebra_generator_is_deterministic_and_plausible():
    a, b = shapes.make_vertebrae(2, 32, seed=1), shapes.make_vertebrae(2, 32, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])
    for m in a:
        assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
        assert 0.01 < m.mean() < 0.2  # a solid object, neither empty nor filling the box


def test_segment_generator_is_deterministic_and_thick_slices_lose_much_of_it():
    a, b = shapes.make_segments(4, 32, seed=1), shapes.make_segments(4, 32, seed=1)
    np.testing.assert_array_equal(a[3], b[3])
    assert not np.array_equal(a[0], a[1])
    dice = {2: [], 8: []}
    for m in a:
        assert m.dtype == np.uint8 and 0.03 < m.mean() < 0.2
        z = np.flatnonzero(m.any(axis=(0, 1)))
        assert z[-1] - z[0] + 1 >= 22  # one vertebra spans at most ~16 of 32 slices: the neighbours are in view
        for factor in dice:
            thick = m.reshape(32, 32, 32 // factor, factor).mean(-1)
            dice[factor].append(metrics.dice(shape_task.upsample(thick, factor) > 0.5, m > 0))
    # the thick-slice regime of the shipped configs (factor 8) loses much of the shape, factor 2 little
    assert np.mean(dice[8]) < 0.85 < 0.9 < np.mean(dice[2])
    assert shapes.GENERATORS["segment"] is shapes.make_segments


def test_vae_train_and_infer_end_to_end(tmp_path):
    root = tmp_path / "vert"
    for k, m in enumerate(shapes.make_vertebrae(6, 16, seed=0)):
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", m, np.eye(4))
    cfg = tmp_path / "vae.ini"
    _write_cfg(cfg, "vae", root)
    cfg.write_text(cfg.read_text().format(weights="").replace("Epochs = 1", "Epochs = 2"))
    out = str(tmp_path / "run")
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", out]) == 0
    assert cli.main(["--cfg", str(cfg), "--mode", "infer", "--out", out]) == 0
    table = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert set(table.method) == {"vae", "upsampling"}
    assert {"dice", "vs", "sen", "spec", "nmi", "kappa"} <= set(table.columns)
    assert table[["dice", "vs", "sen", "spec", "nmi", "kappa"]].notna().all().all()
    assert "| upsampling |" in (tmp_path / "run" / "summary.md").read_text()
    arr, geom = readers.read_nifti(next((tmp_path / "run" / "predictions").glob("*.nii.gz")))
    assert arr.shape == (16, 16, 16)
    assert list((tmp_path / "run" / "gifs").glob("*.gif"))


def _write_cfg(path, method, root, extra=""):
    prior = """[Prior]
LangevinSteps = 3
EnergyHidden = 16
Backbone = {backbone}
TrainBackbone = false
[Reconstruct]
Steps = 2
""" if method != "vae" else ""
    path.write_text(f"""[Run]
Method = {method}
[Data]
Root = {root}
Kind = 3d
Size = 16, 16, 16
Channels = 1
Normalize = none
Split = 0.5, 0.17, 0.33
[ThickSlice]
Factor = 4
[Model]
LatentDim = 8
BaseChannels = 4
Levels = 2
{prior}{extra}[Training]
Epochs = 1
BatchSize = 2
RunEagerly = true
[Output]
Gifs = 1
Weights = {{weights}}
""")


def test_sign_test_and_paired_wins_by_hand():
    assert shape_compare.sign_test(0, 0) == 1.0
    assert abs(shape_compare.sign_test(8, 0) - 2 / 256) < 1e-12
    assert abs(shape_compare.sign_test(5, 3) - 2 * (1 + 8 + 28 + 56) / 256) < 1e-12
    table = pd.DataFrame({"case": ["a", "b", "c"] * 2, "method": ["LSD-EBM"] * 3 + ["upsampling"] * 3,
                          "dice": [0.9, 0.8, 0.7, 0.85, 0.8, 0.75]})
    row = shape_compare.paired_wins(table).iloc[0]
    assert (row.method, row.baseline, row.wins, row.losses, row.ties, row.shapes) == ("LSD-EBM", "upsampling",
                                                                                    1, 1, 1, 3)
    assert abs(row.mean_diff - 0.0) < 1e-9 and abs(row.median_diff - 0.0) < 1e-9
    assert shape_compare.signed_rank_p([0.0, 0.0]) == 1.0
    # 8 wins of 0.01 and 2 losses of 0.1: the sign test leans to the method (p = 0.11), the signed ranks do not
    small_wins = [0.01] * 8 + [-0.1] * 2
    assert shape_compare.sign_test(8, 2) < 0.12 < shape_compare.signed_rank_p(small_wins)
    assert shape_compare.signed_rank_p([0.01 * k for k in range(1, 11)]) < 0.01


def test_lebm_lsd_ebm_on_a_fixed_vae_backbone_and_the_comparison_table(tmp_path, capsys):
    root = tmp_path / "vert"
    for k, m in enumerate(shapes.make_vertebrae(6, 16, seed=0)):
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", m, np.eye(4))
    runs = {m: tmp_path / m for m in ("vae", "lebm", "lsd_ebm")}
    cfgs = {m: tmp_path / f"{m}.ini" for m in runs}
    _write_cfg(cfgs["vae"], "vae", root)
    _write_cfg(cfgs["lebm"], "lebm", root)
    _write_cfg(cfgs["lsd_ebm"], "lsd_ebm", root,
               f"[Diffusion]\nSegments = 3\n[Compare]\nVAE = {cfgs['vae']}\nLEBM = {cfgs['lebm']}\nSegments = 1, 2\n"
               "Samples = 8\n")
    cfgs["lsd_ebm"].write_text(cfgs["lsd_ebm"].read_text().replace(
        "TrainBackbone = false\n", "TrainBackbone = false\nStandardize = true\nGradPenalty = 0.1\n"))
    backbone = runs["vae"] / "model.weights.h5"
    for m, path in cfgs.items():
        path.write_text(path.read_text().format(backbone=backbone, weights=runs[m] / "model.weights.h5"))
        assert cli.main(["--cfg", str(path), "--mode", "train", "--out", str(runs[m])]) == 0
    for m in ("lebm", "lsd_ebm"):  # a fixed backbone: the exported file holds the energy (+ standardiser) only
        attrs = shape_task._prior_only_attrs(runs[m] / "model.weights.h5")
        assert attrs is not None and attrs["backbone"] == str(backbone)
        assert (runs[m] / "model.weights.h5").stat().st_size < backbone.stat().st_size
    out = tmp_path / "cmp"
    assert cli.main(["--cfg", str(cfgs["lsd_ebm"]), "--mode", "compare", "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv")
    assert list(table.method.unique()) == ["VAE", "LEBM", "LSD-EBM", "upsampling"]
    assert table[["dice", "vs", "sen", "spec", "nmi", "kappa"]].notna().all().all()
    md = (out / "compare.md").read_text()
    assert all(f"| {m} |" in md for m in ("VAE", "LEBM", "LSD-EBM", "upsampling"))
    assert "Paired per-shape Dice" in md
    wins = pd.read_csv(out / "wins.csv")
    assert {("LSD-EBM", "upsampling"), ("LSD-EBM", "VAE")} <= set(zip(wins.method, wins.baseline))
    assert ((wins.wins + wins.losses + wins.ties) == wins.shapes).all() and (wins.shapes == 2).all()
    assert list((out / "gifs").glob("compare_*.gif"))
    val = tmp_path / "val"  # the validation split plus fresh generator shapes
    assert cli.main(["--cfg", str(cfgs["lsd_ebm"]), "--mode", "compare", "--out", str(val), "--set",
                     "Compare.Split=val", "--set", "Compare.ExtraShapes=2", "--set", "Compare.Generator=segment"]) == 0
    cases = set(pd.read_csv(val / "compare.csv").case)
    assert len(cases) == 3 and {"generated_s2_000", "generated_s2_001"} <= cases
    assert "make_segments(seed=2)" in (val / "compare.md").read_text()
    assert cli.main(["--cfg", str(cfgs["lsd_ebm"]), "--mode", "compare_steps", "--out", str(out)]) == 0
    assert sorted(pd.read_csv(out / "steps.csv").segments.unique()) == [1, 2]
    assert (out / "steps.png").stat().st_size > 0
    assert cli.main(["--cfg", str(cfgs["lsd_ebm"]), "--mode", "compare_latent", "--out", str(out)]) == 0
    stats = pd.read_csv(out / "latent_stats.csv")
    assert set(stats.model) == {"LEBM", "LSD-EBM"} and stats.posterior_norm_per_dim.notna().all()
    assert (stats.posterior_norm_min <= stats.posterior_norm_per_dim + 1e-6).all()
    assert (stats.posterior_norm_per_dim <= stats.posterior_norm_max + 1e-6).all()
    assert (out / "latent.png").is_file() and (out / "latent_steps.png").is_file()
    capsys.readouterr()
    backbone.write_bytes(backbone.read_bytes() + b"changed")  # the energy's backbone is no longer the one trained on
    assert cli.main(["--cfg", str(cfgs["lsd_ebm"]), "--mode", "compare", "--out", str(tmp_path / "bad")]) == 2
    assert "another backbone" in capsys.readouterr().err


def test_compare_refuses_a_config_on_other_data(tmp_path, capsys):
    root = tmp_path / "vert"
    for k, m in enumerate(shapes.make_vertebrae(3, 16, seed=0)):
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", m, np.eye(4))
    vae, lsd = tmp_path / "vae.ini", tmp_path / "lsd.ini"
    _write_cfg(vae, "vae", root)
    vae.write_text(vae.read_text().format(weights="w.h5").replace("Factor = 4", "Factor = 2"))
    _write_cfg(lsd, "lsd_ebm", root, f"[Compare]\nVAE = {vae}\n")
    lsd.write_text(lsd.read_text().format(backbone="b.h5", weights="w.h5"))
    assert cli.main(["--cfg", str(lsd), "--mode", "compare", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "[Compare] VAE" in err and "[ThickSlice] Factor differs" in err


def test_shipped_lsd_ebm_chain_stays_in_the_posterior_range_and_beats_upsampling():
    """The shipped 3D LSD-EBM (cfg/vertebra_lsd_ebm.ini): prior chains from noise end where the training shapes'
    posterior means are (the energy trained without the drift fix ends at |u| / sqrt(d) = 2.8-3.0, docs/lsd_ebm.md),
    and its reconstruction of 4 fresh segments beats plain upsampling on each."""
    from pathlib import Path

    from ldseg_suite import config, sections

    cfg = config.load("cfg/vertebra_lsd_ebm.ini", sections.schema_for)
    model = shape_task.build_model(cfg)
    shape_task.load_model_weights(model, cfg, Path(cfg.Output.Weights), "[Output] Weights")
    d = cfg.Model.LatentDim
    _, observed, thick = shape_task.thick_inputs(cfg, np.stack(shapes.make_segments(8, 32, seed=0)))
    post = np.linalg.norm(np.asarray(model.to_unit(model.encode(thick)[0])), axis=-1) / np.sqrt(d)
    z = model.sample_latents(32, seed=3)[0]
    end = np.linalg.norm(np.asarray(model.to_unit(z)), axis=-1) / np.sqrt(d)
    print("posterior means", post.round(2), "chain ends", end.mean().round(2), end.min().round(2), end.max().round(2))
    assert post.min() - 0.1 < end.mean() < post.max() + 0.1 and end.mean() < 1.5
    target, observed, thick = shape_task.thick_inputs(cfg, np.stack(shapes.make_segments(4, 32, seed=9)))
    recon = shape_task.reconstruct(model, cfg, thick, observed) > 0.5
    ours = [metrics.dice(r, t > 0.5) for r, t in zip(recon, target)]
    base = [metrics.dice(b, t > 0.5) for b, t in zip(shape_task.upsampling_baseline(thick[..., 0]), target)]
    print("dice", np.round(ours, 3), "upsampling", np.round(base, 3))
    assert all(o > b + 0.03 for o, b in zip(ours, base))


def test_generative_task_encoder_on_full_masks_score_matching_energy_and_denoised_data_term(tmp_path, capsys):
    """[Model] EncoderInput = full trains the encoder on the full-resolution masks (the thick slices only at
    reconstruction); an LSD-EBM fitted by score matching on that backbone trains, infers with the denoised data
    term, and the configs that cannot work are refused in one line."""
    from ldseg_suite import config, sections

    root = tmp_path / "vert"
    for k, m in enumerate(shapes.make_vertebrae(6, 16, seed=0)):
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", m, np.eye(4))
    vae, lsd = tmp_path / "vae.ini", tmp_path / "lsd.ini"
    full = "InputSkip = false\nEncoderInput = full\n"
    _write_cfg(vae, "vae", root)
    vae.write_text(vae.read_text().format(weights="").replace("Levels = 2\n", "Levels = 2\n" + full))
    _write_cfg(lsd, "lsd_ebm", root, "[Diffusion]\nSegments = 4\n")
    backbone = tmp_path / "vae" / "model.weights.h5"
    lsd.write_text(lsd.read_text().format(backbone=backbone, weights="")
                   .replace("Levels = 2\n", "Levels = 2\n" + full)
                   .replace("TrainBackbone = false\n", "TrainBackbone = false\nStandardize = true\nObjective = "
                            "score_matching\nEnergyActivation = silu\nScoreSamples = 3\n")
                   .replace("Steps = 2\n", "Steps = 2\nStart = 2\nDataTerm = denoised\nDataWeight = 10\n"))
    cfg = config.load(vae, sections.schema_for)
    part = type("Part", (), {"images": np.stack(shapes.make_vertebrae(2, 16, seed=3))[..., None]})()
    inputs, target = shape_task.training_pairs(cfg, part)
    np.testing.assert_array_equal(inputs[..., 0], target)  # the full masks, not their thick slices
    thick = shape_task.training_pairs(cfg.replace("Model", EncoderInput="thick"), part)[0]
    assert not np.array_equal(thick, inputs)
    assert cli.main(["--cfg", str(vae), "--mode", "train", "--out", str(tmp_path / "vae")]) == 0
    assert cli.main(["--cfg", str(lsd), "--mode", "train", "--out", str(tmp_path / "lsd")]) == 0
    assert "ebm_loss" in capsys.readouterr().out
    assert cli.main(["--cfg", str(lsd), "--mode", "infer", "--out", str(tmp_path / "lsd")]) == 0
    table = pd.read_csv(tmp_path / "lsd" / "metrics.csv")
    assert set(table.method) == {"lsd_ebm", "upsampling"} and table.dice.notna().all()
    bad = {"Model.InputSkip=true": "EncoderInput = full needs InputSkip = false",
           "Prior.EnergyActivation=leaky_relu": "needs EnergyActivation = silu",
           "Prior.TrainBackbone=true": "needs TrainBackbone = false"}
    for setting, message in bad.items():
        capsys.readouterr()
        assert cli.main(["--cfg", str(lsd), "--mode", "train", "--out", str(tmp_path / "bad"), "--set", setting]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    lebm = tmp_path / "lebm.ini"
    _write_cfg(lebm, "lebm", root)
    lebm.write_text(lebm.read_text().format(backbone=backbone, weights="").replace(
        "TrainBackbone = false\n", "TrainBackbone = false\nObjective = score_matching\n"))
    assert cli.main(["--cfg", str(lebm), "--mode", "train", "--out", str(tmp_path / "bad")]) == 2
    assert "only for Method = lsd_ebm" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_shipped_generative_lsd_ebm_generalises_and_reconstructs_fresh_shapes():
    """The shipped score-matching LSD-EBM of the generative task (cfg/vertebra_gen_lsd_ebm.ini): on shapes never
    trained on, its held-out score-matching loss (fresh noise) is below the standardised Gaussian's, and its
    reconstruction from two thick slices beats the VAE row (the encoder's mean) and plain upsampling on average."""
    from pathlib import Path

    import tensorflow as tf

    from ldseg_suite import config, sections

    cfg = config.load("cfg/vertebra_gen_lsd_ebm.ini", sections.schema_for)
    model = shape_task.build_model(cfg)
    shape_task.load_model_weights(model, cfg, Path(cfg.Output.Weights), "[Output] Weights")
    masks = np.stack(shapes.make_segments(12, 32, seed=7))
    mean, logvar = (np.asarray(a) for a in model.encode(masks[..., None].astype(np.float32)))
    rng = np.random.default_rng(0)
    n = 16 * len(mean)
    u0 = model.to_unit(tf.constant(np.repeat(mean, 16, 0) + np.repeat(np.exp(0.5 * logvar), 16, 0)
                                   * rng.standard_normal((n, mean.shape[1])), tf.float32))
    t = tf.constant(rng.integers(0, cfg.Diffusion.Segments, n), tf.int32)
    eps = tf.constant(rng.standard_normal((n, mean.shape[1])), tf.float32)
    learnt = float(tf.reduce_mean(model.score_matching_loss(u0, t, eps)))
    gauss = float(tf.reduce_mean(model.score_matching_loss(u0, t, eps, learnt=False)))
    print("held-out score matching: learnt", round(learnt, 2), "Gaussian", round(gauss, 2))
    assert learnt < 0.9 * gauss
    target, observed, thick = shape_task.thick_inputs(cfg, masks[:4])
    recon = shape_task.reconstruct(model, cfg, thick, observed) > 0.5
    vae = np.asarray(model.reconstruct(thick))[..., 0] > 0.5
    scores = {name: np.mean([metrics.dice(p, m > 0) for p, m in zip(pred, target)])
              for name, pred in (("lsd", recon), ("vae", vae), ("up", shape_task.upsampling_baseline(thick[..., 0])))}
    print(scores)
    assert scores["lsd"] > scores["vae"] + 0.02 and scores["lsd"] > scores["up"] + 0.05
