"""The config layout of LDSeg (no TensorFlow import)."""
from __future__ import annotations

from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError
from ldseg_suite.sections import (
    Compare,
    Data,
    Distribute,
    Inference,
    NoiseScheduler,
    Output,
    Run,
    Sampler,
    Training,
    check_divisible,
    register,
)


@dataclass(frozen=True)
class Model:
    LatentChannels: int = field(4, min=1, help="channels of the label latent")
    ImageLatentChannels: int = field(16, min=1, help="channels of the image encoder's latent")
    Downsample: int = field(4, choices=(1, 2, 4, 8, 16), help="input size / latent size")
    BaseChannels: int = field(32, min=4)
    ChannelMult: tuple[int, ...] = field((1, 2), min=1, length=(1, 2, 3, 4), help="denoiser UNet levels")
    Attention: bool = field(True, help="global self-attention at the denoiser's coarsest level only")
    Prediction: str = field("eps", choices=("eps", "x0"),
                            help="what the denoiser predicts: the noise (the anchor) or the clean label latent")
    Weight_Noise: float = field(1.0, min=0.0, help="weight of the MSE on the prediction (noise or clean latent)")
    Weight_CE: float = field(1.0, min=0.0, help="weight of the cross-entropy on the decoded latent")
    Weight_Dice: float = field(1.0, min=0.0, help="weight of (1 - soft Dice) on the decoded latent")


@dataclass(frozen=True)
class Sweep:
    Sigma_Start: float = field(0.0, min=0.0)
    Sigma_Stop: float = field(0.2, min=0.0)
    Sigma_Step: float = field(0.01, min=1e-6)
    Gifs: int = field(1, min=0, help="cases that get a robustness GIF")

    def validate(self):
        if self.Sigma_Stop < self.Sigma_Start:
            raise LDSegError(f"Sigma_Stop = {self.Sigma_Stop} is below Sigma_Start = {self.Sigma_Start}")


MODES = ("train", "infer", "predict", "compare", "diagnose", "gif", "sweep")


def _validate(cfg):
    if cfg.Run.Mode not in MODES:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(MODES)}")
    if cfg.Sampler.Sampler == "DDIM" and cfg.Sampler.Sampling_Steps > cfg.NoiseScheduler.Timesteps:
        raise LDSegError(f"[Sampler] Sampling_Steps = {cfg.Sampler.Sampling_Steps} exceeds "
                         f"[NoiseScheduler] Timesteps = {cfg.NoiseScheduler.Timesteps}")
    check_divisible(cfg, cfg.Model.Downsample * 2 ** (len(cfg.Model.ChannelMult) - 1),
                    "[Model] Downsample x 2^(levels-1)")


SCHEMA = Schema(
    sections={"Run": Run, "Data": Data, "Model": Model, "NoiseScheduler": NoiseScheduler, "Sampler": Sampler,
              "Training": Training, "Output": Output, "Sweep": Sweep, "Inference": Inference, "Compare": Compare,
              "Distribute": Distribute},
    validate=_validate,
)
register("ldseg", SCHEMA, "ldseg_suite.tasks.ldseg:run")
