#!/usr/bin/env python3
"""Make the README / docs figures in docs/figures/ from the shipped weights (small PNGs, a few MB in all).

One figure per method family, each from one ordinary ``run.py`` command:

- ``ldseg_reverse_diffusion.png``: ``cfg/glas.ini --mode gif``; evenly spaced frames of the first reverse-diffusion
  GIF tiled into one sheet (the same tiling as a GIF contact sheet: 4 px white gaps, frames left to right);
- ``tpdm_zsr.png``: ``cfg/tpdm_zsr.ini --mode reconstruct``; a coronal and a sagittal slice of the held-out
  MNI152 volume: truth, the thick-slice input, cubic interpolation and TPDM, with the run's PSNR;
- ``mgdcr_slice.png``: ``cfg/cardiac_mgdcr.ini --mode reconstruct``; a missing short-axis slice and a through-plane
  cut of truth, cubic interpolation of the observed slices and MGDCR;
- ``vertebra_reconstruction.png``: ``cfg/vertebra_lsd_ebm.ini --mode infer``; surfaces of the thick-slice input,
  the upsampling baseline, the LSD-EBM reconstruction and the truth of one held-out shape.

    python scripts/make_figures.py                     # runs the four commands (nice 15), then draws
    python scripts/make_figures.py --reuse             # draw from the run directories that already exist
    python scripts/make_figures.py --only vertebra --checkout /tmp/old_clone --reuse

Runs go to ``--runs`` (default ``runs/figures/<figure>``); commands run in ``--checkout`` (default: this checkout),
whose configs, weights and data the figures read. Heavy commands run under ``nice`` (the CPU may be shared).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.interpolate import CubicSpline  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "figures"
DPI = 100

# figure name -> (config, mode, a file that shows the run is complete)
RUNS = {
    "ldseg": ("cfg/glas.ini", "gif", "gifs"),
    "tpdm": ("cfg/tpdm_zsr.ini", "reconstruct", "tpdm.nii.gz"),
    "mgdcr": ("cfg/cardiac_mgdcr.ini", "reconstruct", "reconstruction.nii.gz"),
    "vertebra": ("cfg/vertebra_lsd_ebm.ini", "infer", "metrics.csv"),
}


def run(name: str, checkout: Path, run_dir: Path, reuse: bool, nice: int) -> Path:
    """Run the figure's command into ``run_dir`` unless ``reuse`` and it is already there."""
    cfg, mode, done = RUNS[name]
    if reuse and (run_dir / done).exists():
        print(f"{name}: reusing {run_dir}", flush=True)
        return run_dir
    cmd = ["nice", "-n", str(nice), sys.executable, "run.py", "--cfg", cfg, "--mode", mode, "--out", str(run_dir),
           "--overwrite"]
    print(f"{name}: {' '.join(cmd)}  (in {checkout})", flush=True)
    subprocess.run(cmd, cwd=checkout, check=True)
    return run_dir


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def save(fig, name: str) -> Path:
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size / 1024:.0f} KB)", flush=True)
    return path


def frame_sheet(gif: Path, frames: int = 8, cols: int = 8, gap: int = 4) -> np.ndarray:
    """Evenly spaced frames of a GIF tiled into one RGB sheet (white gaps), first frame top left."""
    stack = iio.imread(gif, index=None)
    if stack.ndim == 3:
        stack = np.repeat(stack[..., None], 3, axis=-1)
    stack = stack[..., :3]
    pick = np.unique(np.linspace(0, len(stack) - 1, min(frames, len(stack))).round().astype(int))
    cols = min(cols, len(pick))
    rows = -(-len(pick) // cols)
    h, w = stack.shape[1:3]
    sheet = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for k, i in enumerate(pick):
        r, c = divmod(k, cols)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = stack[i]
    return sheet


def fig_ldseg(run_dir: Path, checkout: Path) -> Path:
    gif = sorted((run_dir / "gifs").glob("*.gif"))[0]
    path = FIGURES / "ldseg_reverse_diffusion.png"
    FIGURES.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frame_sheet(gif), optimize=True)
    print(f"wrote {path.relative_to(REPO)} from {gif.name} ({path.stat().st_size / 1024:.0f} KB)", flush=True)
    return path


def _psnr(run_dir: Path) -> dict:
    """Mean PSNR of the three planes per method ("baseline", "TPDM", ...) from the run's metrics.csv."""
    table = pd.read_csv(run_dir / "metrics.csv")
    return {str(m).split(" (")[0]: float(v) for m, v in zip(table["method"], table["psnr_mean"])}


