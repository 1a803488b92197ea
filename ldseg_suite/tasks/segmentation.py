"""What every segmentation method (LDSeg, the U-Net baseline) shares: the cases of a data folder read lazily and
split, training on whole resized cases or on native-resolution patches, and applying a model to whole cases
(resize, or sliding windows on the native grid) for infer, predict and compare.

A method gives a ``predict(batch) -> values`` callable: float32 (B, *spatial, C) in, (B, *spatial, K) class
probabilities out, or (B, *spatial, K + 1) with a per-voxel uncertainty as the last channel.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ldseg_suite import distribute, metrics, training
from ldseg_suite.baselines import otsu_for
from ldseg_suite.data import cases, layout, pipeline, readers, splits
from ldseg_suite.errors import LDSegError
from ldseg_suite.inference import shard as sharding
from ldseg_suite.tasks.common import atomic_csv

PREDICT_STATUS_FAILED = 3  # exit code of --mode predict when some cases failed


def spatial_dims(kind: str) -> int:
    return 2 if kind == "2d" else 3


def net_shape(cfg) -> tuple:
    """The spatial shape the network is built and trained at: the patch, else the resize target."""
    return tuple(cfg.Data.Patch or cfg.Data.Size)


def window_of(cfg) -> tuple:
    """Sliding-window size, or () to resize whole cases to [Data] Size."""
    return tuple(cfg.Inference.Window or cfg.Data.Patch)


def bar_verbosity() -> int:
    """A live progress bar on a terminal, one summary line in logs."""
    return 1 if sys.stdout.isatty() else 2


# -- cases and splits ----------------------------------------------------------------------------------------
def open_cases(cfg, run_dir: Path) -> dict[str, cases.CaseReader]:
    """The train / val / test cases of ``[Data] Root`` as lazy readers.

    The split is the run directory's ``split.csv`` when it has one, else the data folder's own ``split.csv``
    (a fixed split shipped with the data, e.g. by region), else a seeded split by subject; it is written to the
    run directory.
    """
    root = Path(cfg.Data.Root)
    if not root.is_dir():
        raise LDSegError(f"[Data] Root = {cfg.Data.Root}: folder not found (expected a data folder, e.g. data/glas)")
    paths = layout.find_cases(root, cfg.Data.Layout)
    names = [p.name for p in paths]
    run_split = run_dir / "split.csv"
    split, source = splits.resolve_split(names, cfg.Data, cfg.Run.Seed, run_split)
    if source != run_split:
        splits.write_split(run_split, split)
    by_name = {p.name: p for p in paths}
    out = {part: cases.CaseReader([by_name[n] for n in split[part]], cfg.Data) for part in splits.PARTS}
    if cfg.Data.Verify:
        for reader in out.values():
            reader.verify()
    print(f"data: {root}: " + ", ".join(f"{k} {len(v)}" for k, v in out.items())
          + (f" (split from {source})" if source is not None else ""), flush=True)
    return out


# -- training ------------------------------------------------------------------------------------------------
def train(cfg, data: dict, run_dir: Path, build_model) -> None:
    tr, d, t = data["train"], cfg.Data, cfg.Training
    layout.require_labels(tr.paths)
    kw = dict(patch=d.Patch, size=d.Size, fg_fraction=d.ForegroundFraction, channels=d.Channels)
    ds = pipeline.case_dataset(tr, d.Classes, t.BatchSize, augment=d.Augment, shuffle=True, seed=cfg.Run.Seed,
                               repeat=True, **kw)
    steps = t.StepsPerEpoch or max(1, math.ceil(len(tr) / t.BatchSize))
    val, val_steps = None, None
    if len(data["val"]) and data["val"].has_labels():
        val = pipeline.case_dataset(data["val"], d.Classes, t.BatchSize, seed=cfg.Run.Seed + 1, **kw)
        val_steps = max(1, math.ceil(len(data["val"]) / t.BatchSize))
    start = time.time()
    training.fit(build_model, ds, steps, t.Epochs, run_dir, t, val, val_steps,
                 strategy=distribute.strategy_for(cfg.Distribute.Strategy))
    print(f"trained to epoch {t.Epochs} in {time.time() - start:.0f} s; weights: "
          f"{run_dir / training.FINAL_WEIGHTS}\nnew scans: python run.py --cfg {run_dir / 'config.ini'} --mode "
          f"predict --input DIR --out OUT", flush=True)


# -- applying a model to whole cases -------------------------------------------------------------------------
def segment_one(cfg, prepared: cases.PreparedCase, predict, batch_size: int) -> np.ndarray:
    """Per-voxel values (class probabilities [+ uncertainty]) of one case at the input's own grid."""
    window = window_of(cfg)
    if window:
        from ldseg_suite.inference.sliding_window import sliding_window

        inf = cfg.Inference
        values = sliding_window(prepared.image, predict, window, inf.Overlap, inf.Blend, batch_size)
    else:
        values = np.asarray(predict(prepared.image[None]))[0]
    return cases.to_input_grid(values, prepared)


