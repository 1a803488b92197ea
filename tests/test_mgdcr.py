"""MGDCR: latent initialisation, interpolation baselines, and the diffae/ddim/mgdcr configs end to end at tiny sizes."""
import numpy as np
import pandas as pd
import pytest

from ldseg_suite import cli
from ldseg_suite.data import cardiac
from ldseg_suite.tasks import cardiac_schema, mgdcr
from ldseg_suite.tasks.cardiac import plausibility, slices_of


def test_slerp_keeps_the_ends_and_the_gaussian_norm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 32, 32, 1))
    np.testing.assert_allclose(mgdcr.slerp(a, b, 0.0), a, atol=1e-6)
    np.testing.assert_allclose(mgdcr.slerp(a, b, 1.0), b, atol=1e-6)
    mid = mgdcr.slerp(a, b, 0.5)
    assert abs(np.linalg.norm(mid) / np.linalg.norm(a) - 1) < 0.05  # lerp would shrink it by ~1/sqrt(2)


def test_initial_latents_keep_observed_slices_and_fill_the_rest():
    rng = np.random.default_rng(1)
    index = np.array([0, 3, 6])
    z_obs, xT_obs = rng.standard_normal((3, 5)), rng.standard_normal((3, 4, 4, 1))
    z, xT = mgdcr.initial_latents(index, z_obs, xT_obs, 7)
    np.testing.assert_allclose(z[index], z_obs, atol=1e-6)
    np.testing.assert_allclose(xT[index], xT_obs, atol=1e-5)
    np.testing.assert_allclose(z[1], z_obs[0] + (z_obs[1] - z_obs[0]) / 3, atol=1e-6)
    assert z.shape == (7, 5) and xT.shape == (7, 4, 4, 1)


def test_interpolation_baselines_pass_through_the_observed_slices():
    case = cardiac.make_cardiac_case(3, size=32, slices=8, frames=2)

    class Acq:
        KeepEvery, Missing, Views = 3, (), ("4ch",)

    obs = mgdcr.observe(case, 0, Acq)
    assert list(obs.sax_index) == [0, 3, 6, 7]
    assert obs.lax["4ch"][1].shape == (32, 32)
    for kind in ("linear", "cubic"):
        vol = mgdcr.interpolate(obs, kind)
        np.testing.assert_allclose(vol[..., obs.sax_index], np.clip(obs.sax, 0, 1), atol=1e-5)
        assert vol.shape == obs.truth.shape


def test_plausibility_passes_mid_ventricular_slices_and_fails_noise_and_wrong_contrast():
    case = cardiac.make_cardiac_case(10001, size=32, slices=16, frames=2)
    x = slices_of([case])  # (32, 32, 32, 1): slice k of frame f at 2 k + f
    mid = x[[4, 5, 8, 9]]
    assert plausibility(mid, 4.0).plausible.all()
    assert not plausibility(x[[30, 31]], 4.0).plausible.any()  # below the apex: no heart
    rng = np.random.default_rng(0)
    assert not plausibility(rng.uniform(-1, 1, (4, 32, 32, 1)), 4.0).plausible.any()
    assert not plausibility(-mid, 4.0).plausible.any()  # inverted contrast: dark pools, bright wall
    assert not plausibility(mid * 0.3 + 0.3, 4.0).plausible.any()  # washed out: no blood-bright pools


