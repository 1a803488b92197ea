"""LDSeg runner: train, infer, predict, compare, gif and sweep modes for 2D, 2D+t and 3D configs."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ldseg_suite.data.cases import PreparedCase, to_input_grid
from ldseg_suite.errors import LDSegError
from ldseg_suite.models.ldseg import LDSeg
from ldseg_suite.tasks import segmentation as seg
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights, open_run
from ldseg_suite.tasks.segmentation import mid_slice
from ldseg_suite.viz import gifs, plots

OUTPUTS = {"train": [], "infer": ["predictions", "metrics.csv"], "predict": [], "compare": ["compare.csv"],
           "diagnose": ["diagnose.csv"], "gif": ["gifs"], "sweep": ["sweep.csv", "sweep.png"]}


def build_model(cfg) -> LDSeg:
    m, s = cfg.Model, cfg.NoiseScheduler
    model = LDSeg(spatial_dims=seg.spatial_dims(cfg.Data.Kind), in_channels=cfg.Data.Channels,
                  classes=cfg.Data.Classes, latent_channels=m.LatentChannels,
                  image_latent_channels=m.ImageLatentChannels, downsample=m.Downsample,
                  base_channels=m.BaseChannels, channel_mult=m.ChannelMult, attention=m.Attention,
                  schedule=s.Scheduler, beta_0=s.Beta_0, beta_T=s.Beta_T, timesteps=s.Timesteps,
                  loss_weights=(m.Weight_Noise, m.Weight_CE, m.Weight_Dice), seed=cfg.Run.Seed,
                  prediction=m.Prediction)
    model.build((None, *seg.net_shape(cfg), cfg.Data.Channels))
    return model


def run(cfg, mode: str, out: Path, overwrite: bool = False, input_path=None, shard=None) -> int:
    run_dir = open_run(cfg, mode, out, overwrite, seg.protected_outputs(OUTPUTS, mode, shard))
    if mode == "predict":
        if input_path is None:
            raise LDSegError("--mode predict needs --input PATH (an image/volume or a folder of them)")
        model = load_trained(cfg, run_dir)
        return seg.predict(cfg, make_predict(cfg, model), cfg.Sampler.BatchSize, input_path, run_dir, overwrite,
                           shard)
    data = seg.open_cases(cfg, run_dir)
    if mode == "train":
        seg.train(cfg, data, run_dir, lambda: build_model(cfg))
        return 0
    model = load_trained(cfg, run_dir)
    test = data["test"]
    if mode in ("sweep", "compare", "diagnose") and not test.has_labels():
        raise LDSegError(f"[Data] Root = {cfg.Data.Root}: --mode {mode} needs labels for the test cases")
    if mode == "compare":
        from ldseg_suite.tasks import compare

        compare.run_compare(cfg, model, data, run_dir)
        return 0
    if mode == "diagnose":
        from ldseg_suite.tasks.ldseg_diagnose import diagnose

        diagnose(cfg, model, test, run_dir)
        return 0
    if mode == "infer":
        infer(cfg, model, test, run_dir, shard, train=data["train"])
    else:
        {"gif": make_gifs, "sweep": sweep}[mode](cfg, model, test, run_dir)
    return 0


def load_trained(cfg, run_dir: Path) -> LDSeg:
    model = build_model(cfg)
    load_trained_weights(model, cfg, run_dir)
    return model


def make_sampler(cfg, model, capture=False):
    s = cfg.Sampler
    return model.make_sampler(s.Sampler, s.Sampling_Steps, s.Sigma, capture=capture, jit_compile=s.JitCompile)


def make_predict(cfg, model, samples: int | None = None):
    """``predict(batch)``: mean class probabilities over ``samples`` reverse diffusions (one compiled sampler,
    traced once per batch shape), plus the uncertainty (max over classes of the std across samples) as a last
    channel when samples > 1. Seeds depend only on the call order, so a run is reproducible."""
    sampler = make_sampler(cfg, model)
    samples = samples or cfg.Sampler.Samples
    calls = [0]

    def predict(batch: np.ndarray) -> np.ndarray:
        b = calls[0]
        calls[0] += 1
        x = tf.constant(batch, tf.float32)
        draws = np.stack([np.asarray(model.segment(x, sampler, seed=cfg.Run.Seed + 1000 * k + b)[0])
                          for k in range(samples)])
        if samples == 1:
            return draws[0]
        return np.concatenate([draws.mean(0), draws.std(0).max(-1, keepdims=True)], axis=-1)

    predict.reset = lambda: calls.__setitem__(0, 0)
    return predict


def infer(cfg, model, test, run_dir: Path, shard=None, train=None) -> None:
    sd = seg.spatial_dims(cfg.Data.Kind)

    def pictures(i, prepared, labels):
        case = prepared.case
        if i < cfg.Output.Gifs and sd == 3:
            name = "frames" if cfg.Data.Kind == "2d+t" else "slices"
            gif = gifs.slices_gif(run_dir / "gifs" / f"{case.name}_{name}.gif", case.image, labels,
                                  "frame" if name == "frames" else "slice")
            print(f"gif: {gif}", flush=True)

    seg.infer(cfg, test, make_predict(cfg, model), cfg.Sampler.BatchSize, run_dir, on_case=pictures, shard=shard,
              train=train)
    if cfg.Output.Gifs and (shard is None or shard[0] == 0):
        make_gifs(cfg, model, test, run_dir)


def _gif_input(cfg, prepared) -> np.ndarray:
    """The network input of a GIF: the whole resized case, or the window at the centre of its foreground (or
    of the case) in window mode."""
    window = seg.window_of(cfg)
    image = prepared.image
    if not window:
        return image
    from ldseg_suite.data import patches

    image, _ = patches.pad_to(image, window)
    label = prepared.label
    centre = [n // 2 for n in image.shape[:-1]]
    if label is not None and label.shape == prepared.image.shape[:-1] and (label > 0).any():
        label, _ = patches.pad_to(label, window)
        centre = [int(round(c)) for c in np.argwhere(label > 0).mean(0)]
    corner = [int(np.clip(c - w // 2, 0, n - w)) for c, w, n in zip(centre, window, image.shape[:-1])]
    return image[tuple(slice(c, c + w) for c, w in zip(corner, window))]


def make_gifs(cfg, model, test, run_dir: Path) -> None:
    """Reverse-diffusion GIFs of the first [Output] Gifs test cases (one window of each in window mode)."""
    sampler = make_sampler(cfg, model, capture=True)
    sd = seg.spatial_dims(cfg.Data.Kind)
    for i in range(min(cfg.Output.Gifs, len(test))):
        prepared = test[i]
        image = _gif_input(cfg, prepared)
        _, out = model.segment(tf.constant(image[None]), sampler, seed=cfg.Run.Seed)
        steps = gifs.pick_frames(sampler.num_steps, cfg.Output.GifFrames)
        traj = np.asarray(out["trajectory"])[steps, 0]  # z after each reverse step; the last is the result
        segs = np.argmax(np.asarray(model.decode(traj)), -1)
        ts = np.asarray(sampler.timesteps)[steps]
        path = gifs.reverse_diffusion_gif(run_dir / "gifs" / f"{prepared.name}.gif", mid_slice(image, sd),
                                          [mid_slice(z, sd) for z in traj], [mid_slice(s, sd) for s in segs], ts)
        print(f"gif: {path}", flush=True)


def sweep(cfg, model, test, run_dir: Path) -> None:
    """Dice against the sigma of Gaussian noise added to the normalised input; one compiled sampler."""
    sw = cfg.Sweep
    sigmas = np.round(np.arange(sw.Sigma_Start, sw.Sigma_Stop + sw.Sigma_Step / 2, sw.Sigma_Step), 6)
    predict = make_predict(cfg, model)
    sd = seg.spatial_dims(cfg.Data.Kind)
    noise = [np.random.default_rng([cfg.Run.Seed, i]).standard_normal(test[i].image.shape).astype(np.float32)
             for i in range(len(test))]
    rows, gif_frames = [], {test[i].name: [] for i in range(min(sw.Gifs, len(test)))}
    bar = keras.utils.Progbar(len(sigmas), unit_name="sigma", verbose=seg.bar_verbosity())
    for sigma in sigmas:
        noisy = [PreparedCase(c.name, c.image + sigma * n, c.label, c.case) for c, n in zip(test, noise)]
        predict.reset()  # the same seeds at every sigma, batched as infer batches them
        for prepared, values in seg.segment_cases(cfg, noisy, predict, cfg.Sampler.BatchSize, progress=False):
            labels = np.argmax(values[..., :cfg.Data.Classes], -1)
            scored = pd.DataFrame(seg.score_rows(cfg, prepared.case, labels))  # as infer scores it
            dices = [float(scored[f"dice_{c}" if cfg.Data.Classes > 2 else "dice"].mean())
                     for c in range(1, cfg.Data.Classes)]
            rows.append({"sigma": float(sigma), "case": prepared.name,
                         **{f"dice_{c}": d for c, d in enumerate(dices, 1)}})
            if prepared.name in gif_frames:
                frame_img = np.clip(mid_slice(to_input_grid(prepared.image, prepared), sd), 0, 1)
                gif_frames[prepared.name].append(gifs.render(
                    [gifs.to_rgb(frame_img), gifs.overlay(frame_img, mid_slice(labels, sd))],
                    ["noisy input", "prediction"], suptitle=f"sigma = {sigma:.2f}   Dice = {np.mean(dices):.3f}",
                    layout="row"))
        bar.add(1)
    table = seg.name_columns(pd.DataFrame(rows), cfg)
    atomic_csv(table, run_dir / "sweep.csv")
    plots.robustness_plot(table, run_dir / "sweep.png", title=f"{Path(cfg.source).stem}: Dice vs input noise")
    for name, frames in gif_frames.items():
        print(f"gif: {gifs.write_gif(run_dir / 'gifs' / f'robustness_{name}.gif', frames)}")
    clean = table[table.sigma == sigmas[0]].filter(like="dice_").mean().mean()
    print(f"sweep: {len(sigmas)} sigmas x {len(test)} cases; mean Dice at sigma {sigmas[0]:g}: {clean:.4f}, "
          f"at {sigmas[-1]:g}: {table[table.sigma == sigmas[-1]].filter(like='dice_').mean().mean():.4f} "
          f"-> {run_dir / 'sweep.csv'}", flush=True)
