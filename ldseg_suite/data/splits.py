"""Deterministic train / val / test split by subject, written to the run directory as CSV."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ldseg_suite.errors import LDSegError

PARTS = ("train", "val", "test")


def split_cases(names, fractions=(0.7, 0.1, 0.2), seed: int = 0, subject_of=None) -> dict[str, list[str]]:
    """Shuffle subjects with ``seed`` and cut them by ``fractions``; every case of a subject stays together."""
    subject_of = subject_of or (lambda n: n)
    subjects = sorted({subject_of(n) for n in names})
    need = 1 + (fractions[1] > 0) + 1
    if len(subjects) < need:
        raise LDSegError(f"{len(subjects)} subject(s) found but the split {tuple(fractions)} needs at least {need}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n = len(subjects)
    n_test = max(1, int(round(fractions[2] * n)))
    n_val = int(round(fractions[1] * n))
    if fractions[1] > 0:
        n_val = max(1, n_val)
    n_val = min(n_val, n - n_test - 1)
    cut = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    part_of = {subjects[i]: part for part, idx in cut.items() for i in idx}
    return {part: [nm for nm in names if part_of[subject_of(nm)] == part] for part in PARTS}


def write_split(path, split) -> None:
    path = Path(path)
    tmp = path.with_name(f".tmp_{path.name}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "split"])
        for part in PARTS:
            for name in split[part]:
                w.writerow([name, part])
    os.replace(tmp, path)


def read_split(path) -> dict[str, list[str]]:
    out = {part: [] for part in PARTS}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[row["split"]].append(row["name"])
    except (OSError, KeyError, csv.Error) as exc:
        raise LDSegError(f"{path}: unreadable split file ({exc.__class__.__name__}); expected CSV name,split") from None
    return out
