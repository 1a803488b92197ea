"""Config layout of TPDM (no TensorFlow).

Two methods share one runner (``ldseg_suite.tasks.tpdm``):

- ``tpdm_score``: trains one 2D VE-SDE score model on the slices of one plane of a training volume
  (``--mode train``); its config names the shipped weights in ``[Output] Weights``.
- ``tpdm``: uses two such models (``[Models] Primary`` and ``Auxiliary`` name their training configs) to
  sample a volume (``--mode sample``) or to solve a 3D inverse problem on a held-out volume
  (``--mode reconstruct``: baseline and TPDM; ``--mode evaluate``: also the single-model ablations and the
  PSNR / SSIM table).
"""
from __future__ import annotations

from dataclasses import dataclass

from ldseg_suite.config import Schema, field
from ldseg_suite.errors import LDSegError
from ldseg_suite.sections import Distribute, Run, Training, register

PLANE_CHOICES = ("sagittal", "coronal", "axial")


@dataclass(frozen=True)
class Volume:
    Path: str = field(help="a 3D NIfTI volume (.nii / .nii.gz), intensities in [0, 1] (else min-max scaled)")
    Size: int = field(64, min=8, help="the volume is resampled (cubic) to Size^3 if it has another shape")


@dataclass(frozen=True)
class Model:
    Plane: str = field("coronal", choices=PLANE_CHOICES,
                       help="the model learns the slices of this plane (sagittal x[i], coronal x[:, j], axial "
                            "x[:, :, k])")
    BaseChannels: int = field(24, min=4)
    ChannelMult: tuple[int, ...] = field((1, 2, 2), min=1, length=(1, 2, 3, 4))
    ResBlocks: int = field(1, min=1, max=4)
    Attention: bool = field(False, help="global attention in the coarsest block")
    SigmaMin: float = field(0.01, min=1e-5, help="smallest noise level of training and sampling")
    SigmaMax: float = field(20.0, min=1e-3, help="largest noise level (about the largest distance between "
                                                 "training slices)")
    SigmaData: float = field(0.3, min=1e-3, help="data standard deviation of the preconditioning")
    InitWeights: str = field("", help="train: start from these weights instead of a random init, e.g. a model of "
                                      "the same [Model] trained at another [Data] Size (the network is "
                                      "convolutional); ignored when resuming a checkpoint; '' = random init")

    def validate(self):
        if not self.SigmaMin < self.SigmaMax:
            raise LDSegError(f"SigmaMin = {self.SigmaMin} must be smaller than SigmaMax = {self.SigmaMax}")


@dataclass(frozen=True)
class Augment:
    Flip: bool = field(True, help="random left-right flips (not for sagittal slices)")
    Shift: int = field(4, min=0, help="random shifts of up to Shift pixels in each direction")
    Intensity: float = field(0.15, min=0.0, max=0.9, help="random intensity scale in [1 - I, 1 + I] and gamma "
                                                           "in [1 - I, 1 + I]")


@dataclass(frozen=True)
class Models:
    Primary: str = field(help="training config (method tpdm_score) of the primary model, e.g. "
                              "cfg/tpdm_train_primary.ini; its [Output] Weights are loaded")
    Auxiliary: str = field(help="training config of the auxiliary model (perpendicular plane)")


@dataclass(frozen=True)
class Sampler:
    Steps: int = field(100, min=2, help="noise levels N (geometric from SigmaMax to SigmaMin of the primary)")
    SigmaMax: float = field(0.0, min=0.0, help="start of the chain (0 = the primary model's SigmaMax)")
    SigmaMin: float = field(0.0, min=0.0, help="end of the chain (0 = the primary model's SigmaMin)")
    Start: str = field("noise", choices=("noise", "baseline"),
                       help="x_T: pure noise N(0, SigmaMax^2 I), or the baseline reconstruction plus that noise "
                            "(come-closer-diffuse-faster, Chung et al. 2022; use with a small SigmaMax)")
    StartNoise: float = field(1.0, min=0.0, help="Start = baseline: x_T = baseline + StartNoise * SigmaMax * z "
                                                 "(0 = the baseline itself, for Predictor = tweedie with Eta = 0)")
    Predictor: str = field("reverse", choices=("reverse", "tweedie"),
                           help="reverse: reverse-diffusion sampling; tweedie: each step jumps to the denoised "
                                "estimate D(x, sigma) (+ Eta * next sigma * noise), with Eta = 0 an annealed "
                                "plug-and-play point estimate")
    Eta: float = field(0.0, min=0.0, max=1.0, help="tweedie: noise re-injected, as a fraction of the next sigma")
    CorrectorSteps: int = field(1, min=0, max=10, help="Langevin corrector steps per noise level")
    SNR: float = field(0.16, min=0.0, help="signal-to-noise ratio of the Langevin corrector")
    K: float = field(2.0, min=0.0, help="the auxiliary acts on every K-th step (integer K) or with probability "
                                        "1/K (non-integer K); 0 = primary only")
    SliceBatch: int = field(64, min=1, help="slices per network call")
    AuxSigmaScale: float = field(1.0, min=1e-3, max=10.0,
                                 help="the auxiliary model is told the noise level AuxSigmaScale * sigma_i on its "
                                      "steps (1 = the chain's level)")
    PredictorNoise: bool = field(True, help="reverse: add the predictor's noise (false: carry the predictor's mean "
                                            "as the reference TPDM code does; noise then comes from the corrector)")

    def validate(self):
        if self.SigmaMin and self.SigmaMax and not self.SigmaMin < self.SigmaMax:
            raise LDSegError(f"SigmaMin = {self.SigmaMin} must be smaller than SigmaMax = {self.SigmaMax}")


