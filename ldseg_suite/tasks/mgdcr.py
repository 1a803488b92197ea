"""MGDCR: a 3D short-axis volume from sparse SAX slices and long-axis views, by inverse optimisation of a DiffAE.

Each observed SAX slice is encoded to (z_sem, x_T) (semantic encoder and K-step DDIM inversion); missing
slices start from interpolation (lerp for z_sem, slerp for x_T). Adam then optimises all (z_sem, x_T) through
the differentiable K-step DDIM decode so that the stacked volume matches the observed SAX slices and the LAX
planes sampled from it (``planes.trilinear``), plus a latent prior (each x_T stays on the Gaussian shell) and a
through-plane smoothness term. The DDIM-prior ablation optimises x_T only, with the plain DDIM model.

Modes: ``reconstruct`` (one held-out phantom: NIfTI volume, loss curves, a GIF over the iterations) and
``evaluate`` (all held-out phantoms at ED and ES, segmented by ``cardiac.segment_by_intensity``: Dice and HD95
per structure, EDV/ESV/EF errors, for MGDCR, the DDIM ablation and linear / cubic through-plane interpolation).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ldseg_suite import config, sections
from ldseg_suite.data import cardiac
from ldseg_suite.errors import LDSegError
from ldseg_suite.tasks.cardiac import load_model, phantom_cases
from ldseg_suite.tasks.common import atomic_csv, open_run

OUTPUTS = {"reconstruct": ["reconstruction.nii.gz"], "evaluate": ["evaluate.csv"]}
STRUCTURES = {1: "lv", 2: "myo", 3: "rv"}


@dataclass
class Observation:
    """What the scanner gives for one phantom frame: SAX slices at ``sax_index`` and LAX images."""

    truth: np.ndarray       # (I, J, K) full SAX volume in [0, 1] (for scoring only)
    labels: np.ndarray      # (I, J, K) ground-truth labels
    sax_index: np.ndarray   # observed slice indices
    sax: np.ndarray         # (I, J, n_obs)
    lax: dict               # view -> (coords (h, w, 3), image (h, w))
    spacing: tuple


def observe(case, frame: int, acq) -> Observation:
    from ldseg_suite.inverse.planes import trilinear

    truth = case.image[..., frame]
    index = cardiac.sax_observed(truth.shape[2], acq.KeepEvery, acq.Missing)
    lax = {}
    for view in acq.Views:
        coords = cardiac.lax_coords(case, view)
        lax[view] = (coords, np.asarray(trilinear(truth, coords)))
    return Observation(truth, case.labels[..., frame], index, truth[..., index], lax, tuple(case.spacing))


def interpolate(obs: Observation, kind: str) -> np.ndarray:
    """Through-plane interpolation (``linear`` or ``cubic`` spline) of the observed SAX slices, clipped to [0, 1]."""
    from scipy.interpolate import CubicSpline, interp1d

    z = np.arange(obs.truth.shape[2])
    f = interp1d(obs.sax_index, obs.sax, axis=2) if kind == "linear" else CubicSpline(obs.sax_index, obs.sax, axis=2)
    return np.clip(f(z), 0.0, 1.0).astype(np.float32)


def slerp(a, b, w):
    """Spherical interpolation between two noise images (keeps the Gaussian norm)."""
    a_flat, b_flat = a.ravel(), b.ravel()
    cos = np.dot(a_flat, b_flat) / (np.linalg.norm(a_flat) * np.linalg.norm(b_flat))
    theta = np.arccos(np.clip(cos, -1.0, 1.0))
    if theta < 1e-4:
        return (1 - w) * a + w * b
    return (np.sin((1 - w) * theta) * a + np.sin(w * theta) * b) / np.sin(theta)


def initial_latents(index, z_obs, xT_obs, slices: int):
    """(z (slices, d), x_T (slices, H, W, 1)): observed slices' codes, lerp / slerp in between."""
    z = np.stack([np.array([np.interp(k, index, z_obs[:, d]) for d in range(z_obs.shape[1])], np.float32)
                  for k in range(slices)]) if z_obs.shape[1] else np.zeros((slices, 0), np.float32)
    xT = []
    for k in range(slices):
        j = min(np.searchsorted(index, k, side="right") - 1, len(index) - 2)
        w = (k - index[j]) / (index[j + 1] - index[j])
        xT.append(slerp(xT_obs[j], xT_obs[j + 1], float(np.clip(w, 0.0, 1.0))))
    return z, np.stack(xT).astype(np.float32)


