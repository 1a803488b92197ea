"""The LSD-EBM paper's comparisons: the method table (VAE, LEBM, LSD-EBM, upsampling), metrics against the
number of diffusion segments T, and the latents of LEBM and LSD-EBM side by side."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ldseg_suite import config, sections
from ldseg_suite.data.shapes import GENERATORS
from ldseg_suite.errors import LDSegError
from ldseg_suite.tasks import shapes
from ldseg_suite.tasks.common import atomic_csv
from ldseg_suite.tasks.shapes import METRICS, build_model, masks_and_inputs, reconstruct, score, summary_table
from ldseg_suite.viz.plots import plt, save_figure

SAME = (("Data", "Root"), ("Data", "Size"), ("Data", "Split"), ("Run", "Seed"), ("ThickSlice", "Factor"),
        ("Model", "EncoderInput"))


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
    shapes.load_model_weights(model, other, Path(other.Output.Weights), f"{path}: [Output] Weights")
    return other, model


def own_model(cfg, run_dir: Path):
    model = build_model(cfg)
    shapes.load_trained(model, cfg, run_dir)
    return model


GENERATOR_SEED = {"test": 1, "val": 2}  # data/vertebra is seed 0


def scored_shapes(cfg, data):
    """(description, case names, targets, observed thick slices, network inputs) of ``[Compare] Split`` plus
    ``[Compare] ExtraShapes`` fresh generator shapes (seed 1 for test, 2 for val; never trained on)."""
    split, n_extra = cfg.Compare.Split, cfg.Compare.ExtraShapes
    part = shapes.test_split(cfg, data) if split == "test" else data["val"]
    if not part.cases and not n_extra:
        raise LDSegError(f"[Compare] Split = {split}: the {split} split is empty")
    names, arrays = list(part.names), masks_and_inputs(cfg, part)
    what = f"{len(names)} of the {split} split of {cfg.Data.Root}"
    if n_extra:
        seed = GENERATOR_SEED[split]
        make = GENERATORS[cfg.Compare.Generator]
        extra = shapes.thick_inputs(cfg, np.stack(make(n_extra, cfg.Data.Size[0], seed=seed)))
        names += [f"generated_s{seed}_{k:03d}" for k in range(n_extra)]
        arrays = tuple(np.concatenate([a, b]) for a, b in zip(arrays, extra))
        what += f" + {n_extra} fresh shapes of {make.__name__}(seed={seed})"
    return (what, names, *arrays)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (ties dropped): P(a split at least this uneven | no difference)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


PAIRS = (("LSD-EBM", "upsampling"), ("LSD-EBM", "VAE"), ("LSD-EBM", "LEBM"), ("LEBM", "upsampling"),
         ("LEBM", "VAE"), ("VAE", "upsampling"))


def signed_rank_p(diff) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (zeros dropped): unlike the sign test it weighs how
    large the wins and losses are."""
    from scipy import stats

    diff = np.asarray(diff, dtype=float)
    return float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0


def paired_wins(table: pd.DataFrame, metric: str = "dice", pairs=PAIRS) -> pd.DataFrame:
    """Per pair (method, baseline): shapes where the method's ``metric`` is higher / lower / equal (to 1e-6),
    mean, std and median of the per-shape difference, the sign test's p and the Wilcoxon signed-rank p."""
    by = table.pivot(index="case", columns="method", values=metric)
    rows = []
    for method, base in pairs:
        if method not in by or base not in by:
            continue
        diff = (by[method] - by[base]).round(6)
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        rows.append({"method": method, "baseline": base, "metric": metric, "shapes": len(diff), "wins": wins,
                     "losses": losses, "ties": len(diff) - wins - losses, "mean_diff": float(diff.mean()),
                     "std_diff": float(diff.std(ddof=0)), "median_diff": float(diff.median()),
                     "sign_test_p": sign_test(wins, losses), "wilcoxon_p": signed_rank_p(diff)})
    return pd.DataFrame(rows)


def wins_table(wins: pd.DataFrame) -> str:
    lines = ["| method | vs | wins | losses | ties | mean diff +- std | median diff | sign test p | Wilcoxon p |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.baseline} | {r.wins} | {r.losses} | {r.ties} | {r.mean_diff:+.4f} +- "
              f"{r.std_diff:.4f} | {r.median_diff:+.4f} | {r.sign_test_p:.3g} | {r.wilcoxon_p:.3g} |"
              for r in wins.itertuples()]
    return "\n".join(lines)


