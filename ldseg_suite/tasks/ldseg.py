"""LDSeg runner: train, infer, gif and sweep modes for 2D, 2D+t and 3D configs."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ldseg_suite import distribute, metrics, training
from ldseg_suite.data import pipeline, readers
from ldseg_suite.errors import LDSegError
from ldseg_suite.models.ldseg import LDSeg
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights, spatial_dims, start_run
from ldseg_suite.viz import gifs, plots

OUTPUTS = {"train": [], "infer": ["predictions", "metrics.csv"], "gif": ["gifs"],
           "sweep": ["sweep.csv", "sweep.png"]}


def build_model(cfg) -> LDSeg:
    m, s = cfg.Model, cfg.NoiseScheduler
    model = LDSeg(spatial_dims=spatial_dims(cfg.Data.Kind), in_channels=cfg.Data.Channels,
                  classes=cfg.Data.Classes, latent_channels=m.LatentChannels,
                  image_latent_channels=m.ImageLatentChannels, downsample=m.Downsample,
                  base_channels=m.BaseChannels, channel_mult=m.ChannelMult, attention=m.Attention,
                  schedule=s.Scheduler, beta_0=s.Beta_0, beta_T=s.Beta_T, timesteps=s.Timesteps,
                  loss_weights=(m.Weight_Noise, m.Weight_CE, m.Weight_Dice), seed=cfg.Run.Seed)
    model.build((None, *cfg.Data.Size, cfg.Data.Channels))
    return model


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    run_dir, data = start_run(cfg, mode, out, overwrite, OUTPUTS)
    if mode == "train":
        train(cfg, data, run_dir)
        return 0
    model = load_trained(cfg, run_dir)
    test = data["test"]
    if test.labels is None and mode == "sweep":
        raise LDSegError(f"[Data] Root = {cfg.Data.Root}: the sweep needs labels for the test cases")
    {"infer": infer, "gif": make_gifs, "sweep": sweep}[mode](cfg, model, test, run_dir)
    return 0


def train(cfg, data, run_dir: Path) -> None:
    tr = data["train"]
    if tr.labels is None:
        raise LDSegError(f"[Data] Root = {cfg.Data.Root}: training needs a label for every training case")
    t = cfg.Training
    ds = pipeline.make_dataset(tr.images, tr.labels, cfg.Data.Classes, t.BatchSize, augment=cfg.Data.Augment,
                               shuffle=True, seed=cfg.Run.Seed, repeat=True)
    steps = t.StepsPerEpoch or max(1, math.ceil(len(tr.cases) / t.BatchSize))
    val, val_steps = None, None
    if len(data["val"].cases) and data["val"].labels is not None:
        v = data["val"]
        val = pipeline.make_dataset(v.images, v.labels, cfg.Data.Classes, t.BatchSize)
        val_steps = max(1, math.ceil(len(v.cases) / t.BatchSize))
    start = time.time()
    training.fit(lambda: build_model(cfg), ds, steps, t.Epochs, run_dir, t, val, val_steps,
                 strategy=distribute.strategy_for(cfg.Distribute.Strategy))
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: "
          f"{run_dir / training.FINAL_WEIGHTS}", flush=True)


def load_trained(cfg, run_dir: Path) -> LDSeg:
    model = build_model(cfg)
    load_trained_weights(model, cfg, run_dir)
    return model


def make_sampler(cfg, model, capture=False):
    s = cfg.Sampler
    return model.make_sampler(s.Sampler, s.Sampling_Steps, s.Sigma, capture=capture, jit_compile=s.JitCompile)


def segment_all(cfg, model, sampler, images: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean class probabilities and uncertainty (max over classes of the std across samples), network size.

    Batches and seeds depend only on the case order, so the same images give the same masks.
    """
    s = cfg.Sampler
    means, stds = [], []
    batches = range(0, len(images), s.BatchSize)
    bar = keras.utils.Progbar(len(batches) * s.Samples, unit_name="batch", verbose=_bar_verbosity()) \
        if progress else None
    for b, i in enumerate(batches):
        batch = tf.constant(images[i:i + s.BatchSize])
        draws = []
        for k in range(s.Samples):
            probs, _ = model.segment(batch, sampler, seed=cfg.Run.Seed + 1000 * k + b)
            draws.append(np.asarray(probs))
            if bar:
                bar.add(1)
        draws = np.stack(draws)
        means.append(draws.mean(0))
        stds.append(draws.std(0).max(-1))
    return np.concatenate(means), np.concatenate(stds)


