"""What every method's runner needs: the run directory, the case list and its split."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldseg_suite.data import layout, pipeline, splits
from ldseg_suite.errors import LDSegError


def prepare_run_dir(out: Path, protected: list[str], overwrite: bool) -> Path:
    """Create the run directory; refuse to replace any of ``protected`` outputs unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LDSegError(f"--out {out}: exists and is not a directory")
    existing = [name for name in protected if (out / name).exists()]
    if existing and not overwrite:
        raise LDSegError(f"--out {out}: already holds {', '.join(existing)} from an earlier run; "
                         f"pass --overwrite to replace them or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise LDSegError(f"--out {out}: cannot write to the run directory ({exc.strerror})") from None
    return out


def record_config(cfg, run_dir: Path, own_weights: bool) -> None:
    """Write the resolved config to ``run_dir/config.ini``. With ``own_weights`` (the run trains, or its directory
    already holds the trained weights that infer and predict load first) it records that file as ``[Output]
    Weights``, so ``--cfg <run>/config.ini`` always uses this run's model, not the weights the original config
    named (e.g. a shipped config's demo weights)."""
    from ldseg_suite import training

    if own_weights and "Output" in cfg and hasattr(cfg.Output, "Weights"):
        cfg = cfg.replace("Output", Weights=str(run_dir / training.FINAL_WEIGHTS))
    cfg.write(run_dir / "config.ini")


def open_run(cfg, mode: str, out: Path, overwrite: bool, outputs: dict) -> Path:
    """What every mode of every method does first: check the mode (a key of ``outputs``), make the run directory
    (refusing to replace that mode's ``outputs``), write the resolved config (``record_config``), seed, and set
    the precision policy when the config has a [Training] section. Returns the run directory."""
    import keras

    from ldseg_suite import distribute, training

    if mode not in outputs:
        raise LDSegError(f"--mode {mode}: expected one of {', '.join(outputs)} for method {cfg.Run.Method}")
    run_dir = prepare_run_dir(out, outputs[mode], overwrite)
    record_config(cfg, run_dir, mode == "train" or (run_dir / training.FINAL_WEIGHTS).is_file())
    keras.utils.set_random_seed(cfg.Run.Seed)
    if "Training" in cfg:
        distribute.set_precision(cfg.Training.Precision)
    return run_dir


def start_run(cfg, mode: str, out: Path, overwrite: bool, outputs: dict):
    """``open_run``, then load and split the data of a case-based method. Returns (run_dir, splits)."""
    run_dir = open_run(cfg, mode, out, overwrite, outputs)
    data = load_splits(cfg.Data, cfg.Run.Seed, run_dir)
    print(f"data: {cfg.Data.Root}: " + ", ".join(f"{k} {len(v.cases)}" for k, v in data.items()), flush=True)
    return run_dir, data


def load_trained_weights(model, cfg, run_dir: Path, load=None) -> None:
    """Load the run's own trained weights if present, else ``[Output] Weights``; ``load(model, path, what)``
    reads a file (default ``training.load_weights``)."""
    from ldseg_suite import training

    load = load or training.load_weights
    own = run_dir / training.FINAL_WEIGHTS
    if own.is_file():
        load(model, own, f"{run_dir} weights")
        print(f"weights: {own}", flush=True)
    elif cfg.Output.Weights:
        load(model, Path(cfg.Output.Weights), "[Output] Weights")
        print(f"weights: {cfg.Output.Weights}", flush=True)
    else:
        raise LDSegError(f"[Output] Weights is empty and {own} does not exist: train first with --mode train")


def spatial_dims(kind: str) -> int:
    return 2 if kind == "2d" else 3


@dataclass
class Prepared:
    """Cases of one split, loaded, plus their network-size arrays."""

    cases: list          # layout.Case (original image, label, geometry)
    images: np.ndarray   # (N, *Size, C) float32
    labels: np.ndarray   # (N, *Size) int32, or None when some case has no label

    @property
    def names(self):
        return [c.name for c in self.cases]


def load_splits(data_cfg, seed: int, run_dir: Path) -> dict[str, Prepared]:
    """Find, load, split (``splits.resolve_split``, written to ``run_dir/split.csv``) and prepare the cases."""
    root = Path(data_cfg.Root)
    if not root.is_dir():
        raise LDSegError(f"[Data] Root = {data_cfg.Root}: folder not found (expected a data folder, "
                         f"e.g. data/glas)")
    paths = layout.find_cases(root, data_cfg.Layout)
    split_file = run_dir / "split.csv"
    names = [p.name for p in paths]
    split, source = splits.resolve_split(names, data_cfg, seed, split_file)
    if source != split_file:
        splits.write_split(split_file, split)
    by_name = {p.name: p for p in paths}
    prepared = {}
    for part, part_names in split.items():
        cases = [layout.load_case(by_name[n], data_cfg.Kind, data_cfg.Classes, data_cfg.Binarize,
                                  channels=data_cfg.Channels) for n in part_names]
        images, labels = [], []
        for case in cases:
            image, label = pipeline.prepare_case(case, tuple(data_cfg.Size), data_cfg.Normalize,
                                                 data_cfg.IntensityRange)
            images.append(image)
            labels.append(label)
        has_labels = all(lab is not None for lab in labels)
        empty_img = np.zeros((0, *data_cfg.Size, data_cfg.Channels), np.float32)
        prepared[part] = Prepared(cases, np.stack(images) if images else empty_img,
                                  np.stack(labels) if images and has_labels else None)
    return prepared


def atomic_csv(frame, path: Path) -> None:
    tmp = path.with_name(f".tmp_{path.name}")
    frame.to_csv(tmp, index=False, float_format="%.4f")
    os.replace(tmp, path)
