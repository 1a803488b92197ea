"""Config layout of 2D image generation (ebm, lebm_2d, lsd_ebm_2d) and its FID classifier (no TensorFlow)."""
from __future__ import annotations

from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError
from ldseg_suite.sections import Distribute, Run, Training, register
from ldseg_suite.tasks import shape_schema
from ldseg_suite.tasks.shape_schema import Diffusion


@dataclass(frozen=True)
class Images:
    Root: str = field(help="folder with IDX files (train-images-idx3-ubyte[.gz], ... as in MNIST / Fashion-MNIST)")
    Size: int = field(32, min=8, help="images are zero-padded (or centre-cropped) to Size x Size")
    Limit: int = field(0, min=0, help="use the first Limit training images (0 = all)")


@dataclass(frozen=True)
class Model:
    LatentDim: int = field(32, min=2)
    BaseChannels: int = field(32, min=4)
    Levels: int = field(3, min=1, max=5, help="stride-2 stages of the encoder (and generator)")
    Beta: float = field(1.0, min=0.0, help="weight of the KL term (per pixel)")


@dataclass(frozen=True)
class Prior(shape_schema.Prior):
    """The shape task's [Prior] keys, with the backbone taken from another generation config's weights."""
    Backbone: str = field("", help="weights file whose encoder and generator are loaded before training (of a model "
                                   "of BackboneConfig; '' = train them from scratch)")
    BackboneConfig: str = field("", help="config of the model whose weights Backbone holds, e.g. "
                                         "cfg/fashion_lebm.ini to put an LSD-EBM prior on the LEBM's generator ('' "
                                         "= this config); its [Images] Size and [Model] must equal this config's")


@dataclass(frozen=True)
class EBM:
    BaseChannels: int = field(32, min=4)
    LangevinSteps: int = field(60, min=1, help="Langevin steps per training chain")
    LangevinStepSize: float = field(4.0, min=0.0, help="step: x -= StepSize^2 / 2 * dE/dx + Noise * StepSize * N(0, I)")
    Noise: float = field(0.002, min=0.0, help="noise scale of the chain (relative to StepSize)")
    BufferSize: int = field(1000, min=1, help="replay buffer of chain states")
    Reinit: float = field(0.05, min=0.0, max=1.0, help="probability of a fresh uniform-noise start")


@dataclass(frozen=True)
class Sample:
    Samples: int = field(1000, min=2, help="generated images for FID")
    Steps: int = field(0, min=0, help="EBM: Langevin steps from noise when sampling (0 = the training steps)")
    Grid: int = field(8, min=1, help="the sample grid is Grid x Grid images")
    BatchSize: int = field(250, min=1)


@dataclass(frozen=True)
class FID:
    Classifier: str = field("weights/fashion/classifier.weights.h5", help="weights of the fid_classifier config")
    ClassifierConfig: str = field("cfg/fashion_classifier.ini", help="config the classifier was trained with")
    Compare: tuple[str, ...] = field((), help="other generation configs (with [Output] Weights) scored in the "
                                             "same run, e.g. cfg/fashion_ebm.ini")


@dataclass(frozen=True)
class Classifier:
    BaseChannels: int = field(32, min=4)
    Features: int = field(128, min=8, help="width of the feature layer used by FID")


@dataclass(frozen=True)
class Output:
    Weights: str = field("", help="weights to load for sample/infer ('' = the run's own)")


MODES = {"ebm": ("train", "sample"), "lebm_2d": ("train", "sample"), "lsd_ebm_2d": ("train", "sample"),
         "fid_classifier": ("train", "infer")}


def _validate(cfg):
    if cfg.Run.Mode not in MODES[cfg.Run.Method]:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(MODES[cfg.Run.Method])}")
    prior = getattr(cfg, "Prior", None)
    if prior is not None and not prior.TrainBackbone and not prior.Backbone:
        raise LDSegError("[Prior] TrainBackbone = false needs [Prior] Backbone (the weights to keep fixed)")
    shape_schema.check_objective(prior, cfg.Run.Method, "lsd_ebm_2d")
    if "Model" in cfg and cfg.Images.Size % 2 ** cfg.Model.Levels:
        raise LDSegError(f"[Images] Size = {cfg.Images.Size}: must be divisible by 2^[Model] Levels = "
                         f"{2 ** cfg.Model.Levels}")


RUNNER = "ldseg_suite.tasks.generate:run"
TAIL = {"Sample": Sample, "FID": FID, "Training": Training, "Output": Output, "Distribute": Distribute}
register("ebm", Schema({"Run": Run, "Images": Images, "EBM": EBM, **TAIL}, validate=_validate), RUNNER)
register("lebm_2d", Schema({"Run": Run, "Images": Images, "Model": Model, "Prior": Prior, **TAIL},
                           validate=_validate), RUNNER)
register("lsd_ebm_2d", Schema({"Run": Run, "Images": Images, "Model": Model, "Prior": Prior, "Diffusion": Diffusion,
                               **TAIL}, validate=_validate), RUNNER)
register("fid_classifier", Schema({"Run": Run, "Images": Images, "Classifier": Classifier, "Training": Training,
                                   "Output": Output, "Distribute": Distribute}, validate=_validate), RUNNER)
