"""LSD-EBM validation experiments of docs/lsd_ebm.md, section 3 (session 16): the LSD-EBM's energy fitted by
denoising score matching, scored inside its own segment sampler, on the validation shapes only.

    # a generative shape decoder (the encoder sees the full-resolution mask, the decoder only z), and the two
    # energies of the shipped configs on its latents
    python run.py --cfg cfg/vertebra_vae.ini --mode train --out runs/ae --set ThickSlice.Factor=1 \\
        --set Model.InputSkip=false
    S="--set ThickSlice.Factor=1 --set Model.InputSkip=false --set Prior.Backbone=runs/ae/model.weights.h5"
    python run.py --cfg cfg/vertebra_lebm.ini --mode train --out runs/lebm_ae $S
    python run.py --cfg cfg/vertebra_lsd_ebm.ini --mode train --out runs/lsd_ae $S
    # the same energy network fitted by denoising score matching (no MCMC)
    python scripts/lsd_ebm_validation.py fit --backbone runs/ae/model.weights.h5 --out runs/sm.npz
    # one reconstruction variant on the 60 validation + 16 fresh seed-2 shapes -> a row per shape in --results
    python scripts/lsd_ebm_validation.py score sm --backbone runs/ae/model.weights.h5 --weights runs/sm.npz \\
        --sampler segdps --start 10 --steps 15 --step-size 0.3 --start-noise 1
    python scripts/lsd_ebm_validation.py pairs sm zeroed          # paired sign and Wilcoxon tests

Session 17: the score-matching fit and the denoised data term are in the package (cfg/vertebra_gen_*.ini), and
``recon`` scores one shipped config exactly as ``--mode compare`` reconstructs (validation split by default):

    python scripts/lsd_ebm_validation.py recon lsd --cfg cfg/vertebra_gen_lsd_ebm.ini
    python scripts/lsd_ebm_validation.py recon lsd_zero --cfg cfg/vertebra_gen_lsd_ebm.ini --zero
    python scripts/lsd_ebm_validation.py recon lebm --cfg cfg/vertebra_gen_lebm.ini
    python scripts/lsd_ebm_validation.py recon upsampling                 # --task cfg/vertebra_lsd_ebm.ini: factor 8

The score-matching fit uses the LSD-EBM's own parameterisation: the marginal energy of the diffused latent z_t is
M(z, t) = |z|^2 / 2 + E(sqrt(1 - beta_{t+1}) z, t) / beta_{t+1}, exactly the terms of the LSD-EBM's conditional
chain energy besides the tether |z_{t+1} - sqrt(1 - beta) z_t|^2 / (2 beta); it is fitted on z_t = sqrt(1 - v_t) u
+ sqrt(v_t) eps (u the standardised posterior latent, v_t = max(1 - alpha_bar_t, 0.05^2)) by minimising
|sqrt(v_t) dM/dz - eps|^2. Samplers: ``refine`` (each model's own posterior_refine), ``seg`` / ``segdps`` (the
LSD-EBM's segment chain from segment ``--start``, the data term on z_t or on its N(0, I) denoised mean
sqrt(alpha_bar_t) z_t), ``marg`` (LEBM's chain on the LSD-EBM's learnt marginal of segment 0), and the baselines
``vae`` (the encoder's mean, decoded) and ``upsampling`` (the network input thresholded at 0.5).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMIN = 0.05  # the noise of segment 0 in the score-matching fit (its marginal is the data's)


def load_cfg(name: str, factor: int, backbone: str | None, split: str = "val"):
    from ldseg_suite import config, sections

    sets = [f"ThickSlice.Factor={factor}"] + ([f"Compare.Split={split}"] if name == "lsd_ebm" else [])
    if backbone:
        sets += ["Model.InputSkip=false"] + ([f"Prior.Backbone={backbone}"] if name != "vae" else [])
    return config.load(Path("cfg") / f"vertebra_{name}.ini", sections.schema_for, sets)


def splits(cfg):
    from ldseg_suite.tasks.common import load_splits

    run = Path("runs/lsd_ebm_validation")
    run.mkdir(parents=True, exist_ok=True)
    return load_splits(cfg.Data, cfg.Run.Seed, run)


def zero_energy(model) -> None:
    """The learnt part of the energy set to zero: the chain's Gaussian terms are all that is left."""
    for w in model.energy.out.weights:
        w.assign(np.zeros(w.shape, "float32"))