def segment_cases(cfg, reader, predict, batch_size: int, progress: bool = True):
    """Yield (prepared case, values at the input grid) for every case of ``reader``, with a progress bar.

    Whole-case (resize) mode batches ``batch_size`` cases per call; window mode batches windows.
    """
    bar = keras.utils.Progbar(len(reader), unit_name="case", verbose=bar_verbosity()) if progress else None
    if window_of(cfg):
        for prepared in reader:
            yield prepared, segment_one(cfg, prepared, predict, batch_size)
            if bar:
                bar.add(1)
        return
    for i in range(0, len(reader), batch_size):
        chunk = [reader[j] for j in range(i, min(i + batch_size, len(reader)))]
        values = np.asarray(predict(np.stack([c.image for c in chunk])))
        for prepared, v in zip(chunk, values):
            yield prepared, cases.to_input_grid(v, prepared)
            if bar:
                bar.add(1)


def _summarise(row: dict, classes: int) -> dict:
    """Add dice/iou/hd95 as the mean over foreground classes (or the one foreground class)."""
    for m in ("dice", "iou", "hd95"):
        row[m] = float(np.nanmean([row[f"{m}_{c}"] for c in range(1, classes)])) if classes > 2 \
            else row.pop(f"{m}_1")
    return row


def score_rows(cfg, case: layout.Case, labels: np.ndarray) -> list[dict]:
    """Metric rows of one case: one row, or one per frame for 2D+t (frames scored as 2D images)."""
    k, spacing = cfg.Data.Classes, case.geometry.spacing
    if cfg.Data.Kind != "2d+t":
        return [_summarise({"case": case.name, **metrics.per_class(labels, case.label, k, spacing)}, k)]
    return [_summarise({"case": case.name, "frame": f,
                        **metrics.per_class(labels[..., f], case.label[..., f], k, spacing[:2])}, k)
            for f in range(labels.shape[-1])]


def dice_rows(cfg, case: layout.Case, labels: np.ndarray) -> list[float]:
    """The ``dice`` of ``score_rows`` alone (no surface distances): mean foreground Dice per case or frame."""
    k = cfg.Data.Classes
    pairs = [(labels, case.label)] if cfg.Data.Kind != "2d+t" else \
        [(labels[..., f], case.label[..., f]) for f in range(labels.shape[-1])]
    return [float(np.mean([metrics.dice(p == c, t == c) for c in range(1, k)])) for p, t in pairs]


def class_names(cfg) -> tuple | None:
    """Class names from ``[Data] Root/dataset.json`` (MSD / nnU-Net), or None (numbers are used)."""
    if cfg.Data.Binarize or not Path(cfg.Data.Root).is_dir():
        return None
    info = layout.dataset_info(cfg.Data.Root)
    return tuple(info.class_names) if info is not None and info.class_names else None


def name_columns(table: pd.DataFrame, cfg) -> pd.DataFrame:
    """``dice_1`` -> ``dice_<class name>`` (and iou_, hd95_) when the data set names its classes."""
    names = class_names(cfg)
    if not names:
        return table
    return table.rename(columns={f"{m}_{c}": f"{m}_{names[c]}" for m in ("dice", "iou", "hd95")
                                 for c in range(1, len(names))})