def test_calibrated_plausibility_passes_real_slices_of_every_type_and_fails_the_negative_controls():
    from ldseg_suite.tasks import cardiac_plausibility as cp

    train = slices_of([cardiac.make_cardiac_case(s, size=32, frames=2) for s in range(48)])
    cal = cp.calibrate(train, 4.0)
    assert set(cal["types"]) == set(cp.TYPES) and sum(cal["types"].values()) > 0.99
    real = slices_of([cardiac.make_cardiac_case(10000 + i, size=32, frames=2) for i in range(2)])
    scored = cp.calibrated_plausibility(real, 4.0, cal)
    assert scored.plausible.mean() >= 0.9
    assert set(scored[scored.plausible].type) == set(cp.TYPES)  # real slices of every type pass
    assert 0.3 < plausibility(real, 4.0).plausible.mean() < 0.7  # the strict check: only mid-ventricular ones
    for name, images in cp.negative_controls(real).items():
        assert not cp.calibrated_plausibility(images, 4.0, cal).plausible.any(), name
    with pytest.raises(ValueError, match="mm pixels"):
        cp.calibrated_plausibility(real, 2.0, cal)
    same = cp.type_distribution(scored.type, scored.type)
    assert same["tv"] == 0 and same["p"] > 0.5
    easy = cp.type_distribution(["lv+myo+rv"] * 64, scored.type)  # a sampler of only the easiest type
    assert easy["tv"] > 0.4 and easy["p"] < 1e-3


def test_the_ablation_has_its_own_optimiser_settings():
    opt = cardiac_schema.Optimise(LearningRate=0.01, Warmup=10, Iterations=40, AblationLearningRate=0.05,
                                  AblationWarmup=0, AblationIterations=60)
    assert opt.for_method("mgdcr") is opt
    ddim = opt.for_method("ddim")
    assert (ddim.LearningRate, ddim.Warmup, ddim.Iterations) == (0.05, 0, 60)
    same = cardiac_schema.Optimise().for_method("ddim")
    assert (same.LearningRate, same.Warmup, same.Iterations) == (0.01, 10, 40)


def test_paired_wins_count_phantoms_where_mgdcr_is_better():
    rows = []
    for case, (ours, cubic) in enumerate([(0.9, 0.8), (0.7, 0.8), (0.95, 0.9)]):
        for method, d, ef in (("mgdcr", ours, 1.0), ("cubic", cubic, 2.0 if case else 0.5)):
            rows.append({"case": case, "method": method, "ef_error": ef,
                         **{f"dice_{s}_{p}": d for s in ("lv", "myo", "rv") for p in ("ed", "es")}})
    (line,) = mgdcr.paired_wins(pd.DataFrame(rows))
    assert "mean Dice higher on 2 of 3" in line and "EF error lower on 2 of 3" in line
    assert "(mean difference +0.017)" in line


PRIOR = """[Run]
Method = {method}
Mode = roundtrip
[Phantom]
Cases = 1
TestCases = 2
Size = 32
Slices = 8
Frames = 2
[Model]
SemanticDim = 4
BaseChannels = 4
ChannelMult = 1, 2
Attention = false
[NoiseScheduler]
Timesteps = 100
[Codec]
Steps = 4
Samples = 2
[Training]
Epochs = 1
BatchSize = 4
StepsPerEpoch = 2
"""
MGDCR = """[Run]
Method = mgdcr
Mode = reconstruct
[Phantom]
Cases = 1
TestCases = 1
Size = 32
Slices = 8
Frames = 2
[Prior]
DiffAEConfig = {dae_cfg}
DiffAEWeights = {dae}
DDIMConfig = {ddim_cfg}
DDIMWeights = {ddim}
[Acquisition]
KeepEvery = 3
Views = 2ch, 4ch
[Optimise]
Steps = 2
Iterations = 2
"""


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    root = tmp_path_factory.mktemp("cardiac")
    out = {}
    for method in ("diffae", "ddim"):
        cfg = root / f"{method}.ini"
        weights = root / method / "model.weights.h5"
        cfg.write_text(PRIOR.format(method=method) + f"[Output]\nWeights = {weights}\n")
        assert cli.run(["--cfg", str(cfg), "--mode", "train", "--out", str(root / method)]) == 0
        out[method] = (cfg, weights)
    return out