def encoder_inputs(cfg, part, generative: bool):
    """What the energies were trained on: the full-resolution masks (generative decoder) or the thick-slice
    network inputs (the shipped amortised VAE)."""
    from ldseg_suite.tasks import shapes

    target, _, thick = shapes.masks_and_inputs(cfg, part)
    return target[..., None] if generative else thick


def fit(args) -> None:
    import keras
    import tensorflow as tf

    from ldseg_suite.tasks import shapes

    cfg = load_cfg("lsd_ebm", 1 if args.backbone else 8, args.backbone)
    data = splits(cfg)
    keras.utils.set_random_seed(args.seed)  # before the energy's weights are drawn
    model = shapes.build_model(cfg)
    shapes.init_backbone(model, cfg)
    x = encoder_inputs(cfg, data["train"], bool(args.backbone))
    x = np.concatenate([x, x[:, ::-1]])  # + flips along the first axis (training flips every axis)
    mean, logvar = (np.concatenate(a) for a in zip(*[model.encode(x[i:i + 32]) for i in range(0, len(x), 32)]))
    std = np.exp(0.5 * np.asarray(logvar))
    mean = np.asarray(mean)
    rng = np.random.default_rng(args.seed)

    def posterior(idx):
        return tf.constant(mean[idx] + std[idx] * rng.standard_normal(std[idx].shape), tf.float32)

    for _ in range(400):
        model.standardizer.update(posterior(rng.integers(0, len(mean), 256)))
    var = tf.maximum(1 - model.alpha_bar[:-1], SMIN ** 2)  # of z_t, t = 0 .. T - 1
    energy, opt = model.energy, tf.keras.optimizers.Adam(1e-3)

    def loss_of(u0, t, eps):
        v = tf.gather(var, t)[:, None]
        z = tf.sqrt(1 - v) * u0 + tf.sqrt(v) * eps
        beta = tf.gather(model.beta, t)
        with tf.GradientTape() as tape:
            tape.watch(z)
            m = 0.5 * tf.reduce_sum(z ** 2, -1) + energy(tf.sqrt(1 - beta)[:, None] * z, t) / beta
        return tf.reduce_sum((tf.sqrt(v) * tape.gradient(m, z) - eps) ** 2, -1)

    @tf.function
    def step(u0, t, eps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_of(u0, t, eps))
        grads = tape.gradient(loss, energy.trainable_variables)  # the output bias has none: it is a constant
        opt.apply_gradients([(g, v) for g, v in zip(grads, energy.trainable_variables) if g is not None])
        return loss

    start = time.time()
    for k in range(args.steps):
        if k == int(0.7 * args.steps):
            opt.learning_rate.assign(3e-4)
        idx = rng.integers(0, len(mean), 256)
        t = tf.constant(rng.integers(0, model.segments, 256), tf.int32)
        loss = step(model.to_unit(posterior(idx)), t, tf.constant(rng.standard_normal(mean[idx].shape), tf.float32))
        if k % 1000 == 0 or k == args.steps - 1:
            print(f"step {k}: loss {float(loss):.2f} ({time.time() - start:.0f} s)", flush=True)

    vx = encoder_inputs(cfg, data["val"], bool(args.backbone))
    vm, vl = (np.asarray(a) for a in model.encode(vx))
    r = np.random.default_rng(1)
    u0 = model.to_unit(tf.constant(vm + np.exp(0.5 * vl) * r.standard_normal(vm.shape), tf.float32))
    eps = tf.constant(r.standard_normal(vm.shape), tf.float32)
    fitted = [float(tf.reduce_mean(loss_of(u0, tf.fill((len(vm),), k), eps))) for k in range(model.segments)]
    np.savez(args.out, *[w.numpy() for w in model.prior_weights()])
    zero_energy(model)
    gauss = [float(tf.reduce_mean(loss_of(u0, tf.fill((len(vm),), k), eps))) for k in range(model.segments)]
    print("held-out score-matching loss per segment t: fitted / zero net (the standardised Gaussian)")
    for k in range(model.segments):
        print(f"  t = {k:2d} (noise {float(np.sqrt(var[k])):.3f}): {fitted[k]:7.2f} / {gauss[k]:7.2f}")
    print(f"saved {args.out} ({time.time() - start:.0f} s)")


