#!/usr/bin/env python
"""Regenerate the shipped synthetic demo data: data/glas, data/echo, data/knee, data/vertebra, data/lumbar
(deterministic generators). The real sets come from scripts/make_real_data.py and scripts/make_tpdm_data.py.

usage: python scripts/make_demo_data.py [--root data]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldseg_suite.data import readers, shapes, synthetic  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data")
    args = ap.parse_args()
    root = Path(args.root)
    synthetic.write_demo_sets(root)
    print(f"wrote {root}/glas, {root}/echo, {root}/knee")
    for k, mask in enumerate(shapes.make_vertebrae(40, 64, seed=0)):
        readers.write_nifti(root / "vertebra" / "images" / f"vert_{k:02d}.nii.gz", mask, np.eye(4))
    print(f"wrote {root}/vertebra")
    for k, mask in enumerate(shapes.make_segments(600, 32, seed=0)):  # cfg/vertebra_*.ini (docs/lsd_ebm.md)
        readers.write_nifti(root / "lumbar" / "images" / f"seg_{k:03d}.nii.gz", mask, np.eye(4))
    print(f"wrote {root}/lumbar")


if __name__ == "__main__":
    main()
