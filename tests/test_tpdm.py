"""TPDM: operators as used on volumes, the K schedule, the two-model sampler with DPS, the score model, and
train / sample / evaluate end to end at tiny sizes."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from ldseg_suite import cli, config, sections, training
from ldseg_suite.data.phantoms import random_phantom, shepp_logan_3d
from ldseg_suite.data.readers import write_nifti
from ldseg_suite.diffusion.tpdm_sampler import PLANES, TPDMSampler, k_schedule, slice_scores
from ldseg_suite.diffusion.ve_sde import ve_sigmas
from ldseg_suite.models.tpdm import ScoreModel
from ldseg_suite.tasks.tpdm import build_score_model, cubic_z, fbp_matched, plane_slices, problem_for
from ldseg_suite.tasks.tpdm_schema import Problem

S = 0.5  # data ~ N(0, S^2 I): the score at noise level sigma is -x / (S^2 + sigma^2)


def gaussian_score(x, sigma):
    return -x / (S ** 2 + sigma ** 2)


def _inner(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.real(np.sum(a * np.conj(b))))


@pytest.mark.parametrize("task", ["zsr", "csmri", "svct"])
def test_operators_on_volumes_pass_the_adjoint_test(task):
    rng = np.random.default_rng(0)
    op, _, measure, _, _ = problem_for(Problem(Task=task, Acceleration=4.0, Views=7), 16, seed=0)
    x = rng.standard_normal((16, 16, 16)).astype(np.float32)
    ax = np.asarray(op.forward(x))
    y = rng.standard_normal(ax.shape)
    if np.iscomplexobj(ax):
        y = y + 1j * rng.standard_normal(ax.shape)
    y = y.astype(ax.dtype)
    lhs, rhs = _inner(ax, y), _inner(x, op.adjoint(y))
    assert abs(lhs - rhs) / max(abs(lhs), abs(rhs)) < 1e-4


def test_baselines_recover_smooth_volumes():
    vol = shepp_logan_3d(32)
    op, _, measure, (_, baseline), _ = problem_for(Problem(Task="svct", Views=90), 32, seed=0)
    assert np.abs(baseline(measure(vol)) - vol).mean() < 0.06
    ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32), (4, 4, 32))
    thick = ramp.reshape(4, 4, 8, 4).mean(-1)
    np.testing.assert_allclose(cubic_z(thick, 4)[..., 2:-2], ramp[..., 2:-2], atol=1e-5)
    assert fbp_matched(op, np.zeros((90, op.detectors, 2), np.float32)).shape == (32, 32, 2)


def test_phantoms_are_deterministic_and_in_range():
    a, b = shepp_logan_3d(24), shepp_logan_3d(24)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.min() == 0.0 and a.max() == 1.0
    np.testing.assert_array_equal(random_phantom(24, seed=3), random_phantom(24, seed=3))
    assert not np.array_equal(random_phantom(24, seed=3), random_phantom(24, seed=4))


def test_k_schedule():
    np.testing.assert_array_equal(np.flatnonzero(k_schedule(13, 3)), [2, 5, 8, 11])
    np.testing.assert_array_equal(np.flatnonzero(k_schedule(13, 3.0)), [2, 5, 8, 11])
    np.testing.assert_array_equal(np.flatnonzero(k_schedule(12, 3)), [2, 5, 8])  # the last step is the primary's
    assert k_schedule(10, 1).all() and not k_schedule(10, 0).any()
    frac = k_schedule(20000, 2.5, seed=1).mean()
    assert frac == pytest.approx(0.4, abs=0.02)
    np.testing.assert_array_equal(k_schedule(50, 2.5, seed=1), k_schedule(50, 2.5, seed=1))


def test_sampler_runs_the_scheduled_model_on_its_plane_on_each_step():
    calls = {"primary": tf.Variable(0), "auxiliary": tf.Variable(0)}
    seen = {}
    shape = (6, 8, 10)

    def counting(name, axis):
        def score(slices, sigma):
            seen[name] = tuple(slices.shape)  # recorded when traced
            calls[name].assign_add(1)
            return gaussian_score(slices, sigma)
        return score

    schedule = k_schedule(10, 3)
    sampler = TPDMSampler(counting("primary", 1), counting("auxiliary", 2), ve_sigmas(0.01, 5.0, 10), 1, 2,
                          schedule, corrector_steps=0)
    sampler(sampler.initial_noise(shape, 0), seed=0)
    assert calls["primary"].numpy() == 7 and calls["auxiliary"].numpy() == 3
    assert seen == {"primary": (8, 6, 10, 1), "auxiliary": (10, 6, 8, 1)}
    seen.clear()  # one model on every step (an ablation): the other network is not even traced
    sampler = TPDMSampler(counting("primary", 1), counting("auxiliary", 2), ve_sigmas(0.01, 5.0, 10), 1, 2,
                          k_schedule(10, 0), corrector_steps=0)
    sampler(sampler.initial_noise(shape, 0), seed=0)
    assert calls["primary"].numpy() == 17 and calls["auxiliary"].numpy() == 3 and list(seen) == ["primary"]


def test_slice_scores_restack_in_mini_batches():
    vol = tf.random.normal((5, 7, 9))
    for axis in range(3):
        out = slice_scores(lambda s, sigma: s * sigma, vol, 2.0, axis, slice_batch=3)
        np.testing.assert_allclose(out.numpy(), 2.0 * vol.numpy(), rtol=1e-6)


@pytest.mark.parametrize("k", [2, 2.5])
def test_two_gaussian_models_give_the_target_variance(k):
    sigmas = ve_sigmas(0.01, 20.0, 300)
    sampler = TPDMSampler(gaussian_score, gaussian_score, sigmas, PLANES["coronal"], PLANES["axial"],
                          k_schedule(len(sigmas), k, seed=0), slice_batch=16)
    x = sampler(sampler.initial_noise((32, 32, 32), 0), seed=0)["x0"].numpy()
    assert abs(x.mean()) < 0.02
    assert x.std() == pytest.approx(S, rel=0.05)


@pytest.mark.parametrize("jacobian", ["identity", "exact"])
def test_dps_with_zero_weight_is_the_unconditional_sampler_and_a_weight_fits_the_data(jacobian):
    from ldseg_suite.inverse.slices import SliceAverage

    op = SliceAverage(4, axis=2)
    truth = shepp_logan_3d(16)
    y = op.forward(truth).numpy()
    sigmas = ve_sigmas(0.01, 5.0, 30)
    schedule = k_schedule(30, 2)
    common = (gaussian_score, gaussian_score, sigmas, 1, 2, schedule)
    plain = TPDMSampler(*common)
    x_T = plain.initial_noise((16, 16, 16), 3)
    free = plain(x_T, seed=3)["x0"].numpy()
    zero = TPDMSampler(*common, operator=op, y=y, weight=0.0, jacobian=jacobian)(x_T, seed=3)["x0"].numpy()
    np.testing.assert_allclose(zero, free, atol=1e-6)
    fitted = TPDMSampler(*common, operator=op, y=y, weight=10.0, jacobian=jacobian)(x_T, seed=3)["x0"].numpy()
    residual = lambda x: np.linalg.norm(op.forward(x).numpy() - y)  # noqa: E731
    assert residual(fitted) < 0.5 * residual(free)
    projected = TPDMSampler(*common, operator=op, y=y, weight=0.0, jacobian=jacobian, projection=1.0,
                            pinv=lambda r: op.adjoint(r) * 4)(x_T, seed=3)["x0"].numpy()
    assert residual(projected) < 1e-3 * residual(free)  # a hard projection on the last (primary) step


def test_tweedie_predictor_with_eta_0_is_the_deterministic_denoise_chain():
    # Gaussian prior: D(x, sigma) = x S^2 / (S^2 + sigma^2), so the chain multiplies x_T by the product of these
    sigmas = ve_sigmas(0.05, 1.0, 6)
    kw = dict(corrector_steps=0, predictor="tweedie", eta=0.0)
    sampler = TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, k_schedule(6, 2), **kw)
    x_T = sampler.initial_noise((8, 8, 8), 0)
    out = sampler(x_T, seed=0)["x0"].numpy()
    gain = np.prod(S ** 2 / (S ** 2 + sigmas.astype(np.float64) ** 2))
    np.testing.assert_allclose(out, gain * x_T.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sampler(x_T, seed=5)["x0"].numpy(), out, atol=1e-7)  # no noise: seed-free
    noisy = TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, k_schedule(6, 2), corrector_steps=0,
                        predictor="tweedie", eta=1.0)(x_T, seed=0)["x0"].numpy()
    assert np.abs(noisy - out).max() > 1e-3  # eta = 1 re-noises between steps
    with pytest.raises(ValueError, match="predictor"):
        TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, k_schedule(6, 2), predictor="ode")


def test_tweedie_chain_with_projection_on_every_step_is_data_consistent_and_keeps_the_measured_part():
    from ldseg_suite.inverse.slices import SliceAverage

    op = SliceAverage(4, axis=2)
    truth = shepp_logan_3d(16)
    y = op.forward(truth).numpy()
    sigmas = ve_sigmas(0.01, 0.2, 8)
    sampler = TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, k_schedule(8, 2), operator=op, y=y,
                          weight=0.0, pinv=lambda r: op.adjoint(r) * 4, projection=1.0, dc_steps=np.ones(8, bool),
                          corrector_steps=0, predictor="tweedie", eta=0.0)
    start = cubic_z(y, 4)
    out = sampler(start, seed=0)["x0"].numpy()
    np.testing.assert_allclose(op.forward(out).numpy(), y, atol=1e-5)
    # the Gaussian denoiser only shrinks, and the projection restores each group's mean: the result is the
    # shrunk start plus the group means it lost (checked against the same chain in NumPy)
    ref = start.copy()
    for s in sigmas:
        ref = ref * S ** 2 / (S ** 2 + s ** 2)
        ref = ref + 4 * op.adjoint(y - op.forward(ref)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("task", ["zsr", "svct"])
def test_cgls_pinv_solves_least_squares(task):
    from ldseg_suite.inverse.cg import cgls_pinv

    op, exact, _, _, _ = problem_for(Problem(Task=task, Views=7), 16, seed=0)
    rng = np.random.default_rng(1)
    d_true = rng.standard_normal((16, 16, 3 if task == "svct" else 16)).astype(np.float32)
    r = op.forward(d_true)
    d = cgls_pinv(op, 1 if task == "zsr" else 60)(r)
    residual = lambda d: float(np.linalg.norm(op.forward(d).numpy() - r.numpy()) / np.linalg.norm(r))  # noqa
    assert residual(d) < (1e-5 if task == "zsr" else 0.03)
    if task == "svct":  # ill-conditioned: the residual keeps falling with the iterations
        assert residual(d) < 0.5 * residual(cgls_pinv(op, 5)(r))
    if task == "zsr":  # A A^T = I / 4: CGLS is exact after one step and equals the closed-form pinv
        np.testing.assert_allclose(d.numpy(), exact(r).numpy(), atol=1e-5)
    assert np.linalg.norm(d) <= np.linalg.norm(d_true) + 1e-3  # CGLS from zero: the minimum-norm solution
    pinv = problem_for(Problem(Task=task, Views=7, CGIters=3), 16, seed=0)[1]
    assert pinv(r).shape == d_true.shape


@pytest.mark.parametrize("task", ["zsr", "csmri"])
def test_damped_pinv_is_the_tikhonov_solution_and_cgls_finds_it(task):
    from ldseg_suite.inverse.cg import cgls_pinv

    op, pinv, measure, _, _ = problem_for(Problem(Task=task, Acceleration=4.0), 16, seed=0)
    rng = np.random.default_rng(2)
    r = measure(rng.random((16, 16, 16)).astype(np.float32))
    damp = 0.3
    d = np.asarray(pinv(r, damp))
    # normal equations of min ||A d - r||^2 + damp ||d||^2: (A^T A + damp I) d = A^T r
    lhs = np.asarray(op.adjoint(op.forward(d))) + damp * d
    np.testing.assert_allclose(lhs, np.asarray(op.adjoint(r)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(cgls_pinv(op, 2)(r, damp)), d, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pinv(r)), np.asarray(pinv(r, 0.0)), atol=1e-7)


def test_damped_cgls_converges_on_sparse_view_ct():
    from ldseg_suite.inverse.cg import cgls_pinv

    op = problem_for(Problem(Task="svct", Views=7), 16, seed=0)[0]
    r = op.forward(np.random.default_rng(3).random((16, 16, 2)).astype(np.float32))
    d = np.asarray(cgls_pinv(op, 60)(r, 0.5))
    lhs = np.asarray(op.adjoint(op.forward(d))) + 0.5 * d
    rhs = np.asarray(op.adjoint(r))
    assert np.linalg.norm(lhs - rhs) < 1e-3 * np.linalg.norm(rhs)


def test_auxiliary_sigma_scale_and_noise_free_predictor_follow_the_gaussian_chain():
    sigmas = ve_sigmas(0.05, 1.0, 6)
    schedule = k_schedule(6, 2)
    x_T = tf.random.stateless_normal((8, 8, 8), [0, 1])
    # Tweedie chain, eta 0: the auxiliary's steps shrink by S^2 / (S^2 + (c sigma)^2)
    tweedie = TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, schedule, corrector_steps=0,
                          predictor="tweedie", eta=0.0, aux_sigma_scale=0.5)
    levels = np.where(schedule, 0.5, 1.0) * sigmas.astype(np.float64)
    np.testing.assert_allclose(tweedie(x_T)["x0"].numpy(), np.prod(S ** 2 / (S ** 2 + levels ** 2)) * x_T.numpy(),
                               rtol=1e-4, atol=1e-6)
    # reverse diffusion carrying its mean (no corrector): x <- x (1 - (s^2 - s'^2) / (S^2 + s^2)), seed-free
    carry = TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, schedule, corrector_steps=0,
                        predictor_noise=False)
    nxt = np.append(sigmas[1:], 0.0).astype(np.float64)
    gain = np.prod(1 - (sigmas.astype(np.float64) ** 2 - nxt ** 2) / (S ** 2 + sigmas.astype(np.float64) ** 2))
    np.testing.assert_allclose(carry(x_T, seed=1)["x0"].numpy(), gain * x_T.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(carry(x_T, seed=2)["x0"].numpy(), carry(x_T, seed=1)["x0"].numpy(), atol=1e-7)
    with pytest.raises(ValueError, match="aux_sigma_scale"):
        TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, schedule, aux_sigma_scale=0.0)


def test_noise_aware_projection_is_the_damped_step():
    from ldseg_suite.inverse.slices import SliceAverage

    op = SliceAverage(4, axis=2)
    rng = np.random.default_rng(4)
    y = (op.forward(shepp_logan_3d(16)).numpy() + 0.05 * rng.standard_normal((16, 16, 4))).astype(np.float32)
    sigmas = ve_sigmas(0.02, 0.2, 5)
    pinv = problem_for(Problem(Task="zsr"), 16, seed=0)[1]
    sampler = TPDMSampler(gaussian_score, gaussian_score, sigmas, 1, 2, k_schedule(5, 2), operator=op, y=y,
                          pinv=pinv, projection=1.0, dc_steps=np.ones(5, bool), corrector_steps=0,
                          predictor="tweedie", eta=0.0, noise_std=0.05)
    start = cubic_z(y, 4)
    out = sampler(start)["x0"].numpy()
    ref = start.astype(np.float64)
    for s in sigmas.astype(np.float64):
        ref = ref * S ** 2 / (S ** 2 + s ** 2)
        ref = ref + 4 * op.adjoint(y - op.forward(ref)).numpy() / (1 + 4 * (0.05 / s) ** 2)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert np.linalg.norm(op.forward(out).numpy() - y) > 0.1 * np.linalg.norm(y - op.forward(start).numpy())


TRAIN = """[Run]
Method = tpdm_score
Mode = train
[Data]
Path = {path}
Size = 16
[Model]
Plane = {plane}
BaseChannels = 8
ChannelMult = 1, 2
SigmaMax = 5.0
[Training]
Epochs = 1
BatchSize = 16
StepsPerEpoch = 40
LearningRate = 0.002
EMA = 0
[Output]
Weights = {weights}
"""
TPDM = """[Run]
Method = tpdm
Mode = evaluate
[Data]
Path = {path}
Size = 16
[Models]
Primary = {primary}
Auxiliary = {auxiliary}
[Sampler]
Steps = 4
CorrectorSteps = 0
K = 2
SliceBatch = 16
[Problem]
Task = {task}
Views = 6
Acceleration = 4
Projection = 1.0
[Output]
GifFrames = 3
"""


def test_train_sample_and_evaluate_end_to_end(tmp_path):
    write_nifti(tmp_path / "train.nii.gz", random_phantom(16, seed=1), np.eye(4))
    write_nifti(tmp_path / "test.nii.gz", random_phantom(16, seed=2), np.eye(4))
    weights = tmp_path / "primary" / "model.weights.h5"
    cfgs = {}
    for role, plane in (("primary", "coronal"), ("auxiliary", "axial")):
        cfgs[role] = tmp_path / f"{role}.ini"
        cfgs[role].write_text(TRAIN.format(path=tmp_path / "train.nii.gz", plane=plane, weights=weights))
    # one training run; the auxiliary config reuses its weights on the axial plane (the net is plane-agnostic)
    assert cli.main(["--cfg", str(cfgs["primary"]), "--out", str(tmp_path / "primary")]) == 0
    # the 40 training steps lowered the DSM loss of the training slices (fixed noise and levels)
    pcfg = config.load(cfgs["primary"], sections.schema_for)
    model = build_score_model(pcfg)
    x0 = plane_slices(random_phantom(16, seed=1), "coronal")
    sigma = np.geomspace(0.05, 5.0, len(x0)).astype(np.float32)
    z = np.random.default_rng(0).standard_normal(x0.shape).astype(np.float32)
    before = float(model.dsm_loss(x0, sigma, z))
    training.load_weights(model, weights, "trained")
    assert float(model.dsm_loss(x0, sigma, z)) < 0.8 * before
    clone = ScoreModel.from_config(model.get_config())
    assert clone.hp == model.hp and clone.hp["size"] == [16, 16]
    assert model.score(x0[:2], 0.5).shape == (2, 16, 16, 1)
    for task in ("zsr", "csmri", "svct"):
        cfg = tmp_path / f"{task}.ini"
        cfg.write_text(TPDM.format(path=tmp_path / "test.nii.gz", primary=cfgs["primary"],
                                   auxiliary=cfgs["auxiliary"], task=task))
        out = tmp_path / task
        mode = "evaluate" if task == "zsr" else "reconstruct"
        extra = {"csmri": ["--set", "Sampler.Start=baseline", "--set", "Sampler.SigmaMax=0.2"],
                 "svct": ["--set", "Sampler.Predictor=tweedie", "--set", "Sampler.Start=baseline", "--set",
                          "Sampler.StartNoise=0", "--set", "Problem.DCSteps=all", "--set", "Problem.CGIters=2"]}
        extra = extra.get(task, [])
        assert cli.main(["--cfg", str(cfg), "--mode", mode, "--out", str(out), *extra]) == 0
        table = pd.read_csv(out / "metrics.csv")
        assert len(table) == (4 if mode == "evaluate" else 2)
        assert np.isfinite(table[[c for c in table if c.startswith(("psnr", "ssim"))]].to_numpy()).all()
        assert (out / "tpdm.nii.gz").is_file() and (out / "baseline.nii.gz").is_file()
        assert (out / "reverse_diffusion.gif").stat().st_size > 0 and "| TPDM |" in (out / "metrics.md").read_text()
    assert cli.main(["--cfg", str(tmp_path / "zsr.ini"), "--mode", "sample", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "sample.nii.gz").is_file() and (tmp_path / "s" / "flythrough.gif").is_file()


def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.ini"
    cfg.write_text(TRAIN.format(path=tmp_path / "x.nii.gz", plane="diagonal", weights=""))
    assert cli.main(["--cfg", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "[Model] Plane = diagonal" in err and len(err.strip().splitlines()) == 1


def test_init_weights_start_training_from_a_model_of_another_size(tmp_path):
    """[Model] InitWeights: the new model holds the named weights (here of a 16 px model, used at 32 px);
    a missing or mismatched file is a one-line error naming the key."""
    from ldseg_suite.errors import LDSegError
    from ldseg_suite.tasks.tpdm import initial_score_model

    small = ScoreModel((16, 16), base_channels=8, channel_mult=(1,), sigma_max=5.0, seed=7)
    small.build((None, 16, 16, 1))
    small.save_weights(tmp_path / "small.weights.h5")
    text = TRAIN.format(path=tmp_path / "x.nii.gz", plane="coronal", weights="").replace("Size = 16", "Size = 32")
    text = text.replace("ChannelMult = 1, 2", "ChannelMult = 1")  # one level: a quick build
    cfgs = {}
    for name, init in (("ok", tmp_path / "small.weights.h5"), ("missing", tmp_path / "none.weights.h5")):
        (tmp_path / f"{name}.ini").write_text(text.replace("SigmaMax = 5.0", f"SigmaMax = 5.0\nInitWeights = {init}"))
        cfgs[name] = config.load(tmp_path / f"{name}.ini", sections.schema_for)
    started, fresh = initial_score_model(cfgs["ok"]), build_score_model(cfgs["ok"])
    assert started.hp["size"] == [32, 32] and len(started.weights) == len(small.weights) > 8
    for a, b in zip(started.get_weights(), small.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), small.get_weights()))
    with pytest.raises(LDSegError, match=r"^\[Model\] InitWeights = .*none.weights.h5: weights file not found"):
        initial_score_model(cfgs["missing"])
    wide = config.load(tmp_path / "ok.ini", sections.schema_for, ["Model.BaseChannels=12"])
    with pytest.raises(LDSegError, match=r"^\[Model\] InitWeights = .*: weights do not match") as err:
        initial_score_model(wide)
    assert "\n" not in str(err.value)


def test_128_task_configs_load_their_128_models_and_refuse_a_64_px_model(tmp_path, capsys):
    from ldseg_suite.tasks.tpdm import load_pair

    cfgs = {task: config.load(f"cfg/tpdm_{task}_128.ini", sections.schema_for) for task in ("zsr", "csmri", "svct")}
    for task in ("zsr", "csmri", "svct"):  # three pairs: ZSR's sagittal + coronal, CS-MRI's coronal + axial, CT's
        assert cfgs[task].Data.Size == 128 and "/128/" in cfgs[task].Data.Path
        (pcfg, primary), (acfg, _) = load_pair(cfgs[task])
        assert primary.hp["size"] == [128, 128] and pcfg.Output.Weights.endswith("_128.weights.h5")
        assert acfg.Data.Size == 128 and acfg.Output.Weights.endswith("_128.weights.h5")
    args = ["--cfg", "cfg/tpdm_zsr_128.ini", "--out", str(tmp_path / "o"), "--set",
            "Models.Primary=cfg/tpdm_train_primary.ini"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: [Models] Primary = cfg/tpdm_train_primary.ini: [Data] Size = 64 differs from 128"] or \
        (len(err) == 1 and "[Data] Size = 64 differs from 128" in err[0]), err
