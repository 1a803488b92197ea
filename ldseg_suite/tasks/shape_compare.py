"""The LSD-EBM paper's comparisons: the method table (VAE, LEBM, LSD-EBM, upsampling), metrics against the
number of diffusion segments T, and the latents of LEBM and LSD-EBM side by side."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ldseg_suite import config, sections, training
from ldseg_suite.errors import LDSegError
from ldseg_suite.tasks import shapes
from ldseg_suite.tasks.common import atomic_csv, load_trained_weights
from ldseg_suite.tasks.shapes import METRICS, build_model, masks_and_inputs, reconstruct, score, summary_table
from ldseg_suite.viz.plots import plt, save_figure

SAME = (("Data", "Root"), ("Data", "Size"), ("Data", "Split"), ("Run", "Seed"), ("ThickSlice", "Factor"))


def other_model(cfg, key: str):
    """(config, model with its shipped weights) named by ``[Compare] key``; same data and split as ``cfg``."""
    path = Path(getattr(cfg.Compare, key))
    if not path.is_file():
        raise LDSegError(f"[Compare] {key} = {path}: config file not found")
    other = config.load(path, sections.schema_for)
    for sec, name in SAME:
        if getattr(getattr(other, sec), name) != getattr(getattr(cfg, sec), name):
            raise LDSegError(f"[Compare] {key} = {path}: [{sec}] {name} differs from {cfg.source}; the "
                             f"comparison needs the same data, split and thick-slice factor")
    if not other.Output.Weights:
        raise LDSegError(f"[Compare] {key} = {path}: [Output] Weights is empty (the comparison uses "
                         f"trained weights)")
    model = build_model(other)
    training.load_weights(model, Path(other.Output.Weights), f"{path}: [Output] Weights")
    return other, model


def own_model(cfg, run_dir: Path):
    model = build_model(cfg)
    load_trained_weights(model, cfg, run_dir)
    return model


def compare(cfg, data, run_dir: Path) -> None:
    """The method x metric table on the held-out shapes (compare.csv per case, compare.md mean +- std)."""
    test = shapes.test_split(cfg, data)
    target, observed, thick = masks_and_inputs(cfg, test)
    rows, probs = [], {}
    for key in ("VAE", "LEBM", None):
        if key is None:
            label, method_cfg, model = "LSD-EBM", cfg, own_model(cfg, run_dir)
        else:
            label = key
            method_cfg, model = other_model(cfg, key)
        print(f"{label}:", flush=True)
        probs[label] = reconstruct(model, method_cfg, thick, observed)
        rows += score(label, test.names, probs[label] > 0.5, target)
    rows += score("upsampling", test.names, shapes.upsampling_baseline(thick[..., 0]), target)
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "compare.csv")
    summary = summary_table(table)
    (run_dir / "compare.md").write_text(f"Held-out shapes: {len(test.cases)} (mean +- std over cases)\n\n"
                                        f"{summary}\n")
    print(summary)
    for k in range(min(cfg.Output.Gifs, len(test.cases))):
        gif = shapes.reconstruction_gif(run_dir / "gifs" / f"compare_{test.names[k]}.gif", thick[k, ..., 0],
                                 {m: p[k] for m, p in probs.items()}, target[k])
        print(f"gif: {gif}", flush=True)


def with_value(cfg, section: str, **values):
    """A copy of ``cfg`` with some keys of one section replaced."""
    secs = {name: getattr(cfg, name) for name in cfg.schema.sections}
    secs[section] = dataclasses.replace(secs[section], **values)
    return config.Config(secs, cfg.source, cfg.schema)


def compare_steps(cfg, data, run_dir: Path) -> None:
    """Train and evaluate LSD-EBM for each T in ``[Compare] Segments`` (each in ``segments_<T>/``)."""
    test = shapes.test_split(cfg, data)
    target, observed, thick = masks_and_inputs(cfg, test)
    rows = []
    for segments in cfg.Compare.Segments:
        variant = with_value(with_value(cfg, "Diffusion", Segments=segments), "Output", Weights="")
        sub = run_dir / f"segments_{segments}"
        sub.mkdir(exist_ok=True)
        print(f"T = {segments}: training in {sub}", flush=True)
        shapes.train(variant, data, sub)
        model = own_model(variant, sub)
        recon = reconstruct(model, variant, thick, observed) > 0.5
        rows += [{**r, "segments": segments} for r in score("lsd_ebm", test.names, recon, target)]
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "steps.csv")
    summary = summary_table(table, by="segments")
    (run_dir / "steps.md").write_text(summary + "\n")
    print(summary)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(2.6 * len(METRICS), 2.6))
    for ax, m in zip(axes, METRICS):
        stats = table.groupby("segments")[m].agg(["mean", "std"])
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3)
        ax.set_xlabel("diffusion segments T")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    fig.suptitle(f"LSD-EBM on {len(test.cases)} held-out shapes (mean +- std)", y=1.06)
    print(f"plot: {save_figure(fig, run_dir / 'steps.png')}")


def pca_2d(reference: np.ndarray):
    """Projection onto the first two principal axes of ``reference`` (rows = samples)."""
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return lambda z: (np.asarray(z) - mean) @ vt[:2].T


def chain_stats(path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step of a chain (steps, n, dim): mean latent norm / sqrt(dim) and mean per-dimension std."""
    return (np.linalg.norm(path, axis=-1).mean(-1) / np.sqrt(path.shape[-1]), path.std(axis=1).mean(-1))


