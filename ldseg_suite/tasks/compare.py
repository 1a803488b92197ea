"""``--mode compare`` for an LDSeg config: LDSeg (1 sample and [Compare] Samples), the U-Net baseline of
``[Compare] Baseline`` and a global Otsu threshold on the same held-out cases, per case and mean, with paired
wins and a two-sided sign test (``compare.csv``, ``compare.md``)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ldseg_suite import config, sections, training
from ldseg_suite.baselines import otsu_for
from ldseg_suite.data import cases, splits
from ldseg_suite.errors import LDSegError
from ldseg_suite.tasks import segmentation as seg
from ldseg_suite.tasks.common import atomic_csv

SAME_DATA_KEYS = ("Kind", "Channels", "Classes", "Binarize")


def load_baseline(cfg, data: dict):
    """The U-Net config named by [Compare] Baseline and its model with its [Output] Weights. The U-Net must have
    been trained on the same data folder and on none of this run's test cases (``data``: the run's split)."""
    from ldseg_suite.tasks import unet

    path = cfg.Compare.Baseline
    base = config.load(path, sections.schema_for)
    if base.Run.Method != "unet":
        raise LDSegError(f"[Compare] Baseline = {path}: [Run] Method = {base.Run.Method}; expected a unet config")
    for key in SAME_DATA_KEYS:
        if getattr(base.Data, key) != getattr(cfg.Data, key):
            raise LDSegError(f"[Compare] Baseline = {path}: [Data] {key} = {getattr(base.Data, key)} differs from "
                             f"this config's {getattr(cfg.Data, key)}; both must segment the same data")
    if Path(base.Data.Root).resolve() != Path(cfg.Data.Root).resolve():
        raise LDSegError(f"[Compare] Baseline = {path}: [Data] Root = {base.Data.Root} is not this config's "
                         f"{cfg.Data.Root}; train a U-Net on this data (--mode train --out RUN with its [Data] "
                         f"Root set) and set Baseline = RUN/config.ini")
    names = [p.name for part in data.values() for p in part.paths]
    leaked = sorted({p.name for p in data["test"].paths} & set(baseline_training_cases(base, path, names)))
    if leaked:
        raise LDSegError(f"[Compare] Baseline = {path}: its training split holds {len(leaked)} of this run's test "
                         f"cases ({', '.join(leaked[:3])}); give both the same [Run] Seed and [Data] Split, or "
                         f"train the U-Net in a run directory that holds this run's split.csv")
    if not base.Output.Weights:
        raise LDSegError(f"[Compare] Baseline = {path}: [Output] Weights is empty; train the U-Net and set it")
    model = unet.build_model(base)
    training.load_weights(model, Path(base.Output.Weights), f"{path} [Output] Weights")
    return base, model


def baseline_training_cases(base, path, names: list[str]) -> list[str]:
    """The cases the baseline config's model trained on (train and val): the split.csv beside that config (a run
    directory's config.ini), else the data folder's split.csv, else its seeded split of ``names``."""
    split, _ = splits.resolve_split(names, base.Data, base.Run.Seed, Path(path).parent / "split.csv")
    return split["train"] + split["val"]


def sign_test(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(wins of a, losses of a, two-sided sign-test p-value); ties are left out."""
    wins, losses = int(np.sum(a > b)), int(np.sum(a < b))
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return wins, losses, float(p)


def _case_scores(cfg, prepared, labels) -> dict:
    rows = pd.DataFrame(seg.score_rows(cfg, prepared.case, labels))
    return {"dice": float(rows["dice"].mean()), "hd95": float(rows["hd95"].mean())}


def run_compare(cfg, model, data: dict, run_dir: Path) -> pd.DataFrame:
    from ldseg_suite.tasks import ldseg, unet

    test, k, bs = data["test"], cfg.Data.Classes, cfg.Sampler.BatchSize
    if not len(test):
        raise LDSegError("the test split is empty; --mode compare needs held-out cases")

    def labels_of(values):
        return np.argmax(values[..., :k], axis=-1)

    methods = {"ldseg": lambda i, p=ldseg.make_predict(cfg, model, 1): labels_of(seg.segment_one(cfg, test[i], p, bs))}
    n = cfg.Compare.Samples
    if n > 1:
        pn = ldseg.make_predict(cfg, model, n)
        methods[f"ldseg_{n}samples"] = lambda i: labels_of(seg.segment_one(cfg, test[i], pn, bs))
    if cfg.Compare.Baseline:
        base, base_model = load_baseline(cfg, data)
        base_reader = cases.CaseReader(test.paths, base.Data)
        pu = unet.make_predict(base_model)
        methods["unet"] = lambda i: labels_of(seg.segment_one(base, base_reader[i], pu, base.Inference.BatchSize))
    otsu = otsu_for(data["train"], k)
    methods["otsu"] = lambda i: otsu(test[i].case.image)

    rows = [{"case": test[i].name} for i in range(len(test))]
    seconds = {}
    for name, method in methods.items():
        start = time.time()
        for i, row in enumerate(rows):
            scores = _case_scores(cfg, test[i], method(i))
            row.update({f"dice_{name}": scores["dice"], f"hd95_{name}": scores["hd95"]})
        seconds[name] = (time.time() - start) / len(rows)
        print(f"compare: {name}: mean dice {np.mean([r[f'dice_{name}'] for r in rows]):.4f} "
              f"({seconds[name]:.1f} s per case)", flush=True)
    table = seg.mean_row(pd.DataFrame(rows))
    atomic_csv(table, run_dir / "compare.csv")
    (run_dir / "compare.md").write_text(summary(table, list(methods), seconds, cfg))
    print((run_dir / "compare.md").read_text(), flush=True)
    return table


def summary(table: pd.DataFrame, names: list[str], seconds: dict, cfg) -> str:
    """Markdown: mean Dice / HD95 per method, seconds per case, paired wins and sign tests against the U-Net and
    Otsu rows."""
    per_case = table[table.case != "mean"]
    refs = [r for r in ("unet", "otsu") if r in names]
    head = "| method | Dice | HD95 | s / case | " + " | ".join(f"vs {r}: wins-losses (p)" for r in refs) + " |"
    lines = [f"Held-out cases: {len(per_case)} of {cfg.Data.Root} (mean over cases; HD95 in the data's units)", "",
             head, "|" + "---|" * (4 + len(refs))]
    for name in names:
        d = per_case[f"dice_{name}"].to_numpy()
        cells = []
        for r in refs:
            if r == name:
                cells.append("-")
                continue
            w, l_, p = sign_test(d, per_case[f"dice_{r}"].to_numpy())
            cells.append(f"{w}-{l_} (p = {p:.3g})")
        lines.append(f"| {name} | {d.mean():.4f} | {per_case[f'hd95_{name}'].mean():.2f} | {seconds[name]:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
