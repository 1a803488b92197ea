"""Thick-slice shape reconstruction runner (vae, lebm, lsd_ebm): train, and infer with the six shape metrics.

A case is a binary mask volume (``[Data] Root/images/*.nii.gz``). Its input is the thick-slice
simulation (groups of ``[ThickSlice] Factor`` z-slices averaged and repeated back); its target is the
full-resolution mask. ``infer`` scores the method and a plain upsampling of the thick-slice input
(linear along z, threshold 0.5) on the held-out cases. The comparison modes live in ``shape_compare``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ldseg_suite import distribute, metrics, training
from ldseg_suite.data import pipeline, readers
from ldseg_suite.errors import LDSegError
from ldseg_suite.inverse.slices import SliceAverage
from ldseg_suite.models.latent_ebm import ShapeLEBM, ShapeLSDEBM  # imported here: resuming needs them registered
from ldseg_suite.models.vae import ShapeVAE
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights, start_run
from ldseg_suite.viz import gifs

OUTPUTS = {"train": [], "infer": ["predictions", "metrics.csv", "summary.md"], "compare": ["compare.csv"],
           "compare_steps": ["steps.csv"], "compare_latent": ["latent.png"]}
METRICS = {"dice": metrics.dice, "vs": metrics.volumetric_similarity, "sen": metrics.sensitivity,
           "spec": metrics.specificity, "nmi": metrics.nmi, "kappa": metrics.cohen_kappa}
BATCH = 4


def build_model(cfg):
    m = cfg.Model
    args = (cfg.Data.Size, m.LatentDim, m.BaseChannels, m.Levels, m.Beta)
    if cfg.Run.Method == "vae":
        model = ShapeVAE(*args, seed=cfg.Run.Seed, input_skip=m.InputSkip)
    else:
        p = cfg.Prior
        prior = dict(energy_hidden=p.EnergyHidden, langevin_steps=p.LangevinSteps,
                     langevin_step_size=p.LangevinStepSize, train_backbone=p.TrainBackbone, seed=cfg.Run.Seed,
                     input_skip=m.InputSkip, standardize=p.Standardize, grad_penalty=p.GradPenalty,
                     whiten=p.Whiten, energy_activation=p.EnergyActivation)
        model = (ShapeLEBM(*args, **prior) if cfg.Run.Method == "lebm"
                 else ShapeLSDEBM(*args, segments=cfg.Diffusion.Segments, energy_scale=p.EnergyScale,
                                 schedule=cfg.Diffusion.Schedule, objective=p.Objective,
                                 score_samples=p.ScoreSamples, score_min_noise=p.ScoreMinNoise, **prior))
    model.build((None, *cfg.Data.Size, 1))
    return model


def init_backbone(model, cfg, quiet: bool = False) -> None:
    """Copy encoder and decoder weights from the VAE weights file ``[Prior] Backbone``."""
    m = cfg.Model
    vae = ShapeVAE(cfg.Data.Size, m.LatentDim, m.BaseChannels, m.Levels, m.Beta, input_skip=m.InputSkip)
    vae.build((None, *cfg.Data.Size, 1))
    training.load_weights(vae, Path(cfg.Prior.Backbone), "[Prior] Backbone")
    for dst, src in zip(model.backbone_weights(), [w for layer in vae.layers for w in layer.weights], strict=True):
        dst.assign(src)
    if not quiet:
        print(f"backbone: {cfg.Prior.Backbone} ({'trained further' if cfg.Prior.TrainBackbone else 'fixed'})",
              flush=True)


# A fixed-backbone LEBM / LSD-EBM exports only what it adds to its VAE (the energy and the latent
# standardiser): the backbone is [Prior] Backbone, identified in the file by its SHA-256.
PRIOR_ONLY = "ldseg-latent-prior-only-v1"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_prior_only(model, cfg, path: Path) -> Path:
    """Write the prior's weights (``model.prior_weights()``, in order) and the backbone's identity to ``path``
    (HDF5, gzip), atomically; ``load_model_weights`` reads it back on top of ``[Prior] Backbone``."""
    import h5py

    path = Path(path)
    tmp = path.with_name(f".tmp_{path.name}")
    with h5py.File(tmp, "w") as f:
        f.attrs.update(format=PRIOR_ONLY, backbone=str(cfg.Prior.Backbone),
                       backbone_sha256=_sha256(cfg.Prior.Backbone), method=cfg.Run.Method)
        for k, w in enumerate(model.prior_weights()):
            value = np.asarray(w.numpy())
            f.create_dataset(f"prior/{k:03d}", data=value,
                             **(dict(compression="gzip", compression_opts=9, shuffle=True) if value.size > 64 else {}))
            f[f"prior/{k:03d}"].attrs["path"] = w.path
    tmp.replace(path)
    return path


def _prior_only_attrs(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs) if f.attrs.get("format") == PRIOR_ONLY else None
    except OSError:
        return None


def load_model_weights(model, cfg, path: Path, what: str, init=None) -> None:
    """``training.load_weights``, or for a prior-only file: ``[Prior] Backbone`` (put into ``model`` by
    ``init(model, cfg)``, default ``init_backbone``), then the prior's weights."""
    import h5py

    path = Path(path)
    attrs = _prior_only_attrs(path) if path.is_file() else None
    if attrs is None:
        training.load_weights(model, path, what)
        return
    if "Prior" not in cfg or not cfg.Prior.Backbone:
        raise LDSegError(f"{what} = {path}: holds only a latent prior (trained on the backbone "
                         f"{attrs['backbone']}); this config has no [Prior] Backbone to put it on")
    backbone = Path(cfg.Prior.Backbone)
    if backbone.is_file() and _sha256(backbone) != attrs["backbone_sha256"]:
        raise LDSegError(f"{what} = {path}: its energy was trained on another backbone than [Prior] Backbone = "
                         f"{backbone} (SHA-256 differs from the one recorded, {attrs['backbone_sha256'][:12]}...); "
                         f"retrain it with --mode train")
    (init or (lambda m, c: init_backbone(m, c, quiet=True)))(model, cfg)
    weights = model.prior_weights()
    with h5py.File(path, "r") as f:
        stored = [f["prior"][k][()] for k in sorted(f["prior"])] if "prior" in f else []
    if len(stored) != len(weights) or any(tuple(a.shape) != tuple(w.shape) for a, w in zip(stored, weights)):
        raise LDSegError(f"{what} = {path}: weights do not match this config's [Model] / [Prior] "
                         f"({len(stored)} arrays stored, {len(weights)} expected)")
    for w, a in zip(weights, stored):
        w.assign(a)