def compare(cfg, data, run_dir: Path) -> None:
    """The method x metric table on the held-out (or, with ``[Compare] Split = val``, validation) shapes:
    compare.csv per case, compare.md mean +- std and paired per-shape Dice wins (wins.csv)."""
    what, names, target, observed, thick = scored_shapes(cfg, data)
    print(f"scoring {len(names)} shapes: {what}", flush=True)
    rows, probs, seconds = [], {}, {}
    for key in ("VAE", "LEBM", None):
        if key is None:
            label, method_cfg, model = "LSD-EBM", cfg, own_model(cfg, run_dir)
        else:
            label = key
            method_cfg, model = other_model(cfg, key)
        print(f"{label}:", flush=True)
        start = time.time()
        probs[label] = reconstruct(model, method_cfg, thick, observed)
        seconds[label] = time.time() - start
        rows += score(label, names, probs[label] > 0.5, target)
    rows += score("upsampling", names, shapes.upsampling_baseline(thick[..., 0]), target)
    table = pd.DataFrame(rows)
    atomic_csv(table, run_dir / "compare.csv")
    wins = paired_wins(table)
    atomic_csv(wins, run_dir / "wins.csv")
    summary = summary_table(table)
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    (run_dir / "compare.md").write_text(
        f"Shapes scored: {len(names)} ({what}); mean +- std over shapes\n\n{summary}\n\n"
        f"Paired per-shape Dice (wins = shapes where the method's Dice is higher; sign test two-sided, ties "
        f"dropped):\n\n{wins_table(wins)}\n\nReconstruction time: {timing}\n")
    print(summary)
    print(wins_table(wins))
    print(f"reconstruction time: {timing}", flush=True)
    for k in range(min(cfg.Output.Gifs, len(names))):
        gif = shapes.reconstruction_gif(run_dir / "gifs" / f"compare_{names[k]}.gif", thick[k, ..., 0],
                                        {m: p[k] for m, p in probs.items()}, target[k])
        print(f"gif: {gif}", flush=True)


def compare_steps(cfg, data, run_dir: Path) -> None:
    """Train and evaluate LSD-EBM for each T in ``[Compare] Segments`` (each in ``segments_<T>/``)."""
    test = shapes.test_split(cfg, data)
    target, observed, thick = masks_and_inputs(cfg, test)
    rows = []
    for segments in cfg.Compare.Segments:
        variant = cfg.replace("Diffusion", Segments=segments).replace("Output", Weights="")
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
    inputs = shapes.training_pairs(cfg, data["train"])[0]  # what the encoder saw in training
    n = cfg.Compare.Samples
    models = {"LEBM": other_model(cfg, "LEBM")[1], "LSD-EBM": own_model(cfg, run_dir)}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    stats_fig, stats_axes = plt.subplots(1, 2, figsize=(9, 3.2))
    rows = []
    for ax, (label, model) in zip(axes, models.items()):
        posterior = np.concatenate([np.asarray(model.encode(inputs[i:i + 4])[0]) for i in range(0, len(inputs), 4)])
        samples, path = model.sample_latents(n, seed=cfg.Run.Seed, capture=True)
        project = pca_2d(posterior)
        p, s = project(posterior), project(samples)
        ax.scatter(s[:, 0], s[:, 1], s=6, alpha=0.5, label=f"prior samples ({n})")
        ax.scatter(p[:, 0], p[:, 1], s=14, marker="x", label=f"posterior means ({len(p)} training shapes)")
        ax.set_title(f"{label}: PCA of the latent (axes of the posterior means)", fontsize=9)
        ax.legend(fontsize=7)
        # In the prior's own space (u = the standardised latent with [Prior] Standardize, else z), against the
        # training posterior means in the same space: a chain that ends where the data are ends at their line.
        norm, spread = chain_stats(np.asarray(model.to_unit(path)))
        post_u = np.asarray(model.to_unit(posterior))
        post_norm, post_spread = (float(v[0]) for v in chain_stats(post_u[None]))
        each = np.linalg.norm(post_u, axis=-1) / np.sqrt(post_u.shape[-1])  # the range over training shapes
        end_each = np.linalg.norm(np.asarray(model.to_unit(path))[-1], axis=-1) / np.sqrt(post_u.shape[-1])
        inside = float(np.mean((end_each >= each.min()) & (end_each <= each.max())))
        progress = np.linspace(0, 1, len(norm))
        line = stats_axes[0].plot(progress, norm, label=label)[0]
        stats_axes[0].axhline(post_norm, color=line.get_color(), ls="--", lw=0.8, label=f"{label} posterior means")
        line = stats_axes[1].plot(progress, spread, label=label)[0]
        stats_axes[1].axhline(post_spread, color=line.get_color(), ls="--", lw=0.8)
        rows += [{"model": label, "step": k, "progress": float(progress[k]), "norm_per_dim": float(norm[k]),
                  "std_per_dim": float(spread[k]), "posterior_norm_per_dim": post_norm,
                  "posterior_norm_min": float(each.min()), "posterior_norm_max": float(each.max()),
                  "posterior_std_per_dim": post_spread} for k in range(len(norm))]
        print(f"{label}: chain |u| / sqrt(dim) {norm[0]:.2f} -> {norm[-1]:.2f} (posterior means {post_norm:.2f}); "
              f"per-dimension std {spread[0]:.2f} -> {spread[-1]:.2f} (posterior means {post_spread:.2f}); posterior "
              f"means' norms {each.min():.2f}-{each.max():.2f}, {100 * inside:.0f} % of the chains end inside",
              flush=True)
    for ax, title in zip(stats_axes, ("mean |u| / sqrt(dim) (u: the prior's latent space)",
                                      "mean per-dimension std over samples")):
        ax.set_xlabel("chain progress (0 = start, 1 = end)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    stats_fig.suptitle("prior sampling chains: LEBM over Langevin steps, LSD-EBM over segments T -> 0", fontsize=9)
    print(f"plot: {save_figure(fig, run_dir / 'latent.png')}")
    print(f"plot: {save_figure(stats_fig, run_dir / 'latent_steps.png')}")
    atomic_csv(pd.DataFrame(rows), run_dir / "latent_stats.csv")