def optimise(model, obs: Observation, opt, log_every: int = 10):
    """Fit (z_sem, x_T) of every slice to the observation. Returns (volume in [0, 1], loss history, snapshots)."""
    import tensorflow as tf

    k_steps, slices = opt.Steps, obs.truth.shape[2]
    if opt.Init == "cubic":  # encode every slice of the cubic interpolation (observed ones are the data)
        x_all = np.moveaxis(interpolate(obs, "cubic"), 2, 0)[..., None] * 2.0 - 1.0
        z0, xT0 = (np.asarray(a, np.float32) for a in model.encode(x_all, k_steps))
    else:
        x_obs = np.moveaxis(obs.sax, 2, 0)[..., None] * 2.0 - 1.0
        z_obs, xT_obs = (np.asarray(a) for a in model.encode(x_obs, k_steps))
        z0, xT0 = initial_latents(obs.sax_index, z_obs, xT_obs, slices)
    fit = _fitter(model, opt, z0.shape, xT0.shape, len(obs.lax))
    z, xT, variables, adam, decode = fit["z"], fit["xT"], fit["variables"], fit["adam"], fit["decode"]
    z.assign(z0)
    xT.assign(xT0)
    for v in adam.variables:  # a fresh Adam: moments and the iteration count (hence the schedule) from zero
        v.assign(tf.zeros_like(v))
    warmup = fit["warmup"]
    data = (tf.constant(obs.sax_index, tf.int32), tf.constant(obs.sax, tf.float32),
            tuple((tf.constant(c), tf.constant(img, tf.float32)) for c, img in obs.lax.values()))

    def step():
        return fit["step"](*data)

    history, snapshots = [], []
    best, best_values, stale = np.inf, [v.numpy() for v in variables], 0
    for it in range(opt.Iterations):
        loss, terms, volume = step()  # volume and terms are those before this iteration's update
        loss = float(loss)
        history.append({"iteration": it, "loss": loss, **{k: float(v) for k, v in terms.items()}})
        snapshots.append(np.asarray(volume))
        if loss < best * (1 - 1e-3):
            best, best_values, stale = loss, [v.numpy() for v in variables], 0
        elif it >= warmup:
            stale += 1
        if log_every and (it % log_every == 0 or stale >= opt.Patience):
            print(f"  iteration {it}: loss {loss:.5f} (sax {history[-1]['sax']:.5f}, lax {history[-1]['lax']:.5f})",
                  flush=True)
        if stale >= opt.Patience:
            break
    for var, value in zip(variables, best_values):
        var.assign(value)
    volume = np.array(decode())
    if opt.KeepObserved:
        volume[..., obs.sax_index] = obs.sax
    return np.clip(volume, 0.0, 1.0), history, snapshots


_FITTERS: dict = {}