def load_trained(model, cfg, run_dir: Path) -> None:
    """``common.load_trained_weights`` with prior-only files understood."""
    load_trained_weights(model, cfg, run_dir, lambda m, path, what: load_model_weights(m, cfg, path, what))


def masks_and_inputs(cfg, part):
    """Full-resolution binary targets (N, *Size), the observed thick slices (N, H, W, D / Factor, 1) and the
    network input (N, *Size, 1): the thick slices resampled back to full depth by linear interpolation."""
    return thick_inputs(cfg, (part.images[..., 0] > 0.5).astype(np.float32))


def thick_inputs(cfg, target: np.ndarray):
    """``masks_and_inputs`` for binary targets (N, *Size)."""
    target = np.asarray(target, np.float32)
    factor = cfg.ThickSlice.Factor
    observed = target[..., ::factor].copy()
    if len(target):
        observed = np.asarray(SliceAverage(factor).forward(target))
    return target, observed[..., None], upsample(observed, factor)[..., None]


def upsample(thick: np.ndarray, factor: int) -> np.ndarray:
    """Thick slices (..., D / factor) back to (..., D): linear along z, each slice at its group's centre."""
    return ndimage.zoom(thick, (1,) * (thick.ndim - 1) + (factor,), order=1, mode="nearest")


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    from ldseg_suite.tasks.shape_schema import MODES

    if mode not in MODES[cfg.Run.Method]:
        raise LDSegError(f"--mode {mode}: expected one of {', '.join(MODES[cfg.Run.Method])} "
                         f"for method {cfg.Run.Method}")
    run_dir, data = start_run(cfg, mode, out, overwrite, OUTPUTS)
    if mode == "train":
        train(cfg, data, run_dir)
    elif mode == "infer":
        infer(cfg, data, run_dir)
    else:
        from ldseg_suite.tasks import shape_compare

        getattr(shape_compare, mode)(cfg, data, run_dir)
    return 0


def training_pairs(cfg, part):
    """(encoder inputs (N, *Size, 1), targets (N, *Size)) of training: the thick-slice input, or with
    ``[Model] EncoderInput = full`` the full-resolution mask itself."""
    target, _, thick = masks_and_inputs(cfg, part)
    return (target[..., None] if cfg.Model.EncoderInput == "full" else thick), target


def train(cfg, data, run_dir: Path) -> None:
    t = cfg.Training
    inputs, target = training_pairs(cfg, data["train"])
    ds = pipeline.make_dataset(inputs, target.astype(np.int32), 2, t.BatchSize, augment=cfg.Data.Augment,
                               shuffle=True, seed=cfg.Run.Seed, repeat=True)
    steps = t.StepsPerEpoch or max(1, math.ceil(len(target) / t.BatchSize))
    val = val_steps = None
    if len(data["val"].cases):
        vx, vt = training_pairs(cfg, data["val"])
        val = pipeline.make_dataset(vx, vt.astype(np.int32), 2, t.BatchSize)
        val_steps = max(1, math.ceil(len(vt) / t.BatchSize))

    def build():
        model = build_model(cfg)
        if cfg.Run.Method != "vae" and cfg.Prior.Backbone:
            init_backbone(model, cfg)
        return model

    start = time.time()
    model = training.fit(build, ds, steps, t.Epochs, run_dir, t, val, val_steps,
                         strategy=distribute.strategy_for(cfg.Distribute.Strategy))
    final = run_dir / training.FINAL_WEIGHTS
    if cfg.Run.Method != "vae" and not cfg.Prior.TrainBackbone:
        export_prior_only(model, cfg, final)  # replaces the full export: the backbone is [Prior] Backbone
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: {final}", flush=True)


