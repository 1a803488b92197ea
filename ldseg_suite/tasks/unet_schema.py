"""The config layout of the deterministic U-Net baseline (no TensorFlow import)."""
from __future__ import annotations

from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError
from ldseg_suite.sections import Data, Distribute, Inference, Output, Run, Training, check_divisible, register


@dataclass(frozen=True)
class Model:
    BaseChannels: int = field(16, min=4, help="channels of the first level")
    ChannelMult: tuple[int, ...] = field((1, 2, 4, 8), min=1, length=(1, 2, 3, 4, 5, 6),
                                         help="channel multiplier per level (levels = how often it halves + 1)")
    ResBlocks: int = field(1, min=1, max=4, help="residual blocks per level")
    Attention: bool = field(False, help="global self-attention at the coarsest level")
    Weight_CE: float = field(1.0, min=0.0, help="weight of the cross-entropy")
    Weight_Dice: float = field(1.0, min=0.0, help="weight of (1 - soft Dice)")


@dataclass(frozen=True)
class UNetInference(Inference):
    BatchSize: int = field(8, min=1, help="cases (resize mode) or windows per network call")


MODES = ("train", "infer", "predict")


def _validate(cfg):
    if cfg.Run.Mode not in MODES:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(MODES)}")
    check_divisible(cfg, 2 ** (len(cfg.Model.ChannelMult) - 1), "2^(levels-1) of [Model] ChannelMult")


SCHEMA = Schema(
    sections={"Run": Run, "Data": Data, "Model": Model, "Training": Training, "Inference": UNetInference,
              "Output": Output, "Distribute": Distribute},
    validate=_validate,
)
register("unet", SCHEMA, "ldseg_suite.tasks.unet:run")
