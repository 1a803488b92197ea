"""Thick-slice shape reconstruction runner (VAE today): train, and infer with the six shape metrics.

A case is a binary mask volume (``[Data] Root/images/*.nii.gz``). Its input is the thick-slice
simulation (groups of ``[ThickSlice] Factor`` z-slices averaged and repeated back); its target is the
full-resolution mask. ``infer`` scores the method and a plain upsampling of the thick-slice input
(linear along z, threshold 0.5) on the held-out cases.
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
from ldseg_suite.models.vae import ShapeVAE
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights, start_run
from ldseg_suite.viz import gifs

OUTPUTS = {"train": [], "infer": ["predictions", "metrics.csv", "summary.md"]}
METRICS = {"dice": metrics.dice, "vs": metrics.volumetric_similarity, "sen": metrics.sensitivity,
           "spec": metrics.specificity, "nmi": metrics.nmi, "kappa": metrics.cohen_kappa}


def build_model(cfg) -> ShapeVAE:
    m = cfg.Model
    model = ShapeVAE(cfg.Data.Size, m.LatentDim, m.BaseChannels, m.Levels, m.Beta, seed=cfg.Run.Seed)
    model.build((None, *cfg.Data.Size, 1))
    return model


def masks_and_inputs(cfg, part):
    """Full-resolution binary targets (N, *Size) and thick-slice inputs (N, *Size, 1)."""
    target = (part.images[..., 0] > 0.5).astype(np.float32)
    op = SliceAverage(cfg.ThickSlice.Factor)
    thick = np.asarray(op.upsample(op.forward(target))) if len(target) else target
    return target, thick[..., None]


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    run_dir, data = start_run(cfg, mode, out, overwrite, OUTPUTS)
    (train if mode == "train" else infer)(cfg, data, run_dir)
    return 0


def train(cfg, data, run_dir: Path) -> None:
    t = cfg.Training
    target, thick = masks_and_inputs(cfg, data["train"])
    ds = pipeline.make_dataset(thick, target.astype(np.int32), 2, t.BatchSize, augment=cfg.Data.Augment,
                               shuffle=True, seed=cfg.Run.Seed, repeat=True)
    steps = t.StepsPerEpoch or max(1, math.ceil(len(target) / t.BatchSize))
    val = val_steps = None
    if len(data["val"].cases):
        vt, vx = masks_and_inputs(cfg, data["val"])
        val = pipeline.make_dataset(vx, vt.astype(np.int32), 2, t.BatchSize)
        val_steps = max(1, math.ceil(len(vt) / t.BatchSize))
    start = time.time()
    training.fit(lambda: build_model(cfg), ds, steps, t.Epochs, run_dir, t, val, val_steps,
                 strategy=distribute.strategy_for(cfg.Distribute.Strategy))
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: "
          f"{run_dir / training.FINAL_WEIGHTS}", flush=True)


def upsampling_baseline(target: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation along z of the thick slices, thresholded at 0.5."""
    thick = np.asarray(SliceAverage(factor).forward(target))
    return ndimage.zoom(thick, (1,) * (thick.ndim - 1) + (factor,), order=1, mode="nearest") > 0.5


def infer(cfg, data, run_dir: Path) -> None:
    test = data["test"]
    if not test.cases:
        raise LDSegError(f"[Data] Split = {cfg.Data.Split}: the test split is empty")
    model = build_model(cfg)
    load_trained_weights(model, cfg, run_dir)
    target, thick = masks_and_inputs(cfg, test)
    probs = np.concatenate([np.asarray(model.reconstruct(thick[i:i + 4]))[..., 0]
                            for i in range(0, len(thick), 4)])
    pred_dir = run_dir / "predictions"
    rows = []
    method = cfg.Run.Method
    for k, case in enumerate(test.cases):
        recon = probs[k] > 0.5
        base = upsampling_baseline(target[k], cfg.ThickSlice.Factor)
        for name, mask in ((method, recon), ("upsampling", base)):
            rows.append({"case": case.name, "method": name,
                         **{m: f(mask, target[k] > 0.5) for m, f in METRICS.items()}})
        full = pipeline.resize_label(recon.astype(np.int32), case.geometry.shape).astype(np.uint8)
        readers.write_nifti(pred_dir / f"{case.name}.nii.gz", full, case.geometry.affine)
        if k < cfg.Output.Gifs:
            gif = reconstruction_gif(run_dir / "gifs" / f"{case.name}.gif", thick[k, ..., 0], probs[k], target[k])
            print(f"gif: {gif}", flush=True)
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "metrics.csv")
    summary = summary_table(table)
    (run_dir / "summary.md").write_text(summary + "\n")
    print(summary)


def summary_table(table: pd.DataFrame) -> str:
    """Method x metric, mean +- std over cases, as markdown."""
    lines = ["| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for method, group in table.groupby("method", sort=False):
        cells = [f"{group[m].mean():.3f} +- {group[m].std(ddof=0):.3f}" for m in METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reconstruction_gif(path, thick, probs, target) -> Path:
    """Per z-slice: thick-slice input, reconstruction, target."""
    frames = [gifs.render([thick[..., z], probs[..., z], target[..., z]], ["thick-slice input", "reconstruction",
                          "target"], suptitle=f"slice z = {z}", layout="row")
              for z in range(0, target.shape[-1], max(1, target.shape[-1] // 32))]
    return gifs.write_gif(path, frames, fps=6)
