"""Config layout of the thick-slice shape-reconstruction methods vae, lebm and lsd_ebm (no TensorFlow)."""
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
    InputSkip: bool = field(True, help="the decoder's last stage sees the upsampled thick-slice input and "
                                       "corrects its logits (false: the latent alone codes the shape)")
    EncoderInput: str = field("thick", choices=("thick", "full"),
                              help="what the encoder sees in training: thick = the thick-slice input (amortised "
                                   "reconstruction); full = the full-resolution mask (a generative shape model: at "
                                   "reconstruction the encoder's mean of the thick-slice input is only the start, "
                                   "the prior and the data term do the rest; needs InputSkip = false)")


@dataclass(frozen=True)
class Prior:
    EnergyHidden: int = field(200, min=8, help="width of the latent energy MLP")
    LangevinSteps: int = field(30, min=1, help="short-run Langevin steps per chain during training/sampling")
    LangevinStepSize: float = field(0.1, min=0.0, help="Langevin step size (LSD-EBM: times sqrt(beta_t))")
    Backbone: str = field("", help="VAE weights to start encoder/decoder from ('' = train them jointly)")
    TrainBackbone: bool = field(True, help="false: keep the Backbone's encoder/decoder fixed, train the "
                                           "energy only (the exported weights then hold the energy only)")
    GradPenalty: float = field(0.0, min=0.0, help="weight of the mean squared gradient |dE/dz|^2 of the energy at "
                                                 "positives and negatives (0 = off): a smooth energy without deep "
                                                 "wells off the data for the sampling chains to drift into")
    EnergyScale: str = field("inverse_beta", choices=("inverse_beta", "one"),
                             help="LSD-EBM: the learnt energy of segment t enters its conditional as E(y, t) / "
                                  "beta_t (inverse_beta, as the weights shipped before) or as E(y, t) (one: the "
                                  "Gaussian terms dominate each segment, so a segment can move the chain by at most "
                                  "beta_t (1 - beta_t) |dE/dy|)")
    Standardize: bool = field(False, help="the energy (and LSD-EBM's diffusion) work on the latent standardised "
                                          "per dimension by the running mean / std of the training posterior "
                                          "samples (false: on the raw latent, as the weights shipped before)")
    Objective: str = field("recovery_likelihood", choices=("recovery_likelihood", "score_matching"),
                           help="LSD-EBM: how the energy is fitted: recovery likelihood (contrastive, Langevin "
                                "negatives per segment) or denoising score matching of each segment's marginal "
                                "energy |z|^2 / 2 + E(sqrt(1 - beta) z, t) / beta (no chains; the same network and "
                                "sampler)")
    EnergyActivation: str = field("leaky_relu", choices=("leaky_relu", "silu"),
                                  help="the energy MLP's activation; score matching needs silu (with leaky_relu the "
                                       "gradient dE/dz is piecewise constant and blind to the biases and to t)")
    ScoreSamples: int = field(16, min=1, help="score matching: posterior samples per training example (shape or "
                                              "image) and step, each with its own segment and noise (the batch of the "
                                              "fit is BatchSize x ScoreSamples; the encoder runs once per example)")
    ScoreMinNoise: float = field(0.05, min=0.001, max=1.0,
                                 help="score matching: noise std of segment 0's latent (the standardised latent's "
                                      "scale is 1): the finest detail the prior learns; too small, and it learns "
                                      "the training set by heart (the shape task logs val_ebm_loss against "
                                      "val_sm_gauss to show it)")
    Whiten: bool = field(False, help="the energy (and LSD-EBM's diffusion) work on the whitened latent u = L^-1 (z - "
                                     "mean), L L^T the running covariance of the training posterior samples (so "
                                     "N(0, I) in u is their full-covariance Gaussian fit; replaces Standardize)")


@dataclass(frozen=True)
class Diffusion:
    Segments: int = field(20, min=1, max=1000, help="T: diffusion segments of the latent (alpha_bar_T = 0.01)")
    Schedule: str = field("constant", choices=("constant", "linear"),
                          help="beta_t of the segments: constant (1 - 0.01^(1/T)) or linear (from 0.01 at the last "
                               "segment of sampling, so its noise barely blurs the sample, rising to what makes "
                               "alpha_bar_T = 0.01; meant for T >= 6)")


@dataclass(frozen=True)
class Reconstruct:
    Steps: int = field(30, min=0, help="posterior Langevin steps (LSD-EBM: per segment); 0 = encoder mean only")
    StepSize: float = field(0.05, min=0.0, help="posterior Langevin step size")
    DataWeight: float = field(1.0, min=0.0, help="weight of |A(decode(z)) - y|^2 over the observed thick slices")
    Noise: float = field(1.0, min=0.0, max=1.0, help="Langevin noise scale (0 = gradient descent)")
    Start: int = field(0, min=0, help="LSD-EBM: segment the encoder's mean is diffused to (0 = T // 4)")
    StartNoise: float = field(1.0, min=0.0, help="LSD-EBM: scale of the noise in the diffusion of the encoder's "
                                                "mean to Start and in each segment's initial draw (1 = as in "
                                                "training; 0 = deterministic)")
    DataTerm: str = field("noisy", choices=("noisy", "denoised"),
                          help="LSD-EBM: the data term decodes each segment's z_t (noisy) or sqrt(alpha_bar_t) z_t, "
                               "the mean of z_0 given z_t under the N(0, I) base (denoised, as in DPS)")
    Chains: int = field(1, min=1, help="posterior chains per shape (different seeds: LSD-EBM's diffused start, "
                                       "the Langevin noise); their decoded probabilities are averaged (1 = one "
                                       "chain; with Noise = 0 LEBM's chains are identical)")


