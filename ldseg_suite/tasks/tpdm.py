"""TPDM runner: train the 2D score models, sample volumes, solve 3D inverse problems (ZSR, CS-MRI, SV-CT).

Modes of ``tpdm_score``: ``train`` (one model on the slices of ``[Model] Plane`` of ``[Data] Path``).
Modes of ``tpdm``: ``sample`` (an unconditional volume, NIfTI + a fly-through GIF in the three planes),
``reconstruct`` (baseline and TPDM on the held-out volume ``[Data] Path``) and ``evaluate`` (also the
primary-only and auxiliary-only ablations). Both write ``metrics.csv`` / ``metrics.md`` (PSNR and SSIM on
axial, coronal and sagittal slices), the reconstructions as NIfTI and a GIF of the reverse diffusion.

The model module is imported at the top: resuming a checkpoint needs its class registered.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ldseg_suite import config, distribute, sections, training
from ldseg_suite.data import pipeline
from ldseg_suite.data.readers import read_nifti, write_nifti
from ldseg_suite.diffusion.tpdm_sampler import PLANES, TPDMSampler, k_schedule
from ldseg_suite.diffusion.ve_sde import ve_sigmas
from ldseg_suite.errors import LDSegError
from ldseg_suite.models.tpdm import ScoreModel
from ldseg_suite.tasks.common import atomic_csv, prepare_run_dir, record_config
from ldseg_suite.tasks.tpdm_schema import SCORE_MODES, TPDM_MODES
from ldseg_suite.viz import gifs

OUTPUTS = {"train": [], "sample": ["sample.nii.gz"], "reconstruct": ["metrics.csv"], "evaluate": ["metrics.csv"]}
ORDER = ("axial", "coronal", "sagittal", "mean")  # columns of the metrics table
METHOD_FILES = {"baseline": "baseline", "TPDM": "tpdm", "primary only": "primary_only",
                "auxiliary only": "auxiliary_only"}


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    import keras

    modes = SCORE_MODES if cfg.Run.Method == "tpdm_score" else TPDM_MODES
    if mode not in modes:
        raise LDSegError(f"--mode {mode}: expected one of {', '.join(modes)} for method {cfg.Run.Method}")
    run_dir = prepare_run_dir(out, OUTPUTS[mode], overwrite)
    record_config(cfg, run_dir, mode == "train")  # the other modes load the score models' configs' weights
    keras.utils.set_random_seed(cfg.Run.Seed)
    if mode != "train":
        import tensorflow as tf

        # Grappler's AddOpsRewrite puts a temporary variable in the sampling loop that the second sampler of
        # a process trips over (AlreadyExistsError in TF 2.21); the rewrite gains nothing here.
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    if mode == "train":
        distribute.set_precision(cfg.Training.Precision)
        train(cfg, run_dir)
    elif mode == "sample":
        sample(cfg, run_dir)
    else:
        reconstruct(cfg, run_dir, ablations=mode == "evaluate" and cfg.Problem.Ablations)
    return 0


# ----------------------------------------------------------------------------------------------- data

def load_volume(data_cfg):
    """(float32 (S, S, S) in [0, 1], 4x4 affine) of ``[Data] Path``, resampled to Size^3 if needed."""
    from scipy import ndimage

    arr, geom = read_nifti(data_cfg.Path)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise LDSegError(f"[Data] Path = {data_cfg.Path}: a volume of shape {arr.shape}; expected 3D")
    if not np.all(np.isfinite(arr)):
        raise LDSegError(f"[Data] Path = {data_cfg.Path}: contains NaN or Inf values")
    affine = geom.affine.copy()
    s = data_cfg.Size
    if arr.shape != (s, s, s):
        zoom = [s / n for n in arr.shape]
        arr = ndimage.zoom(arr, zoom, order=3)
        affine[:3, :3] = affine[:3, :3] / np.asarray(zoom)[None]
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        arr = (arr - lo) / max(hi - lo, 1e-8)
    return np.clip(arr, 0.0, 1.0).astype(np.float32), affine


def plane_slices(volume: np.ndarray, plane: str) -> np.ndarray:
    """(S, H, W, 1) slices of one plane (sagittal x[i], coronal x[:, j], axial x[:, :, k])."""
    return np.moveaxis(volume, PLANES[plane], 0)[..., None].copy()


def augment_fn(aug_cfg, plane: str):
    """Random left-right flip (not sagittal), shift and intensity scale / gamma of one (H, W, 1) slice."""
    import tensorflow as tf

    def augment(x):
        if aug_cfg.Flip and plane != "sagittal":  # axis 0 of coronal and axial slices is left-right
            x = tf.cond(tf.random.uniform(()) < 0.5, lambda: tf.reverse(x, [0]), lambda: x)
        if aug_cfg.Shift:
            s = aug_cfg.Shift
            h, w = x.shape[0], x.shape[1]
            x = tf.image.random_crop(tf.pad(x, [[s, s], [s, s], [0, 0]]), (h, w, 1))
        if aug_cfg.Intensity:
            i = aug_cfg.Intensity
            gamma = tf.random.uniform((), 1.0 - i, 1.0 + i)
            scale = tf.random.uniform((), 1.0 - i, 1.0 + i)
            x = scale * tf.pow(tf.maximum(x, 0.0), gamma)
        return x

    return augment


# ---------------------------------------------------------------------------------------------- train

def build_score_model(scfg) -> ScoreModel:
    m = scfg.Model
    model = ScoreModel((scfg.Data.Size, scfg.Data.Size), m.BaseChannels, m.ChannelMult, m.ResBlocks, m.Attention,
                       m.SigmaMin, m.SigmaMax, m.SigmaData, seed=scfg.Run.Seed)
    model.build((None, scfg.Data.Size, scfg.Data.Size, 1))
    return model


def initial_score_model(cfg) -> ScoreModel:
    """A new score model of ``[Model]``, holding ``[Model] InitWeights`` when that is set (fine-tuning)."""
    model = build_score_model(cfg)
    if cfg.Model.InitWeights:
        training.load_weights(model, Path(cfg.Model.InitWeights), "[Model] InitWeights")
        print(f"init: weights of {cfg.Model.InitWeights}", flush=True)
    return model


def train(cfg, run_dir: Path) -> None:

    t = cfg.Training
    volume, _ = load_volume(cfg.Data)
    slices = plane_slices(volume, cfg.Model.Plane)
    print(f"data: {cfg.Data.Path}: {len(slices)} {cfg.Model.Plane} slices of {slices.shape[1:3]}", flush=True)
    ds = pipeline.array_dataset(slices, t.BatchSize, seed=cfg.Run.Seed,
                                map_fn=augment_fn(cfg.Augment, cfg.Model.Plane))
    steps = t.StepsPerEpoch or max(1, len(slices) // t.BatchSize)
    start = time.time()
    training.fit(lambda: initial_score_model(cfg), ds, steps, t.Epochs, run_dir, t,
                 strategy=distribute.strategy_for(cfg.Distribute.Strategy))
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: "
          f"{run_dir / training.FINAL_WEIGHTS}", flush=True)


def load_score_model(path: str, key: str, size: int):
    """(training config, ScoreModel with its [Output] Weights) of ``[Models] key = path``."""
    p = Path(path)
    if not p.is_file():
        raise LDSegError(f"[Models] {key} = {path}: config file not found (expected a tpdm_score config)")
    scfg = config.load(p, sections.schema_for)
    if scfg.Run.Method != "tpdm_score":
        raise LDSegError(f"[Models] {key} = {path}: [Run] Method = {scfg.Run.Method}; expected tpdm_score")
    if scfg.Data.Size != size:
        raise LDSegError(f"[Models] {key} = {path}: [Data] Size = {scfg.Data.Size} differs from {size}")
    if not scfg.Output.Weights:
        raise LDSegError(f"[Models] {key} = {path}: its [Output] Weights is empty (train it, then name the file)")
    model = build_score_model(scfg)
    training.load_weights(model, Path(scfg.Output.Weights), f"{path}: [Output] Weights")
    return scfg, model


def load_pair(cfg):
    pcfg, primary = load_score_model(cfg.Models.Primary, "Primary", cfg.Data.Size)
    acfg, auxiliary = load_score_model(cfg.Models.Auxiliary, "Auxiliary", cfg.Data.Size)
    if pcfg.Model.Plane == acfg.Model.Plane:
        raise LDSegError(f"[Models] Auxiliary = {cfg.Models.Auxiliary}: learns the {acfg.Model.Plane} plane like "
                         f"the primary; expected a perpendicular plane")
    print(f"models: primary {pcfg.Model.Plane} ({pcfg.Output.Weights}), auxiliary {acfg.Model.Plane} "
          f"({acfg.Output.Weights})", flush=True)
    return (pcfg, primary), (acfg, auxiliary)


def sigmas_for(cfg, pcfg) -> np.ndarray:
    s = cfg.Sampler
    return ve_sigmas(s.SigmaMin or pcfg.Model.SigmaMin, s.SigmaMax or pcfg.Model.SigmaMax, s.Steps)


def make_sampler(cfg, pair, sigmas, use_auxiliary, aux_sigma_scale=None, **kw) -> TPDMSampler:
    """The sampler of ``[Sampler]``; ``aux_sigma_scale`` overrides ``AuxSigmaScale``."""
    (pcfg, primary), (acfg, auxiliary) = pair
    s = cfg.Sampler
    return TPDMSampler(primary.score, auxiliary.score, sigmas, PLANES[pcfg.Model.Plane], PLANES[acfg.Model.Plane],
                       use_auxiliary, slice_batch=s.SliceBatch, snr=s.SNR, corrector_steps=s.CorrectorSteps,
                       predictor=s.Predictor, eta=s.Eta,
                       aux_sigma_scale=s.AuxSigmaScale if aux_sigma_scale is None else aux_sigma_scale,
                       predictor_noise=s.PredictorNoise, **kw)


# ------------------------------------------------------------------------------------------- pictures

def view(volume: np.ndarray, plane: str, k: int) -> np.ndarray:
    """Slice k of a plane, oriented for display (superior / anterior up)."""
    sl = np.take(volume, k, axis=PLANES[plane])
    return np.flipud(sl.T)


def flythrough_gif(path: Path, volume: np.ndarray, title: str, frames: int = 32) -> Path:
    n = volume.shape[0]
    pics = []
    for k in gifs.pick_frames(n, frames):
        panels = [np.clip(view(volume, p, k), 0, 1) for p in ("axial", "coronal", "sagittal")]
        pics.append(gifs.render(panels, [f"axial {k}", f"coronal {k}", f"sagittal {k}"], suptitle=title,
                                layout="row", cmap="gray", value_range=(0, 1)))
    return gifs.write_gif(path, pics, fps=6)


def diffusion_gif(path: Path, trajectory: np.ndarray, sigmas, truth: np.ndarray, frames: int, title: str) -> Path:
    """The reverse diffusion on the middle coronal and axial slices, next to the ground truth."""
    mid = truth.shape[0] // 2
    pics = []
    for i in gifs.pick_frames(len(trajectory), frames):
        vol = trajectory[i]
        panels = [np.clip(view(vol, "coronal", mid), 0, 1), np.clip(view(vol, "axial", mid), 0, 1),
                  view(truth, "coronal", mid)]
        pics.append(gifs.render(panels, ["coronal", "axial", "truth (coronal)"], layout="row", cmap="gray",
                                value_range=(0, 1),
                                suptitle=f"{title}: step {i + 1}/{len(trajectory)}, sigma {sigmas[i]:.3g}"))
    return gifs.write_gif(path, pics, fps=4)


# ---------------------------------------------------------------------------------------------- sample

def sample(cfg, run_dir: Path) -> None:
    pair = load_pair(cfg)
    sigmas = sigmas_for(cfg, pair[0][0])
    schedule = k_schedule(len(sigmas), cfg.Sampler.K, cfg.Run.Seed)
    sampler = make_sampler(cfg, pair, sigmas, schedule)
    s = cfg.Data.Size
    start = time.time()
    x = sampler(sampler.initial_noise((s, s, s), cfg.Run.Seed), seed=cfg.Run.Seed)["x0"].numpy()
    print(f"sampled a {s}^3 volume in {time.time() - start:.0f} s ({len(sigmas)} steps, auxiliary on "
          f"{int(schedule.sum())})", flush=True)
    x = np.clip(x, 0.0, 1.0)
    write_nifti(run_dir / "sample.nii.gz", x, np.eye(4))
    print(f"gif: {flythrough_gif(run_dir / 'flythrough.gif', x, 'TPDM sample', cfg.Output.GifFrames)}", flush=True)


# ------------------------------------------------------------------------------------- inverse problems

def ramp_filter(detectors: int):
    """Ram-Lak filter in the frequency domain (as scikit-image builds it), zero-padded length."""
    size = max(64, int(2 ** np.ceil(np.log2(2 * detectors))))
    k = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * k) ** 2
    return 2 * np.real(np.fft.fft(f)), size


def fbp_matched(op, sinograms):
    """Filtered back-projection with the projector's own adjoint: (views, detectors, D) -> (n, n, D) tensor.

    Ramp-filter every view, back-project with A^T, scale by pi / (2 views). Matched to the projector's
    geometry, it is a better (fairer) baseline than scikit-image's ``iradon`` on these sinograms; being
    linear, it is also the approximate pseudo-inverse of the projection step.
    """
    import tensorflow as tf

    sinograms = tf.convert_to_tensor(sinograms, tf.float32)
    views, d = sinograms.shape[0], sinograms.shape[1]
    filt, size = ramp_filter(d)
    rows = tf.experimental.numpy.moveaxis(sinograms, 1, -1)  # detectors last
    pad = [[0, 0]] * (len(rows.shape) - 1) + [[0, size - d]]
    spectrum = tf.signal.fft(tf.cast(tf.pad(rows, pad), tf.complex64)) * tf.constant(filt, tf.complex64)
    filtered = tf.math.real(tf.signal.ifft(spectrum))[..., :d]
    return op.adjoint(tf.experimental.numpy.moveaxis(filtered, -1, 1)) * (np.pi / (2 * views))


def cubic_z(thick: np.ndarray, factor: int) -> np.ndarray:
    """Cubic-spline interpolation along z of thick slices placed at their group centres."""
    from scipy.interpolate import CubicSpline

    n = thick.shape[2]
    z = (np.arange(n * factor) - (factor - 1) / 2) / factor
    return CubicSpline(np.arange(n), thick, axis=2)(np.clip(z, 0, n - 1)).astype(np.float32)


def problem_for(pcfg, size: int, seed: int):
    """(operator, pinv, measure(volume) -> y, (baseline name, baseline(y) -> volume), description) of
    ``[Problem]``; ``pinv`` maps a measurement residual back to the volume (the projection step)."""
    rng = np.random.default_rng(seed + 1234)
    if pcfg.Task == "zsr":
        from ldseg_suite.inverse.slices import SliceAverage

        op = SliceAverage(pcfg.Factor, axis=2)
        # exact: A A^T = I / factor; damped: A^T (A A^T + damp I)^-1 = factor A^T / (1 + factor damp)
        pinv = lambda r, damp=0.0: op.adjoint(r) * (pcfg.Factor / (1.0 + pcfg.Factor * damp))  # noqa: E731
        baseline = ("cubic interpolation", lambda y: cubic_z(y, pcfg.Factor))
        what = f"z-axis super-resolution x{pcfg.Factor} (averages of {pcfg.Factor} axial slices)"
        noise = lambda shape: rng.standard_normal(shape)  # noqa: E731
    elif pcfg.Task == "csmri":
        from ldseg_suite.inverse.mri import MaskedFourier, poisson_disc_mask

        mask = poisson_disc_mask((size, size), pcfg.Acceleration, seed=pcfg.MaskSeed)
        op = MaskedFourier(mask)
        pinv = op.pinv  # exact (A^T alone is half a step on the samples whose mirror is not sampled)
        baseline = ("zero-filled inverse FFT", lambda y: np.asarray(op.adjoint(y)))
        what = (f"CS-MRI, axial 2D Poisson-disc mask, acceleration {pcfg.Acceleration:g} "
                f"({mask.mean() * 100:.1f}% of k-space)")
        noise = lambda shape: (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)  # noqa
    else:
        from ldseg_suite.inverse.ct import ParallelBeam

        op = ParallelBeam(size, pcfg.Views)
        pinv = lambda r, damp=0.0: fbp_matched(op, r) / (1.0 + damp)  # noqa: E731  (approximate)
        baseline = ("filtered back-projection", lambda y: np.asarray(fbp_matched(op, y)))
        what = f"sparse-view CT, {pcfg.Views} parallel-beam views of every axial slice"
        noise = lambda shape: rng.standard_normal(shape)  # noqa: E731

    def measure(volume):
        y = np.asarray(op.forward(volume))
        if pcfg.NoiseStd:
            y = (y + pcfg.NoiseStd * noise(y.shape)).astype(y.dtype)
        return y

    if pcfg.CGIters:
        from ldseg_suite.inverse.cg import cgls_pinv

        pinv = cgls_pinv(op, pcfg.CGIters)
    return op, pinv, measure, baseline, what


def plane_metrics(x: np.ndarray, truth: np.ndarray) -> dict:
    """Mean PSNR and SSIM (data range 1) over the slices of each plane whose truth is not blank (max > 0.01)."""
    from skimage.metrics import structural_similarity

    out = {}
    for plane, axis in PLANES.items():
        psnr, ssim = [], []
        for k in range(truth.shape[axis]):
            t, r = np.take(truth, k, axis), np.take(x, k, axis)
            if t.max() <= 0.01:
                continue
            psnr.append(10 * np.log10(1.0 / max(float(np.mean((t - r) ** 2)), 1e-12)))
            ssim.append(structural_similarity(t, r, data_range=1.0))
        out[f"psnr_{plane}"], out[f"ssim_{plane}"] = float(np.mean(psnr)), float(np.mean(ssim))
    out["psnr_mean"] = float(np.mean([out[f"psnr_{p}"] for p in PLANES]))
    out["ssim_mean"] = float(np.mean([out[f"ssim_{p}"] for p in PLANES]))
    return out


def reconstruct(cfg, run_dir: Path, ablations: bool) -> None:
    p, s = cfg.Problem, cfg.Data.Size
    truth, affine = load_volume(cfg.Data)
    pair = load_pair(cfg)
    sigmas = sigmas_for(cfg, pair[0][0])
    op, pinv, measure, (baseline_name, baseline), what = problem_for(p, s, cfg.Run.Seed)
    y = measure(truth)
    print(f"problem: {what}; held-out volume {cfg.Data.Path}", flush=True)
    rows, results = [], {}
    start = time.time()
    results["baseline"] = np.clip(baseline(y), 0.0, 1.0)
    rows.append({"method": f"baseline ({baseline_name})", **plane_metrics(results["baseline"], truth),
                 "seconds": time.time() - start})
    n = len(sigmas)
    # (name, auxiliary's steps, data-consistency steps, auxiliary's sigma scale); a single model runs the plain chain
    variants = [("TPDM", k_schedule(n, cfg.Sampler.K, cfg.Run.Seed), np.ones(n, bool) if p.DCSteps == "all" else None,
                 None)]
    if ablations:
        variants += [("primary only", np.zeros(n, bool), np.ones(n, bool), 1.0),
                     ("auxiliary only", np.ones(n, bool), np.ones(n, bool), 1.0)]
    for name, schedule, dc_steps, aux_scale in variants:
        sampler = make_sampler(cfg, pair, sigmas, schedule, aux_scale, operator=op, y=y, weight=p.Weight,
                               dc_steps=dc_steps, jacobian=p.Jacobian, pinv=pinv, projection=p.Projection,
                               capture=name == "TPDM", noise_std=float(np.sqrt(p.Damping)) * p.NoiseStd)
        start = time.time()
        x_T = sampler.initial_noise((s, s, s), cfg.Run.Seed)
        if cfg.Sampler.Start == "baseline":
            x_T = cfg.Sampler.StartNoise * x_T + results["baseline"]
        out = sampler(x_T, seed=cfg.Run.Seed)
        results[name] = np.clip(out["x0"].numpy(), 0.0, 1.0)
        seconds = time.time() - start
        rows.append({"method": name, **plane_metrics(results[name], truth), "seconds": seconds})
        print(f"{name}: PSNR {rows[-1]['psnr_mean']:.2f} dB, SSIM {rows[-1]['ssim_mean']:.4f} in {seconds:.0f} s "
              f"({n} steps, auxiliary on {int(schedule.sum())})", flush=True)
        if name == "TPDM":
            gif = diffusion_gif(run_dir / "reverse_diffusion.gif", out["trajectory"].numpy(), sigmas, truth,
                                cfg.Output.GifFrames, f"TPDM {p.Task}")
            print(f"gif: {gif}", flush=True)
    write_nifti(run_dir / "truth.nii.gz", truth, affine)
    for name, vol in results.items():
        write_nifti(run_dir / f"{METHOD_FILES[name]}.nii.gz", vol.astype(np.float32), affine)
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "metrics.csv")
    md = metrics_markdown(table, what, cfg)
    (run_dir / "metrics.md").write_text(md)
    print(md, flush=True)


def metrics_markdown(table: pd.DataFrame, what: str, cfg) -> str:
    s = cfg.Sampler
    start = "noise" if s.Start == "noise" else (f"the baseline plus {s.StartNoise:g} x SigmaMax noise"
                                                if s.StartNoise else "the baseline")
    predictor = "reverse diffusion" if s.Predictor == "reverse" else f"Tweedie predictor (eta {s.Eta:g})"
    head = (f"{what}; held-out volume `{cfg.Data.Path}` at {cfg.Data.Size}^3. PSNR (dB) and SSIM are means over "
            f"the non-blank slices of each plane (data range 1). Sampler: from {start}, {s.Steps} noise levels "
            f"(sigma {s.SigmaMax or 'SigmaMax of the primary'} to its SigmaMin), {predictor}, {s.CorrectorSteps} "
            f"corrector step(s), K = {s.K:g}, DPS weight {cfg.Problem.Weight:g} ({cfg.Problem.Jacobian} Jacobian), "
            f"projection {cfg.Problem.Projection:g} on "
            + ("every step" if cfg.Problem.DCSteps == "all" else "the primary's steps")
            + (f" (pinv: {cfg.Problem.CGIters} CGLS iterations)" if cfg.Problem.CGIters else "")
            + f", seed {cfg.Run.Seed}.\n\n")
    cols = "| method | PSNR axial | PSNR coronal | PSNR sagittal | PSNR mean | SSIM axial | SSIM coronal | " \
           "SSIM sagittal | SSIM mean | time (s) |\n|---|" + "---|" * 9 + "\n"
    lines = [f"| {r.method} | " + " | ".join(f"{r[f'psnr_{p}']:.2f}" for p in ORDER) + " | "
             + " | ".join(f"{r[f'ssim_{p}']:.4f}" for p in ORDER) + f" | {r.seconds:.0f} |"
             for _, r in table.iterrows()]
    return head + cols + "\n".join(lines) + "\n"
