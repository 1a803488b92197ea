"""Split a cohort over N processes (``--shard K/N``) and merge their tables.

Shard K of N (K = 0 .. N-1) takes the cases at positions K, K + N, K + 2N, ... of the cohort's fixed order
(the order one process would use), so N processes on one or many machines segment every case exactly once.
Each shard writes its predictions (one file per case, no clash) and its own tables, named
``<stem>.shard-K-of-N<suffix>`` (``predict.shard-0-of-2.csv``, ``metrics.shard-1-of-2.csv``); the shard that
finds all N tables present when it finishes merges them into ``<stem><suffix>`` (``predict.csv``), rows in
the cohort order, a ``case = mean`` row recomputed over the merged rows when the shards had one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ldseg_suite.errors import LDSegError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N; anything else is a one-line LDSegError."""
    match = _SHARD.match(str(text))
    if not match:
        raise LDSegError(f"--shard {text}: expected K/N with integers 0 <= K < N, e.g. --shard 0/2")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or k >= n:
        raise LDSegError(f"--shard {text}: expected K/N with 0 <= K < N (shards are numbered 0 .. N-1), "
                         f"e.g. --shard 0/2")
    return k, n


def select(items, k: int, n: int) -> list:
    """The items of shard ``k`` of ``n``: positions k, k + n, ... of ``items`` (in the cohort's fixed order)."""
    if n < 1 or not 0 <= k < n:
        raise LDSegError(f"shard {k}/{n}: expected 0 <= K < N")
    return list(items)[k::n]


def table_name(name: str, k: int, n: int) -> str:
    """``predict.csv`` -> ``predict.shard-K-of-N.csv``: the table one shard writes."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.shard-{k}-of-{n}.{suffix}" if dot else f"{name}.shard-{k}-of-{n}"


def shard_tables(run_dir: Path, name: str) -> dict[int, dict[int, Path]]:
    """The shard tables of ``name`` in ``run_dir``: {N: {K: path}}."""
    stem, _, suffix = name.rpartition(".")
    pattern = re.compile(rf"^{re.escape(stem)}\.shard-(\d+)-of-(\d+)\.{re.escape(suffix)}$")
    found: dict[int, dict[int, Path]] = {}
    for path in Path(run_dir).glob(f"{stem}.shard-*-of-*.{suffix}"):
        match = pattern.match(path.name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
    return found


def _natural(text) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", str(text)) if t]


def merge_tables(run_dir: Path, name: str, n: int | None = None, order=None) -> Path | None:
    """Merge the N shard tables of ``name`` into ``run_dir/name`` once all N are present; else return None.

    ``n``: the shard count (default: the one the files name; several counts are an error). ``order``: case
    names in the cohort order (default: natural order of the ``case`` column). A ``case = mean`` row is
    recomputed from the merged rows (from the 4-decimal values the shards wrote). Safe to call from several
    shards at once: the merged file is written under a private name and renamed.
    """
    found = shard_tables(run_dir, name)
    if n is None:
        if len(found) > 1:
            raise LDSegError(f"{run_dir}: shard tables of {name} for different shard counts "
                             f"({', '.join(f'N = {c}' for c in sorted(found))}); remove the old ones")
        n = next(iter(found), None)
    parts = found.get(n, {}) if n else {}
    if not n or sorted(parts) != list(range(n)):
        return None
    tables = [pd.read_csv(parts[k], dtype={"case": str}, keep_default_na=False, na_values=[""]) for k in range(n)]
    table = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) \
        else tables[0]
    had_mean = "case" in table and (table["case"] == "mean").any()
    if "case" in table:
        table = table[table["case"] != "mean"]
        rank = {c: i for i, c in enumerate(order)} if order is not None else None
        key = (lambda col: col.map(lambda c: rank.get(c, len(rank)))) if rank is not None \
            else (lambda col: col.map(_natural))
        table = table.sort_values("case", key=key, kind="stable").reset_index(drop=True)
    if had_mean:
        numeric = table.drop(columns=["case", "frame"], errors="ignore").mean(numeric_only=True)
        table = pd.concat([table, pd.DataFrame([{"case": "mean", **numeric}])], ignore_index=True)
    path = Path(run_dir) / name
    tmp = path.with_name(f".tmp_{os.getpid()}_{path.name}")
    table.to_csv(tmp, index=False, float_format="%.4f")
    os.replace(tmp, path)
    return path


def write_table(table: pd.DataFrame, run_dir: Path, name: str, shard: tuple[int, int] | None, order=None) -> Path:
    """Write ``table`` as ``run_dir/name`` (no shard), else as this shard's table and merge when all shards
    are done. Returns the path written (the merged table when this shard completed the set)."""
    run_dir = Path(run_dir)
    target = run_dir / (name if shard is None else table_name(name, *shard))
    tmp = target.with_name(f".tmp_{os.getpid()}_{target.name}")
    table.to_csv(tmp, index=False, float_format="%.4f")
    os.replace(tmp, target)
    if shard is None:
        return target
    merged = merge_tables(run_dir, name, shard[1], order)
    if merged is not None:
        print(f"shard {shard[0]}/{shard[1]}: all {shard[1]} shards done; merged {name} -> {merged}", flush=True)
    return merged or target


def protected_outputs(outputs: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The outputs a run must not replace without --overwrite: under a shard, its own tables only (the
    shards share ``predictions/`` and the merged tables)."""
    if shard is None:
        return list(outputs)
    return [table_name(o, *shard) for o in outputs if o.endswith(".csv")]


def main(argv=None) -> int:
    """``python -m ldseg_suite.inference.shard RUN_DIR``: merge the shard tables found in RUN_DIR (for shards
    that wrote to different machines' folders: copy their ``*.shard-K-of-N.csv`` files into one first)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m ldseg_suite.inference.shard RUN_DIR  (a folder holding *.shard-K-of-N.csv tables)",
              file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    names = sorted({re.sub(r"\.shard-\d+-of-\d+\.", ".", p.name) for p in run_dir.glob("*.shard-*-of-*.*")
                    if not p.name.startswith(".")})
    status = 0 if names else 2
    for name in names:
        try:
            merged = merge_tables(run_dir, name)
        except LDSegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        if merged is None:
            have = {n: sorted(parts) for n, parts in shard_tables(run_dir, name).items()}
            print(f"{name}: not all shards present ({have})", file=sys.stderr)
            status = 2
        else:
            print(f"merged {name} -> {merged}")
    if not names:
        print(f"{run_dir}: no *.shard-K-of-N tables", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
