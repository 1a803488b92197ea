"""2D image generation runner: pixel-space EBM, LEBM and LSD-EBM (latent priors with a generator), scored by
FID on the features of a small classifier trained on the same data ("FID (local features)").

Modes: ``train``; ``sample`` (a sample grid PNG, a GIF of the sampling chain, ``fid.csv``/``fid.md`` with
this model's FID, the real-vs-real floor and the models of ``[FID] Compare``); for ``fid_classifier``,
``train`` and ``infer`` (test accuracy).

The model modules are imported here, not lazily: resuming a checkpoint needs their classes registered.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ldseg_suite import config, distribute, sections, training
from ldseg_suite.data import pipeline
from ldseg_suite.data.idx import load_idx_pair
from ldseg_suite.errors import LDSegError
from ldseg_suite.fid import frechet_distance
from ldseg_suite.models.classifier import FeatureClassifier
from ldseg_suite.models.image_ebm import PixelEBM
from ldseg_suite.models.latent_ebm import ShapeLEBM, ShapeLSDEBM
from ldseg_suite.tasks import shapes
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights, open_run
from ldseg_suite.tasks.generate_schema import MODES
from ldseg_suite.viz import gifs

OUTPUTS = {"train": [], "sample": ["samples.png", "fid.csv"], "infer": ["accuracy.csv"]}


def load_images(images_cfg, split: str):
    """(float32 (N, Size, Size, 1) in [0, 1], uint8 labels) of an IDX split, zero-padded or centre-cropped."""
    root = Path(images_cfg.Root)
    if not root.is_dir():
        raise LDSegError(f"[Images] Root = {images_cfg.Root}: folder not found (expected IDX files, e.g. data/fashion)")
    images, labels = load_idx_pair(root, split)
    if split == "train" and images_cfg.Limit:
        images, labels = images[:images_cfg.Limit], labels[:images_cfg.Limit]
    size, n = images_cfg.Size, images.shape[1]
    if size >= n:
        lo = (size - n) // 2
        images = np.pad(images, ((0, 0), (lo, size - n - lo), (lo, size - n - lo)))
    else:
        lo = (n - size) // 2
        images = images[:, lo:lo + size, lo:lo + size]
    return (images.astype(np.float32) / 255.0)[..., None], labels


def build_model(cfg):
    size = (cfg.Images.Size, cfg.Images.Size)
    method = cfg.Run.Method
    if method == "ebm":
        e = cfg.EBM
        model = PixelEBM(size, 1, e.BaseChannels, e.LangevinSteps, e.LangevinStepSize, e.Noise, e.BufferSize,
                         e.Reinit, seed=cfg.Run.Seed)
    elif method == "fid_classifier":
        model = FeatureClassifier(size, 1, 10, cfg.Classifier.BaseChannels, cfg.Classifier.Features)
    else:
        m, p = cfg.Model, cfg.Prior
        args = (size, m.LatentDim, m.BaseChannels, m.Levels, m.Beta)
        kw = dict(energy_hidden=p.EnergyHidden, langevin_steps=p.LangevinSteps, langevin_step_size=p.LangevinStepSize,
                  seed=cfg.Run.Seed, dice_weight=0.0, standardize=p.Standardize, grad_penalty=p.GradPenalty,
                  train_backbone=p.TrainBackbone, whiten=p.Whiten, energy_activation=p.EnergyActivation)
        model = (ShapeLEBM(*args, **kw) if method == "lebm_2d" else
                 ShapeLSDEBM(*args, segments=cfg.Diffusion.Segments, schedule=cfg.Diffusion.Schedule,
                             energy_scale=p.EnergyScale, objective=p.Objective, score_samples=p.ScoreSamples,
                             score_min_noise=p.ScoreMinNoise, **kw))
    model.build((None, *size, 1))
    return model


def run(cfg, mode: str, out: Path, overwrite: bool = False) -> int:
    run_dir = open_run(cfg, mode, out, overwrite, {m: OUTPUTS[m] for m in MODES[cfg.Run.Method]})
    {"train": train, "sample": sample, "infer": classifier_accuracy}[mode](cfg, run_dir)
    return 0


def train(cfg, run_dir: Path) -> None:
    import keras
    import tensorflow as tf

    t = cfg.Training
    images, labels = load_images(cfg.Images, "train")
    print(f"data: {cfg.Images.Root}: {len(images)} training images", flush=True)
    if cfg.Run.Method == "fid_classifier":
        target = tf.one_hot(labels, 10)
    elif cfg.Run.Method == "ebm":
        target = np.zeros((len(images), 1), np.float32)
    else:
        target = np.concatenate([1 - images, images], axis=-1)  # the image is its own target
    ds = pipeline.array_dataset((images, target), t.BatchSize, seed=cfg.Run.Seed)
    steps = t.StepsPerEpoch or max(1, len(images) // t.BatchSize)
    classifier = cfg.Run.Method == "fid_classifier"  # uses Keras' own train_step with cross-entropy
    start = time.time()
    model = training.fit(lambda: with_backbone(build_model(cfg), cfg), ds, steps, t.Epochs, run_dir, t,
                         strategy=distribute.strategy_for(cfg.Distribute.Strategy),
                         loss=keras.losses.CategoricalCrossentropy(from_logits=True) if classifier else None,
                         metrics=["accuracy"] if classifier else None)
    final = run_dir / training.FINAL_WEIGHTS
    if "Prior" in cfg and not cfg.Prior.TrainBackbone:
        shapes.export_prior_only(model, cfg, final)  # replaces the full export: the backbone is [Prior] Backbone
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: {final}", flush=True)


def with_backbone(model, cfg, quiet: bool = False):
    """``model`` with encoder and generator copied from ``[Prior] Backbone`` (a weights file of a model of
    ``[Prior] BackboneConfig``, default this config), if set."""
    prior = getattr(cfg, "Prior", None)
    if prior is None or not prior.Backbone:
        return model
    source_cfg = backbone_config(cfg)
    source = build_model(source_cfg)
    load_weights(source, source_cfg, Path(prior.Backbone), "[Prior] Backbone")
    for dst, src in zip(model.backbone_weights(), source.backbone_weights(), strict=True):
        dst.assign(src)
    if not quiet:
        print(f"backbone: {prior.Backbone} ({'trained further' if prior.TrainBackbone else 'fixed'})", flush=True)
    return model


def load_weights(model, cfg, path: Path, what: str) -> None:
    """``training.load_weights``, or for a file that holds only a latent prior (a fixed-backbone LEBM / LSD-EBM,
    ``shapes.export_prior_only``): ``[Prior] Backbone`` first, then the prior."""
    shapes.load_model_weights(model, cfg, path, what, init=lambda m, c: with_backbone(m, c, quiet=True))


def backbone_config(cfg):
    """The config of ``[Prior] Backbone``'s model: ``[Prior] BackboneConfig``, checked to share this config's
    [Images] Size and [Model], or ``cfg`` itself."""
    path = cfg.Prior.BackboneConfig
    if not path:
        return cfg
    if not Path(path).is_file():
        raise LDSegError(f"[Prior] BackboneConfig = {path}: config file not found")
    other = config.load(Path(path), sections.schema_for)
    if (other.Run.Method not in ("lebm_2d", "lsd_ebm_2d") or other.Images.Size != cfg.Images.Size
            or other.Model != cfg.Model):
        raise LDSegError(f"[Prior] BackboneConfig = {path}: expected an lebm_2d or lsd_ebm_2d config with this "
                         f"config's [Images] Size ({cfg.Images.Size}) and [Model] ({cfg.Model})")
    return other


def _load(cfg, run_dir: Path | None):
    model = build_model(cfg)
    if run_dir is None:
        if not cfg.Output.Weights:
            raise LDSegError(f"{cfg.source}: [Output] Weights is empty (needed to score this model here)")
        load_weights(model, cfg, Path(cfg.Output.Weights), f"{cfg.source}: [Output] Weights")
    else:
        load_trained_weights(model, cfg, run_dir, lambda m, path, what: load_weights(m, cfg, path, what))
    return model


def classifier_for(cfg):
    path = Path(cfg.FID.ClassifierConfig)
    if not path.is_file():
        raise LDSegError(f"[FID] ClassifierConfig = {path}: config file not found")
    ccfg = config.load(path, sections.schema_for)
    if ccfg.Images.Size != cfg.Images.Size:
        raise LDSegError(f"[FID] ClassifierConfig = {path}: [Images] Size {ccfg.Images.Size} differs from "
                         f"{cfg.Images.Size}")
    model = build_model(ccfg)
    training.load_weights(model, Path(cfg.FID.Classifier), "[FID] Classifier")
    return model


def features(classifier, images, batch: int = 500) -> np.ndarray:
    return np.concatenate([np.asarray(classifier.features(images[i:i + batch])) for i in range(0, len(images), batch)])


def generate(model, cfg, n: int, seed: int, capture: bool = False):
    """(images (n, S, S, 1) in [0, 1], chain frames (steps, k, S, S, 1) of the first k images or None)."""
    from keras import ops

    s = cfg.Sample
    out, chain = [], None
    for i in range(0, n, s.BatchSize):
        k = min(s.BatchSize, n - i)
        first = capture and i == 0
        if cfg.Run.Method == "ebm":
            x, path = model.sample(k, seed=seed + i, steps=s.Steps or None, capture=first)
        else:
            z, path = model.sample_latents(k, seed=seed + i, capture=first)
            x = ops.sigmoid(model.decode(z))
            if first:  # decode the latent chain, 16 images per frame
                path = np.stack([np.asarray(ops.sigmoid(model.decode(p[:16]))) for p in np.asarray(path)])
        out.append(np.asarray(x))
        if first:
            chain = np.asarray(path)[:, :16]
    return np.concatenate(out), chain


def grid(images: np.ndarray, rows: int) -> np.ndarray:
    """Tile (rows*rows, S, S, 1) images into one (rows*S, rows*S) array."""
    images = images[:rows * rows, ..., 0]
    rows = int(math.sqrt(len(images)))
    s = images.shape[1]
    return images[:rows * rows].reshape(rows, rows, s, s).transpose(0, 2, 1, 3).reshape(rows * s, rows * s)


def sample(cfg, run_dir: Path) -> None:
    from ldseg_suite.data.readers import write_png

    s = cfg.Sample
    model = _load(cfg, run_dir)
    start = time.time()
    images, chain = generate(model, cfg, s.Samples, cfg.Run.Seed, capture=True)
    print(f"sampled {len(images)} images in {time.time() - start:.0f} s", flush=True)
    write_png(run_dir / "samples.png", (grid(images, s.Grid) * 255).round().astype(np.uint8))
    frames = [gifs.render([grid(c, 4)], [f"step {k + 1}/{len(chain)}"], suptitle=cfg.Run.Method)
              for k, c in zip(gifs.pick_frames(len(chain), 24), chain[gifs.pick_frames(len(chain), 24)])]
    print(f"gif: {gifs.write_gif(run_dir / 'chain.gif', frames, fps=4)}", flush=True)
    classifier = classifier_for(cfg)
    test, _ = load_images(cfg.Images, "t10k")
    train_images, _ = load_images(cfg.Images, "train")
    rng = np.random.default_rng(cfg.Run.Seed)
    real_test = features(classifier, test)
    real_train = features(classifier, train_images[rng.choice(len(train_images), len(test), replace=False)])
    rows = [{"model": f"real train images ({len(test)}) vs test (floor)",
             "fid_local": frechet_distance(real_train, real_test), "samples": len(test)},
            {"model": f"{cfg.Run.Method} (this run)", "fid_local": frechet_distance(features(classifier, images),
                                                                                    real_test),
             "samples": len(images)}]
    for path in cfg.FID.Compare:
        other = _other(path, cfg)
        imgs, _ = generate(_load(other, None), other, s.Samples, cfg.Run.Seed)
        rows.append({"model": f"{other.Run.Method} ({path})",
                     "fid_local": frechet_distance(features(classifier, imgs), real_test), "samples": len(imgs)})
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "fid.csv")
    latent = "" if cfg.Run.Method == "ebm" else latent_norms(model, cfg, test, run_dir)
    md = ("FID (local features): Frechet distance on the features of the project's own Fashion-MNIST "
          "classifier against the held-out test images; not comparable to Inception FID.\n\n"
          "| model | FID (local features) | samples |\n|---|---|---|\n"
          + "\n".join(f"| {r['model']} | {r['fid_local']:.2f} | {r['samples']} |" for r in rows) + "\n" + latent)
    (run_dir / "fid.md").write_text(md)
    print(md)


def latent_norms(model, cfg, test, run_dir: Path, n: int = 250) -> str:
    """``latent.csv``: mean |u| / sqrt(dim) along ``n`` prior chains (u: the prior's own space, the standardised
    latent with ``[Prior] Standardize``), against posterior samples of the first 1000 test images (mean, 1st and
    99th percentile); returns a Markdown paragraph for ``fid.md``."""
    _, path = model.sample_latents(n, seed=cfg.Run.Seed + 1, capture=True)
    u = np.asarray(model.to_unit(path))
    norm = np.linalg.norm(u, axis=-1).mean(-1) / np.sqrt(u.shape[-1])
    mean, logvar = (np.asarray(v) for v in model.encode(test[:1000]))
    z = mean + np.exp(0.5 * logvar) * np.random.default_rng(cfg.Run.Seed).normal(size=mean.shape)
    post = np.linalg.norm(np.asarray(model.to_unit(z.astype(np.float32))), axis=-1) / np.sqrt(u.shape[-1])
    lo, hi = np.percentile(post, [1, 99])
    atomic_csv(pd.DataFrame({"step": np.arange(len(norm)), "norm_per_dim": norm, "posterior_mean": post.mean(),
                             "posterior_p1": lo, "posterior_p99": hi}), run_dir / "latent.csv")
    picks = np.linspace(0, len(norm) - 1, 11).round().astype(int)
    return (f"\nLatent norm |u| / sqrt(d) along {n} prior chains ({'segments' if model.segments else 'steps'}, "
            f"start -> end): {' '.join(f'{v:.2f}' for v in norm[picks])}; posterior samples of "
            f"{len(post)} test images: {post.mean():.2f} (1st-99th percentile {lo:.2f}-{hi:.2f}).\n")


def _other(path: str, cfg):
    p = Path(path)
    if not p.is_file():
        raise LDSegError(f"[FID] Compare = {path}: config file not found")
    other = config.load(p, sections.schema_for)
    if other.Run.Method not in ("ebm", "lebm_2d", "lsd_ebm_2d") or other.Images.Size != cfg.Images.Size:
        raise LDSegError(f"[FID] Compare = {path}: expected a generation config (ebm, lebm_2d, lsd_ebm_2d) with "
                         f"[Images] Size = {cfg.Images.Size}")
    return other


def classifier_accuracy(cfg, run_dir: Path) -> None:
    model = _load(cfg, run_dir)
    test, labels = load_images(cfg.Images, "t10k")
    logits = np.concatenate([np.asarray(model(test[i:i + 500])) for i in range(0, len(test), 500)])
    accuracy = float((logits.argmax(-1) == labels).mean())
    atomic_csv(pd.DataFrame([{"split": "t10k", "images": len(test), "accuracy": accuracy}]),
               run_dir / "accuracy.csv")
    print(f"test accuracy: {accuracy:.4f} on {len(test)} images")
