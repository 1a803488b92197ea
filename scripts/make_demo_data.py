#!/usr/bin/env python
"""Regenerate the shipped demo data: data/glas, data/echo, data/knee (deterministic generators) and
data/nuclei2d (tiles of the DSB2018 image shipped inside the stardist wheel, CC0).

usage: python scripts/make_demo_data.py [--root data] [--stardist-wheel PATH]

Without --stardist-wheel the shipped data/nuclei2d tiles are left as they are (they are in git); to remake them:
    pip download --no-deps stardist==0.9.2 -d /tmp/sd
    python scripts/make_demo_data.py --stardist-wheel /tmp/sd/stardist-0.9.2-*.whl
"""
import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldseg_suite.data import readers, shapes, synthetic  # noqa: E402


def nuclei_tiles(wheel: Path, root: Path, tile: int = 64) -> int:
    """Cut the wheel's img2d.tif / mask2d.tif (512x512) into non-overlapping tiles -> number of tiles."""
    import io

    import tifffile

    try:
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            img_name = next(n for n in names if n.endswith("data/images/img2d.tif"))
            mask_name = next(n for n in names if n.endswith("data/images/mask2d.tif"))
            image = tifffile.imread(io.BytesIO(z.read(img_name))).astype(np.float32)
            mask = tifffile.imread(io.BytesIO(z.read(mask_name)))
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        sys.exit(f"{wheel}: cannot read img2d.tif / mask2d.tif from the stardist wheel ({exc.__class__.__name__}); "
                 "expected stardist-*.whl from `pip download --no-deps stardist`")
    lo, hi = np.percentile(image, (0.5, 99.8))
    image8 = (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    count = 0
    for r in range(0, image.shape[0] - tile + 1, tile):
        for c in range(0, image.shape[1] - tile + 1, tile):
            name = f"tile_{count:03d}.png"
            readers.write_png(root / "nuclei2d" / "images" / name, image8[r:r + tile, c:c + tile])
            readers.write_png(root / "nuclei2d" / "labels" / name, (mask[r:r + tile, c:c + tile] > 0).astype(np.uint8))
            count += 1
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data")
    ap.add_argument("--stardist-wheel", type=Path, help="stardist-*.whl (pip download --no-deps stardist)")
    args = ap.parse_args()
    root = Path(args.root)
    synthetic.write_demo_sets(root)
    print(f"wrote {root}/glas, {root}/echo, {root}/knee")
    for k, mask in enumerate(shapes.make_vertebrae(40, 64, seed=0)):
        readers.write_nifti(root / "vertebra" / "images" / f"vert_{k:02d}.nii.gz", mask, np.eye(4))
    print(f"wrote {root}/vertebra")
    for k, mask in enumerate(shapes.make_segments(120, 32, seed=0)):  # cfg/vertebra_*.ini (docs/lsd_ebm.md)
        readers.write_nifti(root / "lumbar" / "images" / f"seg_{k:03d}.nii.gz", mask, np.eye(4))
    print(f"wrote {root}/lumbar")
    if args.stardist_wheel:
        print(f"wrote {nuclei_tiles(args.stardist_wheel, root)} tiles to {root}/nuclei2d")
    else:
        print(f"kept {root}/nuclei2d as shipped (pass --stardist-wheel PATH to remake it)")


if __name__ == "__main__":
    main()