@dataclass(frozen=True)
class Compare:
    VAE: str = field("cfg/vertebra_vae.ini", help="config (with [Output] Weights) of the VAE row")
    LEBM: str = field("cfg/vertebra_lebm.ini", help="config (with [Output] Weights) of the LEBM row")
    Segments: tuple[int, ...] = field((2, 15, 20), min=1, help="T values of --mode compare_steps")
    Samples: int = field(200, min=2, help="prior samples per model in --mode compare_latent")
    Split: str = field("test", choices=("test", "val"), help="split scored by --mode compare (val: for tuning "
                                                              "[Reconstruct]; never tune on test)")
    ExtraShapes: int = field(0, min=0, help="--mode compare also scores this many fresh shapes of the Generator "
                                            "(seed 1 for test, seed 2 for val; data/vertebra is seed 0), never "
                                            "trained on")
    Generator: str = field("vertebra", choices=("vertebra", "segment"),
                           help="the generator of [Data] Root's shapes and of the ExtraShapes: vertebra = "
                                "shapes.make_vertebrae (one vertebra), segment = shapes.make_segments (a lumbar "
                                "segment: a vertebra and its neighbours)")


MODES = {"vae": ("train", "infer"), "lebm": ("train", "infer"),
         "lsd_ebm": ("train", "infer", "compare", "compare_steps", "compare_latent")}


def _validate(cfg):
    modes = MODES[cfg.Run.Method]
    if cfg.Run.Mode not in modes:
        raise LDSegError(f"[Run] Mode = {cfg.Run.Mode}: expected one of {', '.join(modes)}")
    if cfg.Data.Kind != "3d":
        raise LDSegError(f"[Data] Kind = {cfg.Data.Kind}: shape reconstruction needs Kind = 3d")
    if cfg.Data.Size[-1] % cfg.ThickSlice.Factor:
        raise LDSegError(f"[Data] Size depth {cfg.Data.Size[-1]} is not a multiple of [ThickSlice] Factor = "
                         f"{cfg.ThickSlice.Factor}")
    for n in cfg.Data.Size:
        if n % 2 ** cfg.Model.Levels:
            raise LDSegError(f"[Data] Size = {', '.join(map(str, cfg.Data.Size))}: every size must be divisible "
                             f"by 2^[Model] Levels = {2 ** cfg.Model.Levels}")
    compare = getattr(cfg, "Compare", None)
    if compare is not None and compare.ExtraShapes and len(set(cfg.Data.Size)) != 1:
        raise LDSegError(f"[Compare] ExtraShapes = {compare.ExtraShapes}: the vertebra generator makes cubes, but "
                         f"[Data] Size = {', '.join(map(str, cfg.Data.Size))}")
    if cfg.Model.EncoderInput == "full" and cfg.Model.InputSkip:
        raise LDSegError("[Model] EncoderInput = full needs InputSkip = false (trained on full-resolution masks, the "
                         "input skip would hand the decoder its own target)")
    prior = getattr(cfg, "Prior", None)
    if prior is not None and not prior.TrainBackbone and not prior.Backbone:
        raise LDSegError("[Prior] TrainBackbone = false needs [Prior] Backbone (the VAE weights to keep fixed)")
    check_objective(prior, cfg.Run.Method, "lsd_ebm")


def check_objective(prior, method: str, lsd_method: str) -> None:
    """[Prior] Objective = score_matching only for ``lsd_method``, on a fixed backbone, with a smooth energy."""
    if prior is None or prior.Objective != "score_matching":
        return
    if method != lsd_method:
        raise LDSegError(f"[Prior] Objective = score_matching: only for Method = {lsd_method} (the {method} "
                         f"energy learns by contrastive divergence)")
    if prior.TrainBackbone:
        raise LDSegError("[Prior] Objective = score_matching needs TrainBackbone = false (the energy is fitted "
                         "to a fixed backbone's posterior latents)")
    if prior.EnergyActivation != "silu":
        raise LDSegError(f"[Prior] Objective = score_matching needs EnergyActivation = silu, not "
                         f"{prior.EnergyActivation} (a piecewise-linear energy's gradient cannot learn its biases "
                         f"or the segment t)")


COMMON = {"Run": Run, "Data": Data, "ThickSlice": ThickSlice, "Model": Model}
TAIL = {"Training": Training, "Output": Output, "Distribute": Distribute}
RUNNER = "ldseg_suite.tasks.shapes:run"
register("vae", Schema(sections={**COMMON, **TAIL}, validate=_validate), RUNNER)
register("lebm", Schema(sections={**COMMON, "Prior": Prior, "Reconstruct": Reconstruct, **TAIL},
                        validate=_validate), RUNNER)
register("lsd_ebm", Schema(sections={**COMMON, "Prior": Prior, "Diffusion": Diffusion, "Reconstruct": Reconstruct,
                                     "Compare": Compare, **TAIL}, validate=_validate), RUNNER)