def _fitter(model, opt, z_shape, xT_shape, views: int) -> dict:
    """The variables, Adam and compiled step of a fit, cached per model, settings and shapes: tracing the step (a
    gradient through the K-step decode loop) cost more than its 20 iterations, once per fit."""
    import keras
    import tensorflow as tf

    from ldseg_suite.inverse.planes import trilinear

    key = (id(model), opt, tuple(z_shape), tuple(xT_shape), views)
    if key in _FITTERS and _FITTERS[key]["model"] is model:  # the entry holds the model: its id is not reused
        return _FITTERS[key]
    z, xT = tf.Variable(tf.zeros(z_shape)), tf.Variable(tf.zeros(xT_shape))
    variables = [xT, z] if z_shape[1] else [xT]
    warmup = min(opt.Warmup, opt.Iterations - 1)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, opt.Iterations - warmup, alpha=0.1,
                                                      warmup_target=opt.LearningRate, warmup_steps=warmup)
    adam = keras.optimizers.Adam(schedule)
    adam.build(variables)
    sampler = model.sampler(opt.Steps)
    n = float(np.prod(xT_shape[1:]))

    def decode():
        x0 = sampler(xT, z)["x0"]
        return (tf.transpose(x0[..., 0], (1, 2, 0)) + 1.0) / 2.0  # (I, J, K) in [0, 1]

    @tf.function
    def step(sax_index, sax, lax):
        with tf.GradientTape() as tape:
            volume = decode()
            terms = {"sax": tf.reduce_mean((tf.gather(volume, sax_index, axis=2) - sax) ** 2),
                     "lax": tf.add_n([tf.reduce_mean((trilinear(volume, c) - img) ** 2) for c, img in lax])
                     / len(lax) if lax else tf.constant(0.0),
                     "prior": tf.reduce_mean((tf.reduce_sum(xT ** 2, axis=[1, 2, 3]) / n - 1.0) ** 2),
                     "smooth": tf.reduce_mean((z[1:] - z[:-1]) ** 2) if z_shape[1] else tf.constant(0.0)}
            loss = (opt.SaxWeight * terms["sax"] + opt.LaxWeight * terms["lax"] + opt.PriorWeight * terms["prior"]
                    + opt.SmoothWeight * terms["smooth"])
        adam.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, terms, volume

    _FITTERS[key] = dict(model=model, z=z, xT=xT, variables=variables, adam=adam, decode=decode, step=step,
                         warmup=warmup)
    return _FITTERS[key]


def load_prior(cfg, kind: str):
    """The trained DiffAE (``kind`` = mgdcr) or DDIM (ablation) of ``[Prior]``, checked against ``[Phantom]``."""
    key = "DiffAE" if kind == "mgdcr" else "DDIM"
    path = Path(getattr(cfg.Prior, f"{key}Config"))
    if not path.is_file():
        raise LDSegError(f"[Prior] {key}Config = {path}: config file not found")
    prior = config.load(path, sections.schema_for)
    expected = "diffae" if kind == "mgdcr" else "ddim"
    if prior.Run.Method != expected or prior.Phantom.Size != cfg.Phantom.Size:
        raise LDSegError(f"[Prior] {key}Config = {path}: expected a {expected} config with [Phantom] Size = "
                         f"{cfg.Phantom.Size}")
    weights = getattr(cfg.Prior, f"{key}Weights")
    return load_model(prior, weights=weights, what=f"[Prior] {key}Weights")


def reconstruct_volume(method: str, obs: Observation, cfg, priors: dict):
    """(volume, history, snapshots) of one method; history and snapshots are empty for interpolation."""
    if method in ("linear", "cubic"):
        return interpolate(obs, method), [], []
    if method not in priors:
        priors[method] = load_prior(cfg, method)
    return optimise(priors[method], obs, cfg.Optimise.for_method(method))


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    run_dir = open_run(cfg, mode, out, overwrite, OUTPUTS)
    {"reconstruct": reconstruct, "evaluate": evaluate}[mode](cfg, run_dir)
    return 0


def frame_of(case, phase: str) -> int:
    return case.ed_frame if phase == "ed" else case.es_frame