@dataclass(frozen=True)
class Problem:
    Task: str = field("zsr", choices=("zsr", "csmri", "svct"),
                      help="zsr: z-axis super-resolution; csmri: compressed-sensing MRI; svct: sparse-view CT")
    Factor: int = field(4, min=2, help="zsr: z-slices averaged per measured slice")
    Acceleration: float = field(8.0, min=1.0, help="csmri: k-space undersampling factor of the Poisson-disc mask")
    MaskSeed: int = field(0, min=0, help="csmri: seed of the mask")
    Views: int = field(18, min=1, help="svct: projection angles in [0, 180)")
    NoiseStd: float = field(0.0, min=0.0, help="Gaussian noise added to the measurements")
    Weight: float = field(1.0, min=0.0, help="DPS step: x -= Weight * grad ||y - A(x0_hat)||")
    Jacobian: str = field("identity", choices=("exact", "identity"),
                          help="DPS gradient through the network (exact) or with d x0_hat / dx = I (identity)")
    Projection: float = field(0.0, min=0.0, max=1.0,
                              help="data-consistency projection on the DPS steps: x += Projection * pinv(y - A x) "
                                   "(Song et al. 2022); 0 = off, 1 = hard projection")
    DCSteps: str = field("primary", choices=("primary", "all"),
                         help="data consistency (DPS / projection) on the primary model's steps or on every step")
    CGIters: int = field(0, min=0, max=100,
                         help="projection pinv: 0 = the task's own (ZSR, CS-MRI exact; SV-CT the FBP), n > 0 = n "
                              "conjugate-gradient (CGLS) iterations on min ||A d - r||")
    Damping: float = field(1.0, min=0.0,
                           help="noisy measurements (NoiseStd > 0): the projection solves min ||A d - r||^2 + "
                                "Damping (NoiseStd / sigma_i)^2 ||d||^2 instead of A d = r (0 = hard projection)")
    Ablations: bool = field(True, help="evaluate: also run the primary-only and auxiliary-only samplers")


@dataclass(frozen=True)
class Output:
    Weights: str = field("", help="tpdm_score: the weights file the tpdm configs load ('' = the run's own)")
    GifFrames: int = field(24, min=2, help="frames of the reverse-diffusion GIF (sample: of the fly-through GIF)")


SCORE_MODES = ("train",)
TPDM_MODES = ("sample", "reconstruct", "evaluate")


def _validate_score(cfg):
    if cfg.Run.Mode not in SCORE_MODES:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(SCORE_MODES)}")
    levels = len(cfg.Model.ChannelMult) - 1
    if cfg.Data.Size % 2 ** levels:
        raise LDSegError(f"[Data] Size = {cfg.Data.Size}: must be divisible by 2^(len([Model] ChannelMult) - 1) "
                         f"= {2 ** levels}")


def _validate_tpdm(cfg):
    if cfg.Run.Mode not in TPDM_MODES:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(TPDM_MODES)}")
    if cfg.Problem.Task == "zsr" and cfg.Data.Size % cfg.Problem.Factor:
        raise LDSegError(f"[Problem] Factor = {cfg.Problem.Factor}: must divide [Data] Size = {cfg.Data.Size}")


RUNNER = "ldseg_suite.tasks.tpdm:run"
register("tpdm_score", Schema({"Run": Run, "Data": Volume, "Model": Model, "Augment": Augment,
                               "Training": Training, "Output": Output, "Distribute": Distribute},
                              validate=_validate_score), RUNNER)
register("tpdm", Schema({"Run": Run, "Data": Volume, "Models": Models, "Sampler": Sampler, "Problem": Problem,
                         "Output": Output}, validate=_validate_tpdm), RUNNER)