@pytest.mark.parametrize("method", ["diffae", "ddim"])
def test_priors_train_round_trip_and_sample(priors, method, tmp_path):
    cfg, _ = priors[method]
    assert cli.run(["--cfg", str(cfg), "--out", str(tmp_path / "rt")]) == 0
    table = pd.read_csv(tmp_path / "rt" / "roundtrip.csv")
    assert len(table) == 2 and np.isfinite(table.psnr_roundtrip).all()
    assert (tmp_path / "rt" / "roundtrip.png").stat().st_size > 0
    assert len(table.psnr_random_xT_std) == 2 and (table.psnr_random_xT_std >= 0).all()
    assert cli.run(["--cfg", str(cfg), "--mode", "sample", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    scored = pd.read_csv(tmp_path / "s" / "samples.csv")
    assert len(scored) == 2 and set(scored.plausible) | set(scored.plausible_calibrated) <= {True, False}
    md = (tmp_path / "s" / "samples.md").read_text()
    assert "| samples | 2 |" in md and "| uniform noise |" in md and "Total-variation distance" in md
    if method == "diffae":
        assert cli.run(["--cfg", str(cfg), "--mode", "interpolate", "--out", str(tmp_path / "i")]) == 0
        ends = pd.read_csv(tmp_path / "i" / "interpolation.csv")
        assert len(ends) == 8 and (tmp_path / "i" / "interpolation.png").stat().st_size > 0


def test_mgdcr_reconstructs_evaluates_stops_early_and_reuses_its_fits(priors, tmp_path):
    """One end-to-end run of both modes. Reconstruct with a 3-iteration warm-up and patience 1: the warm-up starts
    from a zero step, which patience 1 would otherwise have taken for a stalled fit. Evaluate; then, with the DiffAE
    fit that evaluate traced for ED and reused for ES: later fits with the same settings reuse it, and a refit of
    one observation gives the same volume (Adam's moments and schedule start from zero every time)."""
    (dae_cfg, dae), (ddim_cfg, ddim) = priors["diffae"], priors["ddim"]
    cfg = tmp_path / "m.ini"
    cfg.write_text(MGDCR.format(dae_cfg=dae_cfg, dae=dae, ddim_cfg=ddim_cfg, ddim=ddim))
    out = tmp_path / "m"
    assert cli.run(["--cfg", str(cfg), "--out", str(out), "--set", "Optimise.Iterations=8", "--set",
                    "Optimise.Warmup=3", "--set", "Optimise.Patience=1"]) == 0
    for name in ("reconstruction.nii.gz", "loss.png", "iterations.gif", "loss.csv"):
        assert (out / name).stat().st_size > 0, name
    loss = pd.read_csv(out / "loss.csv").loss.to_numpy()
    assert loss[1] == pytest.approx(loss[0], rel=1e-6)  # the warm-up starts from a zero step...
    assert 4 <= len(loss) <= 8  # ...which patience 1 would otherwise have taken for a stalled fit

    assert cli.run(["--cfg", str(cfg), "--mode", "evaluate", "--out", str(out), "--set", "Optimise.Iterations=3",
                    "--set", "Optimise.Warmup=1"]) == 0
    table = pd.read_csv(out / "evaluate.csv")
    assert list(table.method) == ["truth", "mgdcr", "ddim", "linear", "cubic"]
    truth = table[table.method == "truth"].iloc[0]
    assert min(truth.dice_lv_ed, truth.dice_myo_ed, truth.dice_rv_ed) > 0.85  # the segmentation itself works
    assert truth.ef_error < 5
    assert "| cubic |" in (out / "evaluate.md").read_text()

    (key, fit), = [(k, f) for k, f in mgdcr._FITTERS.items() if f["model"].semantic_dim and k[1].Iterations == 3]
    model, opt = fit["model"], key[1]
    assert fit["step"].experimental_get_tracing_count() == 1  # ED and ES of the evaluation: one trace
    acq = cardiac_schema.Acquisition(KeepEvery=3, Views=("2ch", "4ch"))
    a, b = (mgdcr.observe(cardiac.make_cardiac_case(s, size=32, slices=8, frames=2), 0, acq) for s in (0, 1))
    first, second, again = (mgdcr.optimise(model, obs, opt, log_every=0) for obs in (a, b, a))
    np.testing.assert_array_equal(first[0], again[0])
    assert [h["loss"] for h in first[1]] == [h["loss"] for h in again[1]]
    assert np.abs(first[0] - second[0]).max() > 0.05
    assert fit["step"].experimental_get_tracing_count() == 1