def _summarise(row: dict, classes: int) -> dict:
    """Add dice/iou/hd95 as the mean over foreground classes (or the one foreground class)."""
    for m in ("dice", "iou", "hd95"):
        row[m] = float(np.nanmean([row[f"{m}_{c}"] for c in range(1, classes)])) if classes > 2 \
            else row.pop(f"{m}_1")
    return row


def score_rows(cfg, case, labels) -> list[dict]:
    """Metric rows of one case: one row, or one per frame for 2D+t (frames scored as 2D images)."""
    k, spacing = cfg.Data.Classes, case.geometry.spacing
    if cfg.Data.Kind != "2d+t":
        return [_summarise({"case": case.name, **metrics.per_class(labels, case.label, k, spacing)}, k)]
    return [_summarise({"case": case.name, "frame": f,
                        **metrics.per_class(labels[..., f], case.label[..., f], k, spacing[:2])}, k)
            for f in range(labels.shape[-1])]


def _to_original(case, probs: np.ndarray) -> np.ndarray:
    """Network-size class probabilities -> label map at the case's original size."""
    full = pipeline.resize_image(probs, case.geometry.shape)
    return np.argmax(full, axis=-1).astype(np.uint8)


def write_prediction(pred_dir: Path, case, labels: np.ndarray, suffix: str = "") -> Path:
    if case.image.ndim == 3:  # 2D image (H, W, C)
        path = pred_dir / f"{case.name}{suffix}.png"
        readers.write_png(path, labels.astype(np.uint8))
    else:
        path = pred_dir / f"{case.name}{suffix}.nii.gz"
        readers.write_nifti(path, labels, case.geometry.affine)
    return path


def infer(cfg, model, test, run_dir: Path) -> None:
    if not test.cases:
        raise LDSegError(f"[Data] Split = {cfg.Data.Split}: the test split is empty")
    sampler = make_sampler(cfg, model)
    start = time.time()
    probs, uncertainty = segment_all(cfg, model, sampler, test.images, progress=True)
    pred_dir = run_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    rows = []
    sd = spatial_dims(cfg.Data.Kind)
    for i, (case, p, u) in enumerate(zip(test.cases, probs, uncertainty)):
        labels = _to_original(case, p)
        write_prediction(pred_dir, case, labels)
        if cfg.Sampler.Samples > 1:
            u8 = np.clip(pipeline.resize_image(u[..., None], case.geometry.shape)[..., 0] * 2 * 255, 0, 255)
            write_prediction(pred_dir, case, u8.astype(np.uint8), suffix="_uncertainty")
        if case.label is not None:
            rows.extend(score_rows(cfg, case, labels))
        if sd == 3 and i < cfg.Output.Gifs:
            name = "frames" if cfg.Data.Kind == "2d+t" else "slices"
            gif = gifs.slices_gif(run_dir / "gifs" / f"{case.name}_{name}.gif", case.image, labels,
                                  "frame" if name == "frames" else "slice")
            print(f"gif: {gif}", flush=True)
    print(f"segmented {len(test.cases)} cases in {time.time() - start:.1f} s -> {pred_dir}", flush=True)
    if rows:
        table = pd.DataFrame(rows)
        mean = {"case": "mean", **table.drop(columns=["case", "frame"], errors="ignore").mean().to_dict()}
        table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
        atomic_csv(table, run_dir / "metrics.csv")
        per_class = "  ".join(f"dice_{c} {mean[f'dice_{c}']:.4f}" for c in range(1, cfg.Data.Classes)
                              if f"dice_{c}" in mean)
        print(f"held-out mean ({len(test.cases)} cases{', per frame' if 'frame' in table else ''}): "
              f"dice {mean['dice']:.4f}  iou {mean['iou']:.4f}  hd95 {mean['hd95']:.2f}  {per_class} "
              f"-> {run_dir / 'metrics.csv'}", flush=True)
    if cfg.Output.Gifs:
        make_gifs(cfg, model, test, run_dir)