def mean_row(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a last row ``case = mean`` (numeric columns averaged)."""
    mean = {"case": "mean", **table.drop(columns=["case", "frame"], errors="ignore").mean(numeric_only=True)}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def write_prediction(pred_dir: Path, case: layout.Case, labels: np.ndarray, suffix: str = "") -> Path:
    """A label map at the input's own grid: PNG for 2D, NIfTI with the input's geometry otherwise."""
    if case.image.ndim == 3:  # 2D image (H, W, C)
        return readers.write_png(pred_dir / f"{case.name}{suffix}.png", labels.astype(np.uint8))
    path = pred_dir / f"{case.name}{suffix}.nii.gz"
    if hasattr(readers, "write_nifti_like"):
        return readers.write_nifti_like(path, labels, case.geometry)
    return readers.write_nifti(path, labels, case.geometry.affine)


def mid_slice(a: np.ndarray, spatial: int) -> np.ndarray:
    """The middle slice along the third spatial axis of a 3D array (2D arrays pass through)."""
    return a if spatial == 2 else np.take(a, a.shape[2] // 2, axis=2)


def write_overlay(run_dir: Path, cfg, case: layout.Case, labels: np.ndarray) -> Path:
    """``overlays/<case>.png``: the image (middle slice for volumes) beside the predicted labels over it."""
    import imageio.v3 as iio

    from ldseg_suite.viz import gifs

    sd = spatial_dims(cfg.Data.Kind)
    image = mid_slice(case.image, sd)
    panels, titles = [gifs.to_rgb(image), gifs.overlay(image, mid_slice(labels, sd))], ["image", "prediction"]
    if case.label is not None:
        panels.append(gifs.overlay(image, mid_slice(case.label, sd)))
        titles.append("reference")
    frame = gifs.render(panels, titles, suptitle=case.name, layout="row", panel_inches=3.0)
    path = run_dir / "overlays" / f"{case.name}.png"
    path.parent.mkdir(exist_ok=True)
    iio.imwrite(path, frame)
    return path


def _write_outputs(cfg, pred_dir: Path, case: layout.Case, values: np.ndarray) -> np.ndarray:
    """Write the label map (and the uncertainty map when values carry one); returns the label map."""
    k = cfg.Data.Classes
    labels = np.argmax(values[..., :k], axis=-1).astype(np.uint8)
    write_prediction(pred_dir, case, labels)
    if values.shape[-1] > k:
        u8 = np.clip(values[..., k] * 2 * 255, 0, 255).astype(np.uint8)
        write_prediction(pred_dir, case, u8, suffix="_uncertainty")
    return labels


def protected_outputs(outputs: dict, mode: str, shard) -> dict:
    """A shard (``--shard K/N``) protects only its own table: the shards share ``predictions/``."""
    if shard is None or mode not in ("infer", "predict"):
        return outputs
    name = "metrics.csv" if mode == "infer" else "predict.csv"
    return {**outputs, mode: [sharding.table_name(name, *shard)]}


def _table_path(run_dir: Path, name: str, shard) -> Path:
    return run_dir / (sharding.table_name(name, *shard) if shard else name)


def _merge(run_dir: Path, name: str, shard, order) -> None:
    if shard is not None:
        merged = sharding.merge_tables(run_dir, name, shard[1], order=order)
        print(f"shard {shard[0]}/{shard[1]}: " + (f"all shards done, merged -> {merged}" if merged else
                                                  f"wrote {sharding.table_name(name, *shard)}"), flush=True)


def infer(cfg, reader, predict, batch_size: int, run_dir: Path, on_case=None, shard=None,
          train=None) -> pd.DataFrame | None:
    """Segment every case of ``reader`` (or shard K of N of them), write predictions, score the labelled ones
    into ``metrics.csv``. With ``train`` (the training cases) each labelled case also gets the Dice of the Otsu
    baseline (``otsu_dice``; its class mapping learnt on the labelled training cases), printed beside the mean."""
    if not len(reader):
        raise LDSegError(f"[Data] Split = {', '.join(map(str, cfg.Data.Split))}: the test split is empty")
    order = reader.names
    if shard is not None:
        reader = cases.CaseReader(sharding.select(reader.paths, *shard), cfg.Data)
    otsu = None
    if train is not None and any(p.label is not None for p in train.paths):
        otsu = otsu_for(train, cfg.Data.Classes)
    pred_dir = run_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    rows, start = [], time.time()
    for i, (prepared, values) in enumerate(segment_cases(cfg, reader, predict, batch_size)):
        case = prepared.case
        labels = _write_outputs(cfg, pred_dir, case, values)
        if case.label is not None:
            scored = score_rows(cfg, case, labels)
            if otsu is not None:
                for row, dice in zip(scored, dice_rows(cfg, case, otsu(case.image))):
                    row["otsu_dice"] = dice
            rows.extend(scored)
        if i < max(cfg.Output.Gifs, 1):
            write_overlay(run_dir, cfg, prepared.case, labels)
        if on_case is not None:
            on_case(i, prepared, labels)
    print(f"segmented {len(reader)} cases in {time.time() - start:.1f} s -> {pred_dir}", flush=True)
    if not rows:
        return None
    table = name_columns(mean_row(pd.DataFrame(rows)), cfg)
    atomic_csv(table, _table_path(run_dir, "metrics.csv", shard))
    _merge(run_dir, "metrics.csv", shard, order)
    mean = table.iloc[-1]
    per_class = "  ".join(f"{c} {mean[c]:.4f}" for c in table.columns if c.startswith("dice_"))
    otsu_note = f" (Otsu baseline {mean['otsu_dice']:.4f})" if "otsu_dice" in table else ""
    print(f"held-out mean ({len(reader)} cases{', per frame' if 'frame' in table else ''}): "
          f"dice {mean['dice']:.4f}{otsu_note}  iou {mean['iou']:.4f}  hd95 {mean['hd95']:.2f}  {per_class} "
          f"-> {run_dir / 'metrics.csv'}", flush=True)
    return table


# -- predict: new scans without labels -----------------------------------------------------------------------
def predict(cfg, predict_fn, batch_size: int, input_path, run_dir: Path, overwrite: bool, shard=None) -> int:
    """Segment new scans at their own geometry into ``run_dir/predictions``; one bad case is reported in
    ``predict.csv`` and on stderr and the rest go on. Cases already predicted are skipped unless ``overwrite``.
    ``shard`` (K, N) segments only cases K, K + N, ... Returns 0 when every case succeeded, 3 when some failed."""
    files = layout.find_inputs(input_path, channels=cfg.Data.Channels)
    order = [p.name for p in files]
    if shard is not None:
        files = sharding.select(files, *shard)
    pred_dir = run_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    csv_path = _table_path(run_dir, "predict.csv", shard)
    earlier = {}
    if csv_path.is_file() and not overwrite:
        earlier = {r["case"]: r for r in pd.read_csv(csv_path, dtype={"message": str}).to_dict("records")}
    ext = ".png" if cfg.Data.Kind == "2d" else ".nii.gz"
    rows, failed, skipped = [], 0, 0
    bar = keras.utils.Progbar(len(files), unit_name="case", verbose=bar_verbosity())
    reader = cases.CaseReader([], cfg.Data, cache=0)
    for paths in files:
        name, path = paths.name, paths.image
        row = {"case": name, "input": str(path), "shape": "", "spacing": "", "seconds": 0.0, "status": "ok",
               "message": ""}
        if (pred_dir / f"{name}{ext}").is_file() and not overwrite:
            rows.append({**row, **earlier.get(name, {}), "status": "ok", "message": "already predicted"})
            skipped += 1
            bar.add(1)
            continue
        start = time.time()
        try:
            case = reader.load(paths)
            row["shape"] = "x".join(map(str, case.geometry.input_shape))  # as stored (the network sees RAS+)
            row["spacing"] = "x".join(f"{s:g}" for s in case.geometry.input_spacing)
            prepared = cases.prepare(case, cfg.Data, source=path)
            getattr(predict_fn, "reset", lambda: None)()  # seeds restart per case: a mask does not depend on the
            values = segment_one(cfg, prepared, predict_fn, batch_size)  # cases before it (--shard, skipped cases)
            _write_outputs(cfg, pred_dir, case, values)
        except Exception as exc:  # noqa: BLE001 - one bad case is reported, the rest go on
            reason = str(exc) if isinstance(exc, LDSegError) else f"{path}: {exc.__class__.__name__}: {exc}"
            row.update(status="failed", message=reason.splitlines()[0] if reason else exc.__class__.__name__)
            print(f"predict: failed: {row['message']}", file=sys.stderr, flush=True)
            failed += 1
        row["seconds"] = round(time.time() - start, 3)
        rows.append(row)
        bar.add(1)
    atomic_csv(pd.DataFrame(rows), csv_path)
    _merge(run_dir, "predict.csv", shard, order)
    done = len(files) - failed
    print(f"predicted {done} of {len(files)} cases ({skipped} already done, {failed} failed) -> {pred_dir}; "
          f"table: {csv_path}", flush=True)
    return PREDICT_STATUS_FAILED if failed else 0