def compare_latent(cfg, data, run_dir: Path) -> None:
    """PCA of posterior latents against prior samples for LEBM and LSD-EBM; latent statistics per step."""
    thick = masks_and_inputs(cfg, data["train"])[2]
    n = cfg.Compare.Samples
    models = {"LEBM": other_model(cfg, "LEBM")[1], "LSD-EBM": own_model(cfg, run_dir)}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    stats_fig, stats_axes = plt.subplots(1, 2, figsize=(9, 3.2))
    rows = []
    for ax, (label, model) in zip(axes, models.items()):
        posterior = np.concatenate([np.asarray(model.encode(thick[i:i + 4])[0]) for i in range(0, len(thick), 4)])
        samples, path = model.sample_latents(n, seed=cfg.Run.Seed, capture=True)
        project = pca_2d(posterior)
        p, s = project(posterior), project(samples)
        ax.scatter(s[:, 0], s[:, 1], s=6, alpha=0.5, label=f"prior samples ({n})")
        ax.scatter(p[:, 0], p[:, 1], s=14, marker="x", label=f"posterior means ({len(p)} training shapes)")
        ax.set_title(f"{label}: PCA of the latent (axes of the posterior means)", fontsize=9)
        ax.legend(fontsize=7)
        norm, spread = chain_stats(np.asarray(path))
        progress = np.linspace(0, 1, len(norm))
        stats_axes[0].plot(progress, norm, label=label)
        stats_axes[1].plot(progress, spread, label=label)
        rows += [{"model": label, "step": k, "progress": float(progress[k]), "norm_per_dim": float(norm[k]),
                  "std_per_dim": float(spread[k])} for k in range(len(norm))]
    for ax, title in zip(stats_axes, ("mean |z| / sqrt(dim)", "mean per-dimension std over samples")):
        ax.set_xlabel("chain progress (0 = start, 1 = end)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    stats_fig.suptitle("prior sampling chains: LEBM over Langevin steps, LSD-EBM over segments T -> 0", fontsize=9)
    print(f"plot: {save_figure(fig, run_dir / 'latent.png')}")
    print(f"plot: {save_figure(stats_fig, run_dir / 'latent_steps.png')}")
    atomic_csv(pd.DataFrame(rows), run_dir / "latent_stats.csv")