def fig_tpdm(run_dir: Path, checkout: Path) -> Path:
    truth, base, tpdm = (load(run_dir / f"{n}.nii.gz") for n in ("truth", "baseline", "tpdm"))
    factor = 4
    thick = np.repeat(truth.reshape(*truth.shape[:2], -1, factor).mean(-1), factor, axis=-1)  # what is measured
    psnr = _psnr(run_dir)
    x0, y0 = truth.shape[0] // 2, truth.shape[1] // 2 + 4
    panels = [("truth", truth), (f"input: {factor} z-slices averaged", thick),
              (f"cubic interpolation\n{psnr['baseline']:.2f} dB", base), (f"TPDM\n{psnr['TPDM']:.2f} dB", tpdm)]
    fig, axes = plt.subplots(2, 4, figsize=(8.4, 4.6))
    for j, (title, vol) in enumerate(panels):
        for i, (cut, plane) in enumerate(((vol[:, y0, :], "coronal"), (vol[x0, :, :], "sagittal"))):
            ax = axes[i, j]
            ax.imshow(np.rot90(cut), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel(plane, fontsize=9)
    fig.suptitle("TPDM z-axis super-resolution x4, held-out MNI152 T1 (64^3); PSNR: mean of the three planes",
                 fontsize=9)
    fig.tight_layout()
    return save(fig, "tpdm_zsr.png")


def fig_mgdcr(run_dir: Path, checkout: Path) -> Path:
    sys.path.insert(0, str(checkout))
    from ldseg_suite import config, sections
    from ldseg_suite.data.cardiac import make_cardiac_case, sax_observed, segment_by_intensity

    cfg = config.load(checkout / RUNS["mgdcr"][0], sections.schema_for)
    p, r, acq = cfg.Phantom, cfg.Reconstruct, cfg.Acquisition
    case = make_cardiac_case(10000 + r.Case, size=p.Size, slices=p.Slices, frames=p.Frames)  # held-out seeds
    frame = case.ed_frame if r.Frame == "ed" else case.es_frame
    labels = case.labels[..., frame]
    truth, recon = load(run_dir / "truth.nii.gz"), load(run_dir / "reconstruction.nii.gz")
    spacing = tuple(float(s) for s in np.abs(np.diag(nib.load(str(run_dir / "truth.nii.gz")).affine)[:3]))
    observed = sax_observed(truth.shape[2], acq.KeepEvery, acq.Missing)
    z = np.arange(truth.shape[2])
    cubic = np.clip(CubicSpline(observed, truth[..., observed], axis=2)(z), 0, 1)
    missing = np.setdiff1d(z, observed)
    k = int(missing[np.argmin(np.abs(missing - truth.shape[2] // 2))])
    row = int(np.argmax(ndimage.uniform_filter(truth[..., k], 9).max(axis=1)))  # a row through the heart

    def scores(vol):
        seg = segment_by_intensity(vol, spacing=spacing)
        mean_dice = np.mean([dice(seg == c, labels == c) for c in (1, 2, 3)])
        rmse = float(np.sqrt(np.mean((vol[..., missing] - truth[..., missing]) ** 2)))
        return f"mean Dice {mean_dice:.3f}, RMSE {rmse:.3f}"

    panels = [("truth", truth), (f"cubic interpolation\n{scores(cubic)}", cubic), (f"MGDCR\n{scores(recon)}", recon)]
    fig, axes = plt.subplots(2, 3, figsize=(7.6, 5.6), gridspec_kw={"height_ratios": [1, 0.95]})
    for j, (title, vol) in enumerate(panels):
        axes[0, j].imshow(vol[..., k].T, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title(title, fontsize=9)
        axes[1, j].imshow(vol[row, :, :].T, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
                          aspect=spacing[2] / spacing[1])  # slices down, columns across, at the true spacing
        for s in observed:  # markers just left of the image, outside the axes
            axes[1, j].plot([-2.0], [s], marker=">", color="tab:orange", markersize=4, clip_on=False)
        axes[1, j].axhline(k, color="tab:cyan", lw=0.6, ls=":")
        axes[1, j].set_xlim(-0.5, truth.shape[1] - 0.5)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel(f"SAX slice {k} (not observed)", fontsize=9)
    axes[1, 0].set_ylabel("through-plane cut\n(> observed slices)", fontsize=9, labelpad=9)
    fig.suptitle(f"MGDCR, held-out phantom {r.Case} ({r.Frame.upper()}): SAX slices {', '.join(map(str, observed))} "
                 f"of {truth.shape[2]} + 2ch/3ch/4ch views observed.\nDice of LV, myocardium, RV (classical "
                 "segmentation of each volume); RMSE on the missing slices", fontsize=9)
    fig.tight_layout()
    return save(fig, "mgdcr_slice.png")


def _surface(ax, mask: np.ndarray, color, box):
    """A shaded marching-cubes surface of ``mask`` inside ``box`` (slices), z (the thick-slice axis) upwards."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(mask[box].astype(np.float32), 0.5, step_size=1)
    tris = verts[faces]
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-9
    light = np.array([0.4, -0.6, 0.7]) / np.linalg.norm([0.4, -0.6, 0.7])
    shade = 0.3 + 0.7 * np.abs(normals @ light)
    colors = np.clip(np.array(matplotlib.colors.to_rgb(color))[None] * shade[:, None], 0, 1)
    ax.add_collection3d(Poly3DCollection(tris, facecolors=colors, edgecolor="none", linewidth=0))
    n = [s.stop - s.start for s in box]
    ax.set_xlim(0, n[0])
    ax.set_ylim(0, n[1])
    ax.set_zlim(0, n[2])
    ax.set_box_aspect(n, zoom=1.25)
    ax.view_init(elev=15, azim=-55)
    ax.set_axis_off()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / max(1, a.sum() + b.sum()))


def fig_vertebra(run_dir: Path, checkout: Path) -> Path:
    sys.path.insert(0, str(checkout))
    from ldseg_suite import config, sections

    cfg = config.load(checkout / RUNS["vertebra"][0], sections.schema_for)
    factor = cfg.ThickSlice.Factor
    table = pd.read_csv(run_dir / "metrics.csv")
    method = cfg.Run.Method
    ours = table[table["method"] == method].set_index("case")["dice"]
    base = table[table["method"] == "upsampling"].set_index("case")["dice"]
    case = str((ours - base).idxmax()) if len(ours) else sorted(table["case"])[0]  # where the prior shows most
    truth = load(checkout / cfg.Data.Root / "images" / f"{case}.nii.gz") > 0.5
    recon = load(run_dir / "predictions" / f"{case}.nii.gz") > 0.5
    thick = truth.astype(np.float32).reshape(*truth.shape[:2], -1, factor).mean(-1)
    staircase = np.repeat(thick, factor, axis=-1) > 0.5
    upsampled = ndimage.zoom(thick, (1, 1, factor), order=1, mode="nearest") > 0.5
    panels = [(f"input: {truth.shape[2] // factor} thick slices\n({factor} z-slices averaged)", staircase, "0.6"),
              (f"upsampling baseline\nDice {dice(upsampled, truth):.3f}", upsampled, "tab:blue"),
              (f"LSD-EBM\nDice {dice(recon, truth):.3f}", recon, "tab:orange"),
              ("truth", truth, "tab:green")]
    lo = np.argwhere(truth | recon | staircase | upsampled).min(0)
    hi = np.argwhere(truth | recon | staircase | upsampled).max(0)
    box = tuple(slice(max(0, a - 2), min(n, b + 3)) for a, b, n in zip(lo, hi, truth.shape))
    fig = plt.figure(figsize=(10, 3.6))
    for j, (title, mask, color) in enumerate(panels):
        ax = fig.add_subplot(1, 4, j + 1, projection="3d")
        _surface(ax, mask, color, box)
        ax.set_title(title, fontsize=9, y=0.98)
    fig.suptitle(f"Thick-slice reconstruction of held-out vertebra {case} ({'x'.join(map(str, truth.shape))}), the "
                 f"test shape where LSD-EBM gains most over upsampling;\nmean Dice over the {len(ours)} test shapes: "
                 f"LSD-EBM {ours.mean():.3f}, upsampling {base.mean():.3f}", fontsize=9)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.84, wspace=0)
    return save(fig, "vertebra_reconstruction.png")


DRAW = {"ldseg": fig_ldseg, "tpdm": fig_tpdm, "mgdcr": fig_mgdcr, "vertebra": fig_vertebra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS), help="which figures")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "figures", help="parent of the run directories")
    ap.add_argument("--checkout", type=Path, default=REPO, help="where run.py, cfg/, weights/ and data/ are")
    ap.add_argument("--reuse", action="store_true", help="draw from existing run directories, run only the missing")
    ap.add_argument("--nice", type=int, default=15, help="niceness of the run.py commands")
    a = ap.parse_args(argv)
    checkout = a.checkout.resolve()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in a.only:
        run_dir = run(name, checkout, (a.runs / name).resolve(), a.reuse, a.nice)
        DRAW[name](run_dir, checkout)
    total = sum(p.stat().st_size for p in FIGURES.glob("*.png"))
    print(f"docs/figures: {total / 1e6:.2f} MB in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