def load_model(args, factor: int):
    from ldseg_suite.tasks import shapes

    cfg = load_cfg("lsd_ebm" if args.model == "lsd" else "lebm", factor, args.backbone)
    model = shapes.build_model(cfg)
    weights = args.weights or cfg.Output.Weights
    if str(weights).endswith(".npz"):
        shapes.init_backbone(model, cfg, quiet=True)
        stored = np.load(weights)
        for w, key in zip(model.prior_weights(), sorted(stored.files, key=lambda s: int(s.split("_")[1]))):
            w.assign(stored[key])
    else:
        shapes.load_model_weights(model, cfg, Path(weights), "--weights")
    if args.zero:
        zero_energy(model)
    return cfg, model


def score(args) -> None:
    import tensorflow as tf
    from keras import ops

    from ldseg_suite.diffusion.langevin import LangevinSampler
    from ldseg_suite.inverse.slices import SliceAverage
    from ldseg_suite.tasks import shape_compare

    factor = args.factor
    scfg = load_cfg("lsd_ebm", factor, args.backbone, args.split)
    _, names, target, observed, thick = shape_compare.scored_shapes(scfg, splits(scfg))
    cfg, model = load_model(args, factor)
    op = SliceAverage(factor, axis=-2)
    fit = model.data_energy(op.forward, args.data_weight)

    def segment_energy(y, cond):
        beta = ops.take(model.beta, cond[1])
        z = y / ops.sqrt(1 - beta)[:, None]
        if args.sampler == "segdps":  # the N(0, I) posterior mean of z_0 given z_t
            z = z * ops.sqrt(ops.take(model.alpha_bar, cond[1]))[:, None]
        return model.chain_energy(y, cond) + fit(z, cond[2], cond[3])

    def marginal_energy(u, cond):
        b1 = model.beta[0]
        t0 = tf.zeros_like(u[:, 0], dtype=tf.int32)
        return 0.5 * ops.sum(u ** 2, -1) + model.energy(ops.sqrt(1 - b1) * u, t0) / b1 + fit(u, *cond)

    energy = {"seg": segment_energy, "segdps": segment_energy, "marg": marginal_energy}.get(args.sampler)
    chain = energy and LangevinSampler(energy, args.steps, args.step_size, args.noise)

    def latent(x, y, seed):
        obs = (tf.constant(y, tf.float32), tf.constant(x, tf.float32))
        if args.sampler == "vae":
            return model.encode(x)[0]
        if args.sampler == "refine":
            extra = dict(start=args.start, start_noise=args.start_noise) if args.model == "lsd" else {}
            return model.posterior_refine(x, y, op.forward, args.steps, args.step_size, args.data_weight,
                                          args.noise, seed=seed, **extra)
        mean = model.to_unit(model.encode(x)[0])
        if args.sampler == "marg":
            return model.from_unit(chain(mean, obs, seed)["x"])
        ab = float(model.alpha_bar[args.start])
        z = ab ** 0.5 * mean + args.start_noise * (1 - ab) ** 0.5 * tf.random.stateless_normal(
            tf.shape(mean), [seed, 11])
        return model.from_unit(model.reverse(chain, z, args.start, seed, obs, args.start_noise)[0])

    start, probs = time.time(), []
    for i in range(0, len(thick) if args.sampler != "upsampling" else 0, 4):
        x, y = thick[i:i + 4], observed[i:i + 4]
        p = 0.0
        for c in range(args.chains):
            z = latent(x, y, cfg.Run.Seed * 7919 + i + 100003 * c)
            p = p + np.asarray(ops.sigmoid(model.decode(z, x)))[..., 0] / args.chains
        probs.append(p)
    append_dice(args, names, (np.concatenate(probs) if probs else thick[..., 0]) > 0.5, target, start)


def append_dice(args, names, pred, target, start: float) -> None:
    """Per-shape Dice of binary ``pred`` against ``target`` appended to --results as variant ``args.name``."""
    truth = target > 0.5
    dice = 2 * (pred & truth).sum((1, 2, 3)) / (pred.sum((1, 2, 3)) + truth.sum((1, 2, 3)))
    out = Path(args.results)
    pd.DataFrame({"variant": args.name, "shape": names, "dice": dice}).to_csv(
        out, mode="a", header=not out.is_file(), index=False)
    print(f"{args.name}: Dice {dice.mean():.4f} over {len(dice)} shapes ({time.time() - start:.0f} s) -> {out}")