def reconstruct(model, cfg, thick: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Occupancy probabilities (N, *Size) for network inputs (N, *Size, 1): the encoder's mean for the VAE;
    posterior Langevin with data consistency on the ``observed`` thick slices for LEBM and LSD-EBM (with
    ``[Reconstruct] Chains`` > 1: the mean of the decoded probabilities of that many chains)."""
    from keras import ops

    out = []
    op = SliceAverage(cfg.ThickSlice.Factor, axis=-2)  # one operator: the model's posterior sampler is traced once
    for i in range(0, len(thick), BATCH):
        x = thick[i:i + BATCH]
        r = getattr(cfg, "Reconstruct", None)
        if r is None or r.Steps == 0:
            probs = model.reconstruct(x)
        else:
            extra = (dict(start=r.Start or None, start_noise=r.StartNoise, data_term=r.DataTerm)
                     if cfg.Run.Method == "lsd_ebm" else {})
            probs = 0.0
            for c in range(r.Chains):  # chain 0 has the seed of a single-chain reconstruction
                z = model.posterior_refine(x, observed[i:i + BATCH], op.forward, r.Steps, r.StepSize, r.DataWeight,
                                           r.Noise, seed=cfg.Run.Seed * 7919 + i + 100003 * c, **extra)
                probs = probs + ops.sigmoid(model.decode(z, x)) / r.Chains
        out.append(np.asarray(probs)[..., 0])
        print(f"  reconstructed {min(i + BATCH, len(thick))}/{len(thick)}", flush=True)
    return np.concatenate(out)


def score(name: str, case_names, masks, target) -> list[dict]:
    return [{"case": c, "method": name, **{m: f(mask, t > 0.5) for m, f in METRICS.items()}}
            for c, mask, t in zip(case_names, masks, target)]


def test_split(cfg, data):
    test = data["test"]
    if not test.cases:
        raise LDSegError(f"[Data] Split = {', '.join(map(str, cfg.Data.Split))}: the test split is empty")
    return test


def infer(cfg, data, run_dir: Path) -> None:
    test = test_split(cfg, data)
    model = build_model(cfg)
    load_trained(model, cfg, run_dir)
    target, observed, thick = masks_and_inputs(cfg, test)
    probs = reconstruct(model, cfg, thick, observed)
    recon = probs > 0.5
    base = upsampling_baseline(thick[..., 0])
    table = pd.DataFrame(score(cfg.Run.Method, test.names, recon, target)
                         + score("upsampling", test.names, base, target))
    for k, case in enumerate(test.cases):
        full = pipeline.resize_label(recon[k].astype(np.int32), case.geometry.shape).astype(np.uint8)
        readers.write_nifti(run_dir / "predictions" / f"{case.name}.nii.gz", full, case.geometry.affine)
        if k < cfg.Output.Gifs:
            gif = reconstruction_gif(run_dir / "gifs" / f"{case.name}.gif", thick[k, ..., 0],
                                     {cfg.Run.Method: probs[k]}, target[k])
            print(f"gif: {gif}", flush=True)
    atomic_csv(table, run_dir / "metrics.csv")
    summary = summary_table(table)
    (run_dir / "summary.md").write_text(summary + "\n")
    print(summary)


def upsampling_baseline(thick_input: np.ndarray) -> np.ndarray:
    """The plain upsampling of the thick slices (the network input), thresholded at 0.5."""
    return thick_input > 0.5


def summary_table(table: pd.DataFrame, by: str = "method") -> str:
    """``by`` x metric, mean +- std over cases, as markdown."""
    lines = [f"| {by} | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for key, group in table.groupby(by, sort=False):
        cells = [f"{group[m].mean():.3f} +- {group[m].std(ddof=0):.3f}" for m in METRICS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reconstruction_gif(path, thick, recons: dict, target) -> Path:
    """Per z-slice: thick-slice input, each reconstruction, target."""
    titles = ["thick-slice input", *recons, "target"]
    frames = [gifs.render([thick[..., z], *(r[..., z] for r in recons.values()), target[..., z]], titles,
                          suptitle=f"slice z = {z}", layout="row")
              for z in range(0, target.shape[-1], max(1, target.shape[-1] // 32))]
    return gifs.write_gif(path, frames, fps=6)
