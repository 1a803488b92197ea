"""Config sections shared by the methods, and the registry of methods -> schema and runner.

Imports no TensorFlow, so a bad config is reported in well under a second.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError


@dataclass(frozen=True)
class Run:
    Method: str = field(help="which method runs (ldseg, ...)")
    Mode: str = field("infer", help="default mode when --mode is not given")
    Seed: int = field(0, min=0, help="seeds the split, initialisation, training and sampling")


@dataclass(frozen=True)
class Data:
    Root: str = field(help="data folder (relative paths are relative to the working directory)")
    Layout: str = field("auto", choices=("auto", "folders", "glas", "msd"),
                        help="folders: images/ + labels/ (any case: Image/, masks/ ...), label = stem or stem_label|"
                             "_labels|_seg|_mask|_anno|_gt; glas: name.bmp + name_anno.bmp in one folder; msd: MSD / "
                             "nnU-Net imagesTr/<case>_0000.nii.gz + labelsTr/ + dataset.json; auto: detect")
    Kind: str = field("2d", choices=("2d", "2d+t", "3d"))
    Size: tuple[int, ...] = field((64, 64), min=4, length=(2, 3), help="network input size (H, W[, D])")
    Channels: int = field(0, min=0, help="image channels (1 grey, 3 RGB); 0 = from Root/dataset.json, else 3")
    Classes: int = field(0, min=0, help="label classes including background; 0 = from Root/dataset.json, else 2")
    Binarize: bool = field(False, help="labels > 0 -> 1 (instance labels to foreground)")
    Normalize: str = field("minmax", choices=("minmax", "zscore", "range", "none"),
                           help="per case: minmax to [0, 1] or zscore; range: the fixed IntensityRange window for "
                                "every case (CT); none")
    IntensityRange: tuple[float, ...] = field((), length=(0, 2),
                                              help="Normalize = range: a_min, a_max, clipped and scaled to [0, 1] "
                                                   "(CT: e.g. -1000, 1000 HU)")
    Split: tuple[float, ...] = field((0.7, 0.1, 0.2), min=0.0, max=1.0, length=3,
                                     help="train, val, test fractions by subject (see Subject)")
    Subject: str = field("", help="regular expression naming a case's subject: its match in the case name (its "
                                  "first group, if any); cases of one subject stay in one split (e.g. ^patient\\d+ "
                                  "for patient001_frame01); empty = every case is its own subject")
    Augment: bool = field(True, help="flips, 90-degree rotations, intensity jitter")
    Orientation: str = field("RAS", choices=("RAS", "stored"),
                             help="3D NIfTI: RAS = reorient to RAS+ for the network (predictions go back in the "
                                  "input's orientation and affine); stored = the stored voxel order")
    Patch: tuple[int, ...] = field((), min=4, length=(0, 2, 3),
                                   help="train on random crops of this size at native resolution (H, W[, D]); "
                                        "empty = resize every case to Size")
    Spacing: tuple[float, ...] = field((), min=1e-6, length=(0, 2, 3),
                                       help="resample cases to this voxel spacing (mm) before patching; empty = "
                                            "native grid; predictions go back to the input grid")
    ForegroundFraction: float = field(0.33, min=0.0, max=1.0,
                                      help="share of training patches centred on a random foreground voxel")
    Cache: int = field(16, min=0, help="cases kept in memory by the lazy reader (0 = read every time)")
    Verify: bool = field(True, help="read and check every case once when a run starts (a bad file is reported "
                                    "before training; set false to skip the pass over a huge cohort)")

    def validate(self):
        if self.Classes == 1:
            raise LDSegError("Classes = 1: expected at least 2 (background + one class), or leave Classes out to "
                             "take it from dataset.json")
        self._resolve_counts()
        if abs(sum(self.Split) - 1.0) > 1e-6:
            raise LDSegError(f"Split = {', '.join(map(str, self.Split))}: the three fractions must sum to 1")
        if self.Kind == "2d" and len(self.Size) != 2:
            raise LDSegError(f"Size has {len(self.Size)} values but Kind = 2d needs 2 (H, W)")
        if self.Kind != "2d" and len(self.Size) != 3:
            raise LDSegError(f"Size has {len(self.Size)} values but Kind = {self.Kind} needs 3 (H, W, D or T)")
        for key in ("Patch", "Spacing"):
            value = getattr(self, key)
            if value and len(value) != len(self.Size):
                raise LDSegError(f"{key} has {len(value)} values but Kind = {self.Kind} needs {len(self.Size)}")
        if self.Subject:
            try:
                re.compile(self.Subject)
            except re.error as exc:
                raise LDSegError(f"Subject = {self.Subject}: not a regular expression ({exc})") from None
        if (self.Normalize == "range") != bool(self.IntensityRange):
            raise LDSegError(f"Normalize = {self.Normalize} with IntensityRange = "
                             f"{', '.join(map(str, self.IntensityRange)) or '(empty)'}: set both (Normalize = range, "
                             f"IntensityRange = a_min, a_max) or neither")
        if self.IntensityRange and self.IntensityRange[0] >= self.IntensityRange[1]:
            raise LDSegError(f"IntensityRange = {', '.join(map(str, self.IntensityRange))}: expected a_min < a_max")
        if self.Spacing and not self.Patch:
            raise LDSegError("Spacing is set but Patch is empty; resampling is for patch training at native size")

    def _resolve_counts(self):
        """Classes / Channels = 0 (left out) come from Root/dataset.json (MSD / nnU-Net), else 2 / 3; a value
        that contradicts dataset.json is an error naming both. The resolved values replace the 0s, so a run's
        config.ini records them."""
        from pathlib import Path

        from ldseg_suite.data import layout

        info = layout.dataset_info(self.Root) if self.Root and Path(self.Root).is_dir() else None
        classes, channels, _ = layout.resolve_counts(info, self.Classes, self.Channels, self.Binarize)
        object.__setattr__(self, "Classes", classes)  # frozen: filled in once, while the config is parsed
        object.__setattr__(self, "Channels", channels)


@dataclass(frozen=True)
class NoiseScheduler:
    Scheduler: str = field("linear", choices=("linear", "cosine"))
    Beta_0: float = field(1e-4, min=0.0, max=1.0, help="first beta of the linear schedule")
    Beta_T: float = field(0.02, min=0.0, max=1.0, help="last beta of the linear schedule")
    Timesteps: int = field(1000, min=2, max=100000)

    def validate(self):
        if self.Scheduler == "linear" and not self.Beta_0 < self.Beta_T:
            raise LDSegError(f"Beta_0 = {self.Beta_0} must be smaller than Beta_T = {self.Beta_T}")


@dataclass(frozen=True)
class Sampler:
    Sampler: str = field("DDIM", choices=("DDIM", "DDPM"))
    Sampling_Steps: int = field(15, min=1, help="DDIM steps (DDPM always uses all Timesteps)")
    Sigma: float = field(0.0, min=0.0, max=1.0, help="DDIM eta: 0 deterministic, 1 DDPM-like")
    Samples: int = field(1, min=1, help="samples per image; > 1 writes the mean mask and an uncertainty map")
    BatchSize: int = field(8, min=1)
    JitCompile: bool = field(False, help="compile the sampling loop with XLA")


@dataclass(frozen=True)
class Training:
    Epochs: int = field(100, min=1)
    BatchSize: int = field(8, min=1)
    LearningRate: float = field(2e-4, min=0.0, max=1.0)
    Resume: bool = field(True, help="continue from the run directory's last checkpoint")
    EMA: float = field(0.999, min=0.0, max=1.0, help="EMA momentum of the weights (0 = off)")
    ClipNorm: float = field(1.0, min=0.0, help="gradient clipping by norm (0 = off)")
    StepsPerEpoch: int = field(0, min=0, help="0 = one pass over the training set")
    Precision: str = field("float32", choices=("float32", "mixed_float16", "mixed_bfloat16"))
    JitCompile: bool = field(False)
    RunEagerly: bool = field(False, help="run the train steps op by op, not as a traced graph: for debugging, or "
                                         "a few steps of a tiny model (tracing costs ~20 CPU-s, an eager step ~1)")


@dataclass(frozen=True)
class Inference:
    Window: tuple[int, ...] = field((), min=4, length=(0, 2, 3),
                                    help="sliding-window size (H, W[, D]) on the native grid; empty = [Data] Patch, "
                                         "or resize whole cases to [Data] Size when Patch is empty too")
    Overlap: float = field(0.5, min=0.0, max=0.95, help="overlap of neighbouring windows (share of the window)")
    Blend: str = field("gaussian", choices=("gaussian", "constant"), help="how overlapping windows are averaged")


@dataclass(frozen=True)
class Compare:
    Baseline: str = field("", help="U-Net config (cfg/*_unet.ini) whose shipped weights are the baseline row")
    Samples: int = field(4, min=1, help="samples of the multi-sample LDSeg row (mean of the class probabilities)")


@dataclass(frozen=True)
class Output:
    Weights: str = field("", help="weights file to load for infer/gif/sweep ('' = the run's checkpoint)")
    Gifs: int = field(2, min=0, help="how many cases get a reverse-diffusion GIF")
    GifFrames: int = field(16, min=2, help="frames per GIF at most")


@dataclass(frozen=True)
class Distribute:
    Strategy: str = field("none", choices=("none", "mirrored", "multiworker"))


def check_divisible(cfg, factor: int, what: str) -> None:
    """[Data] Size and Patch and [Inference] Window must be divisible by the network's total downsampling."""
    for where, sizes in (("[Data] Size", cfg.Data.Size), ("[Data] Patch", cfg.Data.Patch),
                         ("[Inference] Window", cfg.Inference.Window)):
        if any(n % factor for n in sizes):
            raise LDSegError(f"{where} = {', '.join(map(str, sizes))}: every size must be divisible by {what} = "
                             f"{factor}")
    if cfg.Inference.Window and len(cfg.Inference.Window) != len(cfg.Data.Size):
        raise LDSegError(f"[Inference] Window has {len(cfg.Inference.Window)} values but Kind = {cfg.Data.Kind} "
                         f"needs {len(cfg.Data.Size)}")


