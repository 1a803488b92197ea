"""Config layout of the cardiac methods: diffae, ddim (2D slice priors) and mgdcr (3D reconstruction); no TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError
from ldseg_suite.sections import Distribute, NoiseScheduler, Run, Training, register


@dataclass(frozen=True)
class Phantom:
    Cases: int = field(48, min=1, help="training phantoms (seeds 0 .. Cases-1)")
    TestCases: int = field(4, min=1, help="held-out phantoms (seeds 10000 .. 10000+TestCases-1)")
    Size: int = field(64, min=16, help="in-plane size of the short-axis slices")
    Slices: int = field(16, min=4, help="short-axis slices of the full stack")
    Frames: int = field(8, min=2, help="cine frames (ED is frame 0; ES is the smallest LV)")


@dataclass(frozen=True)
class Model:
    SemanticDim: int = field(64, min=1, help="length of z_sem (diffae only)")
    BaseChannels: int = field(16, min=4)
    ChannelMult: tuple[int, ...] = field((1, 2, 4), min=1, length=(2, 3, 4), help="channels per UNet level")
    Attention: bool = field(True, help="self-attention in the UNet's coarsest block")
    Prediction: str = field("eps", choices=("eps", "v"),
                            help="what the UNet predicts: the noise, or v = sqrt(ab) eps - sqrt(1 - ab) x0 "
                                 "(Salimans & Ho 2022; well-posed at the noisiest steps, where sampling starts)")


@dataclass(frozen=True)
class Codec:
    Steps: int = field(100, min=1, help="DDIM steps of the stochastic encoder (inversion) and of the decoder")
    Samples: int = field(16, min=1, help="held-out slices of the round trip (mode roundtrip) / samples (sample)")
    RandomDraws: int = field(4, min=1, help="random x_T decoded with each held-out z_sem (mode roundtrip)")


@dataclass(frozen=True)
class Output:
    Weights: str = field("", help="weights to load ('' = the run's own)")


@dataclass(frozen=True)
class Prior:
    DiffAEConfig: str = field("cfg/cardiac_diffae.ini", help="config the DiffAE prior was trained with")
    DiffAEWeights: str = field("weights/cardiac/diffae.weights.h5")
    DDIMConfig: str = field("cfg/cardiac_ddim.ini", help="config of the DDIM prior (the ablation)")
    DDIMWeights: str = field("weights/cardiac/ddim.weights.h5")


@dataclass(frozen=True)
class Acquisition:
    KeepEvery: int = field(3, min=1, help="observed SAX slices: every KeepEvery-th (first and last always)")
    Missing: tuple[int, ...] = field((), min=0, help="further SAX slices dropped (indices)")
    Views: tuple[str, ...] = field(("2ch", "3ch", "4ch"), help="long-axis views fitted (2ch, 3ch, 4ch; "
                                                                "empty = SAX only)")

    def validate(self):
        bad = [v for v in self.Views if v not in ("2ch", "3ch", "4ch")]
        if bad:
            raise LDSegError(f"Views = {', '.join(self.Views)}: unknown view {bad[0]!r}; "
                             f"expected 2ch, 3ch, 4ch")


@dataclass(frozen=True)
class Optimise:
    Steps: int = field(10, min=1, help="K: DDIM steps of the differentiable decode (and of the inversion)")
    Iterations: int = field(40, min=1, help="Adam iterations at most")
    Init: str = field("slerp", choices=("slerp", "cubic"),
                      help="missing slices start from slerp (x_T) / lerp (z_sem) of the observed slices' codes, or "
                           "from the codes of the cubic through-plane interpolation")
    LearningRate: float = field(0.01, min=0.0, help="Adam step after the warm-up; cosine decay to a tenth at the end")
    Warmup: int = field(10, min=0, help="iterations of linear learning-rate warm-up from 0 (Adam's first steps are "
                                        "full-size whatever the gradient); early stopping waits for its end")
    SaxWeight: float = field(1.0, min=0.0, help="weight of the observed short-axis slices' MSE")
    LaxWeight: float = field(1.0, min=0.0, help="weight of the long-axis planes' MSE")
    PriorWeight: float = field(0.01, min=0.0, help="keeps each x_T on the Gaussian shell |x_T|^2 = n")
    SmoothWeight: float = field(0.01, min=0.0, help="through-plane smoothness of z_sem (|z_sem[k+1] - z_sem[k]|^2)")
    Patience: int = field(10, min=1, help="stop when the loss has not improved by 0.1% for this many iterations "
                                          "after the warm-up; the best codes are kept")
    KeepObserved: bool = field(True, help="put the measured SAX slices back into the result")
    AblationLearningRate: float = field(0.0, min=0.0, help="the DDIM ablation's own LearningRate (0 = LearningRate)")
    AblationWarmup: int = field(-1, min=-1, help="the DDIM ablation's own Warmup (-1 = Warmup)")
    AblationIterations: int = field(0, min=0, help="the DDIM ablation's own Iterations (0 = Iterations)")

    def for_method(self, method: str):
        """The optimiser settings of ``method``: the DDIM ablation has its own learning rate, warm-up and length."""
        if method != "ddim":
            return self
        from dataclasses import replace

        return replace(self, LearningRate=self.AblationLearningRate or self.LearningRate,
                       Warmup=self.Warmup if self.AblationWarmup < 0 else self.AblationWarmup,
                       Iterations=self.AblationIterations or self.Iterations)


@dataclass(frozen=True)
class Reconstruct:
    Case: int = field(0, min=0, help="held-out phantom reconstructed by --mode reconstruct")
    Frame: str = field("ed", choices=("ed", "es"), help="cardiac phase reconstructed by --mode reconstruct")
    Methods: tuple[str, ...] = field(("mgdcr", "ddim", "linear", "cubic"),
                                     help="methods of --mode evaluate (mgdcr, ddim, linear, cubic)")
    Split: str = field("test", choices=("test", "train"),
                       help="phantoms of --mode evaluate: the TestCases held-out ones, or the first TestCases training "
                            "phantoms (seeds 0 ..; for tuning the optimisers without touching the held-out ones)")

    def validate(self):
        bad = [m for m in self.Methods if m not in ("mgdcr", "ddim", "linear", "cubic")]
        if bad:
            raise LDSegError(f"Methods: unknown method {bad[0]!r}; expected mgdcr, ddim, linear, cubic")


MODES = {"diffae": ("train", "roundtrip", "sample", "interpolate"), "ddim": ("train", "roundtrip", "sample"),
         "mgdcr": ("reconstruct", "evaluate")}


def _validate(cfg):
    if cfg.Run.Mode not in MODES[cfg.Run.Method]:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(MODES[cfg.Run.Method])}")
    if "Model" in cfg and cfg.Phantom.Size % 2 ** (len(cfg.Model.ChannelMult) - 1):
        raise LDSegError(f"[Phantom] Size = {cfg.Phantom.Size}: must be divisible by 2^(levels - 1) = "
                         f"{2 ** (len(cfg.Model.ChannelMult) - 1)} of [Model] ChannelMult")
    if "Reconstruct" in cfg and cfg.Reconstruct.Case >= cfg.Phantom.TestCases:
        raise LDSegError(f"[Reconstruct] Case = {cfg.Reconstruct.Case}: must be below [Phantom] TestCases = "
                         f"{cfg.Phantom.TestCases}")


PRIOR_SECTIONS = {"Run": Run, "Phantom": Phantom, "Model": Model, "NoiseScheduler": NoiseScheduler, "Codec": Codec,
                  "Training": Training, "Output": Output, "Distribute": Distribute}
RUNNER = "ldseg_suite.tasks.cardiac:run"
register("diffae", Schema(PRIOR_SECTIONS, validate=_validate), RUNNER)
register("ddim", Schema(PRIOR_SECTIONS, validate=_validate), RUNNER)
register("mgdcr", Schema({"Run": Run, "Phantom": Phantom, "Prior": Prior, "Acquisition": Acquisition,
                          "Optimise": Optimise, "Reconstruct": Reconstruct}, validate=_validate),
         "ldseg_suite.tasks.mgdcr:run")