def recon(args) -> None:
    """One method of a shipped config (--cfg; omitted: the upsampling baseline), reconstructed exactly as
    ``--mode compare`` does (its [Reconstruct] and weights; --set overrides), on the shapes ``--mode compare`` of
    --task scores with [Compare] Split = --split."""
    from ldseg_suite import config, sections
    from ldseg_suite.tasks import shape_compare, shapes

    task = config.load(Path(args.task), sections.schema_for, [f"Compare.Split={args.split}"])
    _, names, target, observed, thick = shape_compare.scored_shapes(task, splits(task))
    start = time.time()
    if not args.cfg:
        pred = shapes.upsampling_baseline(thick[..., 0])
    else:
        cfg = config.load(Path(args.cfg), sections.schema_for, list(args.set))
        model = shapes.build_model(cfg)
        shapes.load_model_weights(model, cfg, Path(args.weights or cfg.Output.Weights), "--weights")
        if args.zero:
            zero_energy(model)
        pred = shapes.reconstruct(model, cfg, thick, observed) > 0.5
    append_dice(args, names, pred, target, start)


def pairs(args) -> None:
    from scipy import stats

    table = pd.read_csv(args.results).drop_duplicates(["variant", "shape"], keep="last")
    dice = table.pivot(index="shape", columns="variant", values="dice")
    a, b = args.a, args.b
    diff = (dice[a] - dice[b]).dropna()
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    p_sign = stats.binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    p_rank = stats.wilcoxon(diff).pvalue if diff.any() else 1.0
    print(f"{a} ({dice[a].mean():.4f}) vs {b} ({dice[b].mean():.4f}): {wins} / {losses}, sign test p = "
          f"{p_sign:.2g}, Wilcoxon p = {p_rank:.2g}, mean difference {diff.mean():+.4f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit the LSD-EBM energy by denoising score matching")
    f.add_argument("--backbone", help="a shape decoder's weights (omit: the shipped amortised VAE, factor 8)")
    f.add_argument("--out", required=True)
    f.add_argument("--steps", type=int, default=6000)
    f.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="score one reconstruction variant on the validation shapes")
    s.add_argument("name")
    s.add_argument("--model", choices=("lsd", "lebm"), default="lsd")
    s.add_argument("--backbone", help="as for fit (omit: the shipped amortised VAE)")
    s.add_argument("--weights", help="an energy: .npz from fit, or a run's weights file (default: shipped)")
    s.add_argument("--zero", action="store_true", help="the same chain with the learnt energy set to zero")
    s.add_argument("--sampler", choices=("refine", "seg", "segdps", "marg", "vae", "upsampling"), default="refine")
    s.add_argument("--factor", type=int, default=16)
    s.add_argument("--split", choices=("val", "test"), default="val")
    s.add_argument("--start", type=int, default=1)
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--step-size", type=float, default=0.1)
    s.add_argument("--data-weight", type=float, default=100.0)
    s.add_argument("--noise", type=float, default=0.0)
    s.add_argument("--start-noise", type=float, default=1.0)
    s.add_argument("--chains", type=int, default=1)
    r = sub.add_parser("recon", help="score one method of a config as --mode compare reconstructs it")
    r.add_argument("name")
    r.add_argument("--cfg", help="the method's config (omit: the upsampling baseline)")
    r.add_argument("--task", default="cfg/vertebra_gen_lsd_ebm.ini", help="config whose [Compare] shapes are scored")
    r.add_argument("--split", choices=("val", "test"), default="val")
    r.add_argument("--weights", help="weights instead of the config's [Output] Weights")
    r.add_argument("--zero", action="store_true", help="the same chain with the learnt energy set to zero")
    r.add_argument("--set", action="append", default=[], help="a config override, SECTION.KEY=VALUE")
    p = sub.add_parser("pairs", help="paired tests of two scored variants")
    p.add_argument("a")
    p.add_argument("b")
    for q in (s, r, p):
        q.add_argument("--results", default="runs/lsd_ebm_validation.csv")
    args = parser.parse_args(argv)
    {"fit": fit, "score": score, "recon": recon, "pairs": pairs}[args.command](args)


if __name__ == "__main__":
    main()
