"""Runner of the 2D slice priors on cardiac cine phantoms: DiffAE and the plain DDIM baseline.

Modes: ``train`` (noise-prediction MSE on every short-axis slice of every frame of the training phantoms);
``roundtrip`` (held-out slices -> (z_sem, x_T) by the semantic encoder and DDIM inversion -> DDIM decode;
PSNR per slice in ``roundtrip.csv``/``roundtrip.md`` and a picture ``roundtrip.png``); ``sample`` (DDIM
samples from noise; for DiffAE, several x_T decoded with the z_sem of held-out slices).

The model classes are imported at module level: resuming a checkpoint needs them registered.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ldseg_suite import distribute, training
from ldseg_suite.data import pipeline
from ldseg_suite.data.cardiac import make_cardiac_case
from ldseg_suite.errors import LDSegError
from ldseg_suite.models.ddim import DDIM
from ldseg_suite.models.diffae import DiffAE
from ldseg_suite.tasks import cardiac_plausibility as plaus
from ldseg_suite.tasks.cardiac_plausibility import plausibility  # noqa: F401 (the strict check, re-exported)
from ldseg_suite.tasks.cardiac_schema import MODES
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights, open_run

TEST_SEED = 10000  # held-out phantoms use seeds TEST_SEED, TEST_SEED + 1, ...
OUTPUTS = {"train": [], "roundtrip": ["roundtrip.csv"], "sample": ["samples.png"], "interpolate": ["interpolation.png"]}


def phantom_cases(phantom_cfg, split: str, count: int = 0) -> list:
    """The training or held-out phantoms of a config (deterministic in the seeds); ``count`` > 0 takes the first."""
    p = phantom_cfg
    seeds = range(p.Cases) if split == "train" else range(TEST_SEED, TEST_SEED + p.TestCases)
    seeds = seeds[:count] if count else seeds
    return [make_cardiac_case(s, size=p.Size, slices=p.Slices, frames=p.Frames) for s in seeds]


def slices_of(cases) -> np.ndarray:
    """Every short-axis slice of every frame, (N, H, W, 1) float32 in [-1, 1]."""
    stacks = [np.moveaxis(c.image, (2, 3), (0, 1)).reshape(-1, *c.image.shape[:2]) for c in cases]
    return (np.concatenate(stacks)[..., None] * 2.0 - 1.0).astype(np.float32)


def build_model(cfg):
    m, s = cfg.Model, cfg.NoiseScheduler
    kw = dict(channels=1, base_channels=m.BaseChannels, channel_mult=m.ChannelMult, attention=m.Attention,
              schedule=s.Scheduler, beta_0=s.Beta_0, beta_T=s.Beta_T, timesteps=s.Timesteps, seed=cfg.Run.Seed,
              prediction=m.Prediction)
    model = DiffAE(semantic_dim=m.SemanticDim, **kw) if cfg.Run.Method == "diffae" else DDIM(**kw)
    model.build((None, cfg.Phantom.Size, cfg.Phantom.Size, 1))
    return model


def load_model(cfg, run_dir: Path | None = None, weights: str = "", what: str = "[Output] Weights"):
    """A built model with trained weights: the run's own, else ``weights`` (default ``[Output] Weights``)."""
    model = build_model(cfg)
    if run_dir is not None:
        load_trained_weights(model, cfg, run_dir)
    else:
        training.load_weights(model, Path(weights or cfg.Output.Weights), what)
    return model


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    run_dir = open_run(cfg, mode, out, overwrite, {m: OUTPUTS[m] for m in MODES[cfg.Run.Method]})
    {"train": train, "roundtrip": roundtrip, "sample": sample, "interpolate": interpolate}[mode](cfg, run_dir)
    return 0