def reconstruct(cfg, run_dir: Path) -> None:
    from ldseg_suite.data.readers import write_nifti

    r = cfg.Reconstruct
    case = phantom_cases(cfg.Phantom, "test")[r.Case]
    obs = observe(case, frame_of(case, r.Frame), cfg.Acquisition)
    print(f"held-out phantom {r.Case} ({r.Frame.upper()}): {len(obs.sax_index)} of {obs.truth.shape[2]} SAX slices "
          f"({', '.join(map(str, obs.sax_index))}) and views {', '.join(obs.lax) or 'none'}", flush=True)
    start = time.time()
    volume, history, snapshots = reconstruct_volume("mgdcr", obs, cfg, {})
    print(f"optimised {len(history)} iterations in {time.time() - start:.0f} s", flush=True)
    affine = np.diag([*obs.spacing, 1.0])
    write_nifti(run_dir / "reconstruction.nii.gz", volume, affine)
    write_nifti(run_dir / "truth.nii.gz", obs.truth, affine)
    atomic_csv(pd.DataFrame(history), run_dir / "loss.csv")
    loss_plot(history, run_dir / "loss.png")
    iterations_gif(snapshots, obs, run_dir / "iterations.gif")
    cubic = interpolate(obs, "cubic")
    missing = np.setdiff1d(np.arange(obs.truth.shape[2]), obs.sax_index)
    for name, vol in (("mgdcr", volume), ("cubic", cubic)):
        scores = score(vol, obs)
        print(f"{name}: MSE on the missing slices {np.mean((vol[..., missing] - obs.truth[..., missing]) ** 2):.5f}, "
              "Dice " + ", ".join(f"{s} {scores[f'dice_{s}']:.3f}" for s in STRUCTURES.values()), flush=True)
    print(f"outputs: {run_dir}", flush=True)


def score(volume, obs: Observation) -> dict:
    """Dice and HD95 (mm) per structure of the segmented volume against the ground-truth labels."""
    from ldseg_suite.metrics import dice, hd95

    seg = cardiac.segment_by_intensity(volume, spacing=obs.spacing)
    out = {}
    for c, name in STRUCTURES.items():
        out[f"dice_{name}"] = dice(seg == c, obs.labels == c)
        out[f"hd95_{name}"] = hd95(seg == c, obs.labels == c, obs.spacing)
    out["lv_ml"] = float(cardiac.volumes_ml(seg, obs.spacing)["lv"])
    return out


def evaluate(cfg, run_dir: Path) -> None:
    from ldseg_suite.data.readers import write_nifti

    methods = ("truth",) + tuple(cfg.Reconstruct.Methods)
    cases = phantom_cases(cfg.Phantom, cfg.Reconstruct.Split, cfg.Phantom.TestCases)
    priors, rows = {}, []
    (run_dir / "volumes").mkdir(exist_ok=True)
    start = time.time()
    for i, case in enumerate(cases):
        gt = cardiac.case_volumes(case)
        for method in methods:
            row = {"case": i, "method": method}
            for phase in ("ed", "es"):
                obs = observe(case, frame_of(case, phase), cfg.Acquisition)
                volume = obs.truth if method == "truth" else reconstruct_volume(method, obs, cfg, priors)[0]
                if method != "truth":
                    write_nifti(run_dir / "volumes" / f"case{i}_{phase}_{method}.nii.gz", volume,
                                np.diag([*obs.spacing, 1.0]))
                row.update({f"{k}_{phase}": v for k, v in score(volume, obs).items()})
            edv, esv = row["lv_ml_ed"], row["lv_ml_es"]
            row.update(edv_error=abs(edv - gt["edv"]), esv_error=abs(esv - gt["esv"]),
                       ef_error=abs(float(cardiac.ejection_fraction(edv, esv)) - gt["ef"]))
            rows.append(row)
            print(f"case {i} {method}: mean Dice {_mean_dice(row):.3f}, EF error {row['ef_error']:.1f} points "
                  f"({time.time() - start:.0f} s)", flush=True)
        atomic_csv(pd.DataFrame(rows), run_dir / "evaluate.csv")  # after every phantom: a long run's partial table
    table = pd.DataFrame(rows)
    md = summary(table, len(cases), cfg) + f"\nWall time: {time.time() - start:.0f} s.\n"
    (run_dir / "evaluate.md").write_text(md)
    print(md)


def _mean_dice(row) -> float:
    return float(np.mean([row[f"dice_{s}_{p}"] for s in STRUCTURES.values() for p in ("ed", "es")]))


