#!/usr/bin/env python
"""Otsu-threshold baseline on the test split of a run: per-image threshold, foreground = brighter class.

usage: python scripts/otsu_baseline.py --cfg cfg/nuclei2d.ini --run runs/n
Scores at the original size with the same Dice as the runs; prints the mean and writes <run>/otsu.csv.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd
from skimage.filters import threshold_otsu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldseg_suite import config, metrics, sections  # noqa: E402
from ldseg_suite.data import layout, splits  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--run", required=True, help="run directory whose split.csv names the test cases")
    args = ap.parse_args()
    cfg = config.load(args.cfg, sections.schema_for)
    test = set(splits.read_split(Path(args.run) / "split.csv")["test"])
    rows = []
    for paths in layout.find_cases(cfg.Data.Root, cfg.Data.Layout):
        if paths.name not in test:
            continue
        case = layout.load_case(paths, cfg.Data.Kind, cfg.Data.Classes, cfg.Data.Binarize)
        grey = case.image.mean(-1)
        pred = grey > threshold_otsu(grey)
        rows.append({"case": case.name, "dice": metrics.dice(pred, case.label > 0),
                     "iou": metrics.iou(pred, case.label > 0)})
    table = pd.DataFrame(rows)
    table.to_csv(Path(args.run) / "otsu.csv", index=False, float_format="%.4f")
    print(f"Otsu baseline on {len(table)} test cases: mean dice {table.dice.mean():.4f}, "
          f"iou {table.iou.mean():.4f} -> {Path(args.run) / 'otsu.csv'}")


if __name__ == "__main__":
    main()
