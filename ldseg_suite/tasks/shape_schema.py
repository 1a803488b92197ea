"""Config layout of the thick-slice shape-reconstruction methods (no TensorFlow import)."""
from __future__ import annotations

from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError
from ldseg_suite.sections import Data, Distribute, Output, Run, Training, register


@dataclass(frozen=True)
class ThickSlice:
    Factor: int = field(4, min=1, max=16, help="z-slices averaged into one thick slice")


@dataclass(frozen=True)
class Model:
    LatentDim: int = field(100, min=2)
    BaseChannels: int = field(16, min=4)
    Levels: int = field(4, min=1, max=6, help="stride-2 stages of the encoder (and decoder)")
    Beta: float = field(1.0, min=0.0, help="weight of the KL term (per voxel)")


MODES = ("train", "infer")


def _validate(cfg):
    if cfg.Run.Mode not in MODES:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(MODES)}")
    if cfg.Data.Kind != "3d":
        raise LDSegError(f"[Data] Kind = {cfg.Data.Kind}: shape reconstruction needs Kind = 3d")
    if cfg.Data.Size[-1] % cfg.ThickSlice.Factor:
        raise LDSegError(f"[Data] Size depth {cfg.Data.Size[-1]} is not a multiple of [ThickSlice] Factor = "
                         f"{cfg.ThickSlice.Factor}")
    for n in cfg.Data.Size:
        if n % 2 ** cfg.Model.Levels:
            raise LDSegError(f"[Data] Size = {', '.join(map(str, cfg.Data.Size))}: every size must be divisible "
                             f"by 2^[Model] Levels = {2 ** cfg.Model.Levels}")


SCHEMA = Schema(sections={"Run": Run, "Data": Data, "ThickSlice": ThickSlice, "Model": Model,
                          "Training": Training, "Output": Output, "Distribute": Distribute}, validate=_validate)
register("vae", SCHEMA, "ldseg_suite.tasks.shapes:run")
