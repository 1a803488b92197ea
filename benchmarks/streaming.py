"""Peak memory of a run against the size of its cohort: cases are read lazily, so 500 cases should need about
the memory of 50.

Writes synthetic cohorts of 50 and 500 NIfTI volumes (48^3 float32 each: 22 MB and 221 MB of voxels) to a
temporary folder, then runs, each in its own process, a few training steps of a tiny patch-trained U-Net and
``--mode predict`` over the whole cohort with sliding windows, and reports each process's peak RSS and the
500 / 50 ratio (target <= 1.2).

    python benchmarks/streaming.py [--sizes 50 500] [--steps 4]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, markdown_table, write_csv  # noqa: E402

CONFIG = """
[Run]
Method = unet
Seed = 0
[Data]
Root = {root}
Kind = 3d
Size = 32, 32, 32
Channels = 1
Classes = 2
Split = 0.8, 0.1, 0.1
Patch = 32, 32, 32
Cache = 8
[Model]
BaseChannels = 4
ChannelMult = 1, 2
[Inference]
Window = 32, 32, 32
BatchSize = 4
[Training]
Epochs = 1
StepsPerEpoch = {steps}
BatchSize = 2
EMA = 0
[Output]
Gifs = 0
"""


def write_cohort(root: Path, n: int, size: int = 48) -> None:
    """``n`` volumes with a random ellipsoid each, in images/ + labels/."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    grid = np.indices((size,) * 3).astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng(i)
        c = rng.uniform(16, 32, 3)[:, None, None, None]
        r = rng.uniform(6, 12, 3)[:, None, None, None]
        mask = (((grid - c) / r) ** 2).sum(0) < 1
        image = mask + 0.3 * rng.standard_normal(mask.shape)
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "images" / f"case_{i:04d}.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), root / "labels" / f"case_{i:04d}.nii.gz")


def peak_rss_of(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one run.py process (its own process, so peaks do not mix)."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('@@', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "run.py", *args], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1])
    line = [x for x in out.stdout.splitlines() if x.startswith("@@")]
    if not line or line[0].split()[2] != "0":
        raise SystemExit(f"run.py {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return int(line[0].split()[1]) / 1024, time.time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 500])
    p.add_argument("--steps", type=int, default=4, help="training steps per run")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            root = Path(tmp) / f"cohort_{n}"
            write_cohort(root, n)
            cfg = Path(tmp) / f"cohort_{n}.ini"
            cfg.write_text(CONFIG.format(root=root, steps=a.steps))
            out = Path(tmp) / f"run_{n}"
            train_mb, train_s = peak_rss_of(["--cfg", str(cfg), "--mode", "train", "--out", str(out)])
            pred_mb, pred_s = peak_rss_of(["--cfg", str(cfg), "--mode", "predict", "--input", str(root / "images"),
                                           "--out", str(out / "predict"),
                                           "--set", f"Output.Weights={out / 'model.weights.h5'}"])
            rows.append({"cases": n, "voxels (MB)": round(n * 48 ** 3 * 4 / 2 ** 20, 1),
                         "train peak RSS (MiB)": round(train_mb), "train s": round(train_s, 1),
                         "predict peak RSS (MiB)": round(pred_mb), "predict s": round(pred_s, 1)})
            print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["train ratio"] = round(r["train peak RSS (MiB)"] / base["train peak RSS (MiB)"], 2)
        r["predict ratio"] = round(r["predict peak RSS (MiB)"] / base["predict peak RSS (MiB)"], 2)
    print(f"\nmachine: {machine()}; ratios against the {base['cases']}-case cohort (target <= 1.2)\n")
    print(markdown_table(rows))
    print(f"\ncsv: {write_csv(rows, 'streaming.csv')}")


if __name__ == "__main__":
    main()
