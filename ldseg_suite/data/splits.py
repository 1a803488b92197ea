"""Deterministic train / val / test split by subject, written to the run directory as CSV."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from ldseg_suite.errors import LDSegError

PARTS = ("train", "val", "test")


def subject_function(pattern: str):
    """``[Data] Subject``: a regular expression whose match in a case name (its first group, if it has one) names
    the case's subject, so that e.g. ``patient001_frame01`` and ``patient001_frame12`` stay in one split
    (``^patient\\d+``). Empty: every case is its own subject. A name it does not match is an error naming it."""
    if not pattern:
        return None
    regex = re.compile(pattern)

    def subject_of(name: str) -> str:
        found = regex.search(name)
        if found is None:
            raise LDSegError(f"[Data] Subject = {pattern}: does not match the case name {name!r}")
        return found.group(1) if regex.groups else found.group(0)
    return subject_of


def split_cases(names, fractions=(0.7, 0.1, 0.2), seed: int = 0, subject_of=None) -> dict[str, list[str]]:
    """Shuffle subjects with ``seed`` and cut them by ``fractions``; every case of a subject stays together."""
    names = list(names)
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or fractions[2] <= 0:
        raise LDSegError(f"Split = {fractions}: expected three fractions train, val, test with train > 0, "
                         "val >= 0 and test > 0")
    subject_of = subject_of or (lambda n: n)
    subjects = sorted({subject_of(n) for n in names})
    need = 1 + (fractions[1] > 0) + 1
    if len(subjects) < need:
        raise LDSegError(f"{len(subjects)} subject(s) found but the split {tuple(fractions)} needs at least {need}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n = len(subjects)
    n_val = int(round(fractions[1] * n))
    if fractions[1] > 0:
        n_val = max(1, n_val)
    n_test = min(max(1, int(round(fractions[2] * n))), n - 1 - n_val)  # train keeps at least one subject
    n_val = min(n_val, n - n_test - 1)
    cut = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    part_of = {subjects[i]: part for part, idx in cut.items() for i in idx}
    return {part: [nm for nm in names if part_of[subject_of(nm)] == part] for part in PARTS}


def resolve_split(names, data_cfg, seed: int, run_split: Path | None = None):
    """(split, source) for the cases ``names`` of ``data_cfg.Root``: ``run_split`` (a run directory's split.csv)
    if it exists, else the data folder's own split.csv (a fixed split shipped with the data), else the seeded split
    by subject of ``[Data] Split`` / ``Subject`` (source None). A split file naming unknown cases is an error."""
    root_split = Path(data_cfg.Root) / "split.csv"
    source = next((p for p in (run_split, root_split) if p is not None and p.is_file()), None)
    if source is None:
        split = split_cases(names, tuple(data_cfg.Split), seed=seed, subject_of=subject_function(data_cfg.Subject))
        return split, None
    split = read_split(source)
    unknown = sorted(set(n for part in split.values() for n in part) - set(names))
    if unknown:
        raise LDSegError(f"{source}: names cases not in [Data] Root = {data_cfg.Root} ({', '.join(unknown[:3])}...)"
                         + ("; use a new --out" if source == run_split else ""))
    return split, source


def write_split(path, split) -> None:
    """CSV ``name,split`` (train rows, then val, then test), written atomically."""
    path = Path(path)
    tmp = path.with_name(f".tmp_{os.getpid()}_{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "split"])
            for part in PARTS:
                for name in split.get(part, []):
                    w.writerow([name, part])
        os.replace(tmp, path)
    except OSError as exc:
        raise LDSegError(f"{path}: cannot write split file ({exc.__class__.__name__})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def read_split(path) -> dict[str, list[str]]:
    """The CSV of ``write_split`` -> {"train": [...], "val": [...], "test": [...]}."""
    out = {part: [] for part in PARTS}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[row["split"]].append(row["name"])
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise LDSegError(f"{path}: unreadable split file ({exc.__class__.__name__}); expected CSV name,split") from None
    return out