def summary(table: pd.DataFrame, n_cases: int, cfg) -> str:
    """Markdown: per method, mean +- std over held-out phantoms (Dice and HD95 averaged over ED and ES)."""
    which = "held-out" if cfg.Reconstruct.Split == "test" else "training"
    lines = [f"{n_cases} {which} phantoms, ED and ES; observed SAX slices every {cfg.Acquisition.KeepEvery} "
             f"(missing: {', '.join(map(str, cfg.Acquisition.Missing)) or 'none'}), LAX views "
             f"{', '.join(cfg.Acquisition.Views) or 'none'}; segmented by cardiac.segment_by_intensity "
             "('truth' = the full ground-truth volume segmented the same way: the segmentation's own error).", "",
             "| method | mean Dice | Dice LV | Dice MYO | Dice RV | HD95 LV (mm) | HD95 MYO (mm) | HD95 RV (mm) "
             "| EDV error (mL) | ESV error (mL) | EF error (points) |", "|---" * 11 + "|"]
    for method, part in table.groupby("method", sort=False):
        cells = [f"{np.mean([_mean_dice(r) for _, r in part.iterrows()]):.3f}"]
        for metric in ("dice", "hd95"):
            for s in STRUCTURES.values():
                values = part[[f"{metric}_{s}_ed", f"{metric}_{s}_es"]].to_numpy().mean(axis=1)
                digits = 3 if metric == "dice" else 1
                cells.append(f"{np.nanmean(values):.{digits}f} +- {np.nanstd(values):.{digits}f}")
        for col in ("edv_error", "esv_error", "ef_error"):
            cells.append(f"{part[col].mean():.1f} +- {part[col].std(ddof=0):.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + paired_wins(table)) + "\n"


def paired_wins(table: pd.DataFrame) -> list:
    """Per-phantom comparisons of MGDCR with each other method: higher mean Dice, lower EF error (ties count as
    neither), and the mean paired difference."""
    if "mgdcr" not in set(table.method):
        return []
    wide = table.assign(mean_dice=[_mean_dice(r) for _, r in table.iterrows()]).set_index(["case", "method"])
    ours = wide.xs("mgdcr", level="method")
    out = []
    for other in [m for m in dict.fromkeys(table.method) if m not in ("mgdcr", "truth")]:
        theirs = wide.xs(other, level="method").loc[ours.index]
        d_dice, d_ef = ours.mean_dice - theirs.mean_dice, theirs.ef_error - ours.ef_error
        out.append(f"- MGDCR vs {other}, per phantom: mean Dice higher on {(d_dice > 0).sum()} of {len(ours)} "
                   f"(mean difference {d_dice.mean():+.3f}), EF error lower on {(d_ef > 0).sum()} of {len(ours)} "
                   f"(mean {d_ef.mean():+.2f} points in MGDCR's favour)")
    return out


def loss_plot(history, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ldseg_suite.viz.plots import save_figure

    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for col in ("loss", "sax", "lax", "prior", "smooth"):
        if frame[col].abs().max() > 0:
            ax.semilogy(frame.iteration, frame[col], label=col)
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("loss (weighted sum); terms unweighted")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def iterations_gif(snapshots, obs: Observation, path: Path, frames: int = 16) -> None:
    """The volume over the iterations: a missing SAX slice and the first LAX view, beside the truth."""
    from ldseg_suite.inverse.planes import trilinear
    from ldseg_suite.viz import gifs

    missing = np.setdiff1d(np.arange(obs.truth.shape[2]), obs.sax_index)
    k = int(missing[len(missing) // 2]) if len(missing) else obs.truth.shape[2] // 2
    view, (coords, lax_true) = next(iter(obs.lax.items())) if obs.lax else (None, (None, None))
    images = []
    for i in gifs.pick_frames(len(snapshots), frames):
        panels = [snapshots[i][..., k], obs.truth[..., k]]
        titles = [f"SAX slice {k} (missing)", "truth"]
        if view:
            panels += [np.asarray(trilinear(snapshots[i], coords)), lax_true]
            titles += [f"{view} from the volume", f"{view} observed"]
        grey = [gifs.to_rgb(p, rescale=False) for p in panels]
        images.append(gifs.render(grey, titles, suptitle=f"MGDCR iteration {i + 1}/{len(snapshots)}", layout="row"))
    gifs.write_gif(path, images, fps=3)