def train(cfg, run_dir: Path) -> None:

    t = cfg.Training
    images = slices_of(phantom_cases(cfg.Phantom, "train"))
    print(f"data: {cfg.Phantom.Cases} training phantoms, {len(images)} short-axis slices", flush=True)
    ds = pipeline.array_dataset(images, t.BatchSize, seed=cfg.Run.Seed)
    steps = t.StepsPerEpoch or max(1, len(images) // t.BatchSize)
    start = time.time()
    training.fit(lambda: build_model(cfg), ds, steps, t.Epochs, run_dir, t,
                 strategy=distribute.strategy_for(cfg.Distribute.Strategy))
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: "
          f"{run_dir / training.FINAL_WEIGHTS}", flush=True)


def held_out_slices(cfg) -> np.ndarray:
    """``[Codec] Samples`` slices spread evenly over the held-out phantoms' slices and frames."""
    images = slices_of(phantom_cases(cfg.Phantom, "test"))
    pick = np.linspace(0, len(images) - 1, min(cfg.Codec.Samples, len(images))).round().astype(int)
    return images[pick]


def psnr(reference, image) -> float:
    """PSNR in dB of images in [-1, 1] (data range 2, i.e. the PSNR of the [0, 1] images)."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(np.asarray(reference), np.clip(np.asarray(image), -1, 1), data_range=2.0))


def roundtrip(cfg, run_dir: Path) -> None:
    from ldseg_suite.diffusion.samplers import initial_noise

    model = load_model(cfg, run_dir)
    x = held_out_slices(cfg)
    start = time.time()
    z, x_T = model.encode(x, cfg.Codec.Steps)
    rec = np.asarray(model.decode(z, x_T, cfg.Codec.Steps)["x0"])
    draws = [np.asarray(model.decode(z, initial_noise(x.shape, cfg.Run.Seed + d), cfg.Codec.Steps, clip=True)["x0"])
             for d in range(cfg.Codec.RandomDraws)]
    print(f"encoded and decoded {len(x)} held-out slices in {time.time() - start:.0f} s", flush=True)
    per_draw = np.array([[psnr(a, b) for a, b in zip(x, d)] for d in draws])  # (draws, slices)
    table = pd.DataFrame({"slice": np.arange(len(x)), "psnr_roundtrip": [psnr(a, b) for a, b in zip(x, rec)],
                          "psnr_random_xT": per_draw.mean(axis=0), "psnr_random_xT_std": per_draw.std(axis=0)})
    atomic_csv(table, run_dir / "roundtrip.csv")
    what = "z_sem + " if cfg.Run.Method == "diffae" else ""
    md = (f"{cfg.Run.Method} round trip on {len(x)} held-out slices ({cfg.Codec.Steps} DDIM steps each way), "
          f"PSNR in dB (mean +- std over slices):\n\n| decode from | PSNR |\n|---|---|\n"
          f"| {what}inverted x_T | {table.psnr_roundtrip.mean():.2f} +- {table.psnr_roundtrip.std():.2f} |\n"
          f"| {what}random x_T ({len(draws)} draws per slice, mean) | {table.psnr_random_xT.mean():.2f} +- "
          f"{table.psnr_random_xT.std():.2f} |\n\nSpread over the draws (std of one slice's PSNR over its "
          f"{len(draws)} random x_T, mean over slices): {table.psnr_random_xT_std.mean():.2f} dB; worst draw "
          f"{per_draw.min():.2f} dB.\n")
    (run_dir / "roundtrip.md").write_text(md)
    print(md)
    _picture(run_dir / "roundtrip.png", [x, rec, np.abs(rec - x) - 1.0] + draws[:3],
             ["held-out", "round trip", "|error|"] + [f"{what}random x_T, draw {d + 1}" for d in range(len(draws[:3]))])


def sample(cfg, run_dir: Path) -> None:
    from ldseg_suite.diffusion.samplers import initial_noise

    model = load_model(cfg, run_dir)
    n = cfg.Codec.Samples
    x = held_out_slices(cfg)[:4]
    if cfg.Run.Method == "diffae":  # stochastic variations: one z_sem, several x_T
        z = np.repeat(np.asarray(model.semantic(x)), n // len(x) or 1, axis=0)
    else:
        z = np.zeros((n, 0), np.float32)
    noise = initial_noise((len(z),) + x.shape[1:], cfg.Run.Seed)
    out = np.asarray(model.decode(z, noise, cfg.Codec.Steps, clip=True)["x0"])
    rows = [out[i::len(x)] for i in range(len(x))] if cfg.Run.Method == "diffae" else \
        [out[i:i + 16] for i in range(0, min(len(out), 64), 16)]
    _picture(run_dir / "samples.png", rows, [f"z_sem of held-out slice {i}" for i in range(len(rows))]
             if cfg.Run.Method == "diffae" else ["DDIM samples from noise"] + [""] * (len(rows) - 1))
    test = phantom_cases(cfg.Phantom, "test")
    pixel = test[0].spacing[0]
    source = "z_sem of 4 held-out slices, x_T" if cfg.Run.Method == "diffae" else "x_T"
    title = f"{len(out)} {cfg.Run.Method} samples ({source} from N(0, I), {cfg.Codec.Steps} DDIM steps)"
    scored, md = plaus.report(out, slices_of(test), slices_of(phantom_cases(cfg.Phantom, "train")), pixel, title,
                              f"every slice of the {cfg.Phantom.TestCases} held-out phantoms")
    atomic_csv(scored, run_dir / "samples.csv")
    (run_dir / "samples.md").write_text(md)
    print(md + f"samples: {run_dir / 'samples.png'}", flush=True)


def interpolate(cfg, run_dir: Path) -> None:
    """The DiffAE's latent interpolation between two held-out slices: lerp (z_sem), slerp (x_T), decoded; the
    pixel-space blend below it for contrast (``interpolation.png``, ``interpolation.csv``: PSNR of the ends)."""
    from ldseg_suite.tasks.mgdcr import slerp

    if cfg.Run.Method != "diffae":
        raise LDSegError(f"[Run] Mode = interpolate needs Method = diffae, not {cfg.Run.Method}")
    model = load_model(cfg, run_dir)
    a, b = _interpolation_ends(cfg)
    x = np.stack([a, b])
    z, x_T = (np.asarray(v) for v in model.encode(x, cfg.Codec.Steps))
    w = np.linspace(0.0, 1.0, 8)
    zs = np.stack([(1 - t) * z[0] + t * z[1] for t in w]).astype(np.float32)
    xs = np.stack([slerp(x_T[0], x_T[1], float(t)) for t in w]).astype(np.float32)
    out = np.asarray(model.decode(zs, xs, cfg.Codec.Steps)["x0"])
    blend = np.stack([(1 - t) * a + t * b for t in w])
    atomic_csv(pd.DataFrame({"weight": w, "psnr_to_a": [psnr(a, o) for o in out],
                             "psnr_to_b": [psnr(b, o) for o in out]}), run_dir / "interpolation.csv")
    _picture(run_dir / "interpolation.png", [out, blend],
             ["DiffAE: lerp z_sem, slerp x_T (held-out slice A -> B)", "pixel-space blend, for contrast"])
    print(f"interpolation: {run_dir / 'interpolation.png'}", flush=True)


def _interpolation_ends(cfg):
    """Two unlike held-out slices: a basal one of the first held-out phantom at ED, a mid-apical one of the second
    at ES (a small, thick-walled LV elsewhere in the field of view)."""
    cases = phantom_cases(cfg.Phantom, "test")
    if len(cases) < 2:
        raise LDSegError(f"[Phantom] TestCases = {cfg.Phantom.TestCases}: interpolation needs at least 2")
    picks = ((cases[0], cfg.Phantom.Slices // 4, cases[0].ed_frame), (cases[1], cfg.Phantom.Slices // 2,
                                                                         cases[1].es_frame))
    return [(c.image[..., k, f][..., None] * 2.0 - 1.0).astype(np.float32) for c, k, f in picks]


def _picture(path: Path, rows, titles) -> None:
    """Rows of (n, H, W, 1) images in [-1, 1] side by side, one titled row each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ldseg_suite.viz.plots import save_figure

    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.45 * len(rows)), squeeze=False)
    for r, (images, title) in enumerate(zip(rows, titles)):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.asarray(images[c])[..., 0], cmap="gray", vmin=-1, vmax=1)
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    save_figure(fig, path)