# Method registry: name -> (schema, "module:function" that runs a mode). Filled by the method modules'
# schema definitions below; runners are imported lazily (they import TensorFlow).
METHODS: dict[str, tuple[Schema, str]] = {}


def register(name: str, schema: Schema, runner: str) -> None:
    METHODS[name] = (schema, runner)


def schema_for(method: str, source: str) -> Schema:
    _load_schemas()
    if method not in METHODS:
        from ldseg_suite.config import _closest

        raise LDSegError(f"{source}: [Run] Method = {method}: unknown method" + _closest(method, METHODS))
    return METHODS[method][0]


def runner_for(method: str):
    _load_schemas()
    module, func = METHODS[method][1].split(":")
    return getattr(importlib.import_module(module), func)


def _load_schemas():
    import ldseg_suite.tasks.cardiac_schema  # noqa: F401  (registers diffae, ddim, mgdcr)
    import ldseg_suite.tasks.generate_schema  # noqa: F401  (registers ebm, lebm_2d, lsd_ebm_2d, fid_classifier)
    import ldseg_suite.tasks.ldseg_schema  # noqa: F401  (registers 'ldseg')
    import ldseg_suite.tasks.shape_schema  # noqa: F401  (registers vae, lebm, lsd_ebm)
    import ldseg_suite.tasks.tpdm_schema  # noqa: F401  (registers tpdm_score, tpdm)
    import ldseg_suite.tasks.unet_schema  # noqa: F401  (registers 'unet')