def _mid_slice(a: np.ndarray, spatial: int) -> np.ndarray:
    """The middle slice along the third spatial axis of a 3D array (2D arrays pass through)."""
    return a if spatial == 2 else np.take(a, a.shape[2] // 2, axis=2)


def make_gifs(cfg, model, test, run_dir: Path) -> None:
    """Reverse-diffusion GIFs of the first [Output] Gifs test cases (network size)."""
    sampler = make_sampler(cfg, model, capture=True)
    sd = spatial_dims(cfg.Data.Kind)
    for case, image in list(zip(test.cases, test.images))[:cfg.Output.Gifs]:
        _, out = model.segment(tf.constant(image[None]), sampler, seed=cfg.Run.Seed)
        steps = gifs.pick_frames(sampler.num_steps, cfg.Output.GifFrames)
        traj = np.asarray(out["trajectory"])[steps, 0]  # z after each reverse step; the last is the result
        segs = np.argmax(np.asarray(model.decode(traj)), -1)
        ts = np.asarray(sampler.timesteps)[steps]
        path = gifs.reverse_diffusion_gif(run_dir / "gifs" / f"{case.name}.gif", _mid_slice(image, sd),
                                          [_mid_slice(z, sd) for z in traj], [_mid_slice(s, sd) for s in segs], ts)
        print(f"gif: {path}", flush=True)


def sweep(cfg, model, test, run_dir: Path) -> None:
    """Dice against the sigma of Gaussian noise added to the normalised input; one compiled sampler."""
    sw = cfg.Sweep
    sigmas = np.round(np.arange(sw.Sigma_Start, sw.Sigma_Stop + sw.Sigma_Step / 2, sw.Sigma_Step), 6)
    sampler = make_sampler(cfg, model)
    rng = np.random.default_rng(cfg.Run.Seed)
    noise = rng.standard_normal(test.images.shape).astype(np.float32)
    rows, gif_frames = [], {c.name: [] for c in test.cases[:sw.Gifs]}
    sd = spatial_dims(cfg.Data.Kind)
    bar = keras.utils.Progbar(len(sigmas), unit_name="sigma", verbose=_bar_verbosity())
    for sigma in sigmas:
        noisy = test.images + sigma * noise
        probs, _ = segment_all(cfg, model, sampler, noisy)
        for idx, (case, p) in enumerate(zip(test.cases, probs)):
            labels = _to_original(case, p)
            scored = pd.DataFrame(score_rows(cfg, case, labels))  # as infer scores it (per frame for 2D+t)
            dices = [float(scored[f"dice_{c}" if cfg.Data.Classes > 2 else "dice"].mean())
                     for c in range(1, cfg.Data.Classes)]
            row = {"sigma": float(sigma), "case": case.name, **{f"dice_{c}": d for c, d in enumerate(dices, 1)}}
            rows.append(row)
            if case.name in gif_frames:
                small = np.argmax(p, -1)
                frame_img = np.clip(_mid_slice(noisy[idx], sd), 0, 1)
                gif_frames[case.name].append(gifs.render(
                    [gifs.to_rgb(frame_img), gifs.overlay(frame_img, _mid_slice(small, sd))],
                    ["noisy input", "prediction"], suptitle=f"sigma = {sigma:.2f}   Dice = {np.mean(dices):.3f}",
                    layout="row"))
        bar.add(1)
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "sweep.csv")
    plots.robustness_plot(table, run_dir / "sweep.png", title=f"{Path(cfg.source).stem}: Dice vs input noise")
    for name, frames in gif_frames.items():
        print(f"gif: {gifs.write_gif(run_dir / 'gifs' / f'robustness_{name}.gif', frames)}")
    clean = table[table.sigma == sigmas[0]].filter(like="dice_").mean().mean()
    print(f"sweep: {len(sigmas)} sigmas x {len(test.cases)} cases; mean Dice at sigma {sigmas[0]:g}: {clean:.4f}, "
          f"at {sigmas[-1]:g}: {table[table.sigma == sigmas[-1]].filter(like='dice_').mean().mean():.4f} "
          f"-> {run_dir / 'sweep.csv'}", flush=True)


def _bar_verbosity() -> int:
    """A live progress bar on a terminal, one summary line in logs."""
    return 1 if sys.stdout.isatty() else 2
