#!/usr/bin/env python
"""Make the shipped Fashion-MNIST subset data/fashion: 600 images per class from train, 100 per class from t10k.

usage: python scripts/make_fashion_subset.py --source DIR [--out data/fashion]

DIR holds the full Fashion-MNIST IDX files (train-images-idx3-ubyte.gz etc.), e.g. from Debian's package:
    cd /tmp && apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb /tmp/fm
    python scripts/make_fashion_subset.py --source /tmp/fm/usr/share/datasets/fashion-mnist
Deterministic: numpy default_rng(0), picks kept in the source order, gzip without time stamps.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldseg_suite.data.idx import load_idx_pair, write_idx  # noqa: E402
from ldseg_suite.errors import LDSegError  # noqa: E402

PER_CLASS = {"train": 600, "t10k": 100}
CLASSES = 10


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random items of each class 0..9, sorted (so the source's order is kept)."""
    picks = []
    for c in range(CLASSES):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise LDSegError(f"class {c}: {len(idx)} items; expected at least {per_class}")
        picks.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True, help="folder with the full Fashion-MNIST IDX files")
    ap.add_argument("--out", type=Path, default=Path("data/fashion"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    try:
        for split, per_class in PER_CLASS.items():
            images, labels = load_idx_pair(args.source, split)
            keep = balanced_subset(labels, per_class, rng)
            write_idx(args.out / f"{split}-images-idx3-ubyte.gz", images[keep])
            write_idx(args.out / f"{split}-labels-idx1-ubyte.gz", labels[keep])
            print(f"wrote {len(keep)} {split} images to {args.out}")
    except LDSegError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
