#!/usr/bin/env python
"""Four ways of running the same DDIM / DDPM reverse loop on the same denoiser weights and inputs.

(a) the anchor's way: a Python loop calling ``denoiser.predict()`` once per step, numpy updates;
(b) an eager Python loop calling the model directly (TF step functions);
(c) our sampler: the whole loop in one ``tf.function``;
(d) (c) with ``jit_compile=True`` (XLA).

Warm-up excluded; each figure is the median of several runs; ratios are to (a) in the same run.

usage: python benchmarks/sampler.py [--quick] [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ldseg_suite  # noqa: E402,F401  (before TensorFlow loads: sets the Keras backend and oneDNN)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import machine, markdown_table, write_csv  # noqa: E402
from ldseg_suite.diffusion.samplers import DiffusionSampler, ddim_step, ddpm_step, initial_noise  # noqa: E402
from ldseg_suite.diffusion.schedules import alphas_cumprod, betas, ddim_timesteps  # noqa: E402
from ldseg_suite.nets.unet import UNet  # noqa: E402

LATENT_CH, COND_CH = 4, 16


def make_denoiser(spatial, base=32, mult=(1, 2), seed=0) -> keras.Model:
    """A functional model [concat(z_t, z_i), t] -> eps, as LDSeg's denoiser (about 0.5M parameters)."""
    keras.utils.set_random_seed(seed)
    x = keras.Input(shape=tuple(spatial) + (LATENT_CH + COND_CH,))
    t = keras.Input(shape=(), dtype="int32")
    out = UNet(LATENT_CH, len(spatial), base, mult, attention=True)([x, t])
    model = keras.Model([x, t], out)
    # give the zero-initialised output layer weights, so the loop does real work on every path
    for w in model.weights:
        if "out_conv" in w.path and "kernel" in w.path:
            w.assign(np.random.default_rng(seed).normal(0, 0.02, w.shape).astype("float32"))
    return model


def schedule(kind, steps, T=1000):
    """(alphas_cumprod, timesteps, alpha_bar and previous alpha_bar per step) of a linear schedule."""
    acp = alphas_cumprod(betas("linear", T))
    ts = ddim_timesteps(T, steps) if kind == "DDIM" else np.arange(T - 1, -1, -1, dtype=np.int32)
    prev = np.concatenate([acp[ts[1:]], [1.0]]).astype(np.float32)
    return acp, ts, acp[ts], prev


def step_noise(shape, seed, i):
    return tf.random.stateless_normal(shape, tf.constant([seed, i], tf.int32))


def predict_loop(model, x_T, cond, kind, steps, eta=0.0, seed=0, clip=None, record=None, T=1000):
    """(a) The anchor's way: model.predict() per step, DDIM/DDPM update in numpy."""
    _, ts, ab_all, prev_all = schedule(kind, steps, T)
    x = np.asarray(x_T, np.float32)
    cond = np.asarray(cond, np.float32)
    for i, t in enumerate(ts):
        eps = model.predict([np.concatenate([x, cond], -1), np.full((len(x),), t, np.int32)], verbose=0)
        if record is not None:
            record.append(eps)
        ab, ab_prev = np.float32(ab_all[i]), np.float32(prev_all[i])
        x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        if clip is not None:
            x0 = np.clip(x0, -clip, clip)
            eps = (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
        noise = np.asarray(step_noise(x.shape, seed, i))
        if kind == "DDIM":
            sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = np.sqrt(ab_prev) * x0 + np.sqrt(max(1 - ab_prev - sigma ** 2, 0)) * eps + sigma * noise
        else:
            alpha = ab / ab_prev
            mean = (np.sqrt(ab_prev) * (1 - alpha) * x0 + np.sqrt(alpha) * (1 - ab_prev) * x) / (1 - ab)
            x = mean + np.sqrt((1 - alpha) * (1 - ab_prev) / (1 - ab)) * noise
        x = x.astype(np.float32)
    return x


def eager_loop(model, x_T, cond, kind, steps, eta=0.0, seed=0, clip=None):
    """(b) An eager loop calling the model directly, with the sampler's own step functions."""
    _, ts, ab_all, prev_all = schedule(kind, steps)
    x = tf.convert_to_tensor(x_T)
    for i, t in enumerate(ts):
        eps = model([tf.concat([x, cond], -1), tf.fill([x.shape[0]], int(t))], training=False)
        noise = step_noise(x.shape, seed, i)
        if kind == "DDIM":
            x, _ = ddim_step(x, eps, ab_all[i], prev_all[i], eta, noise, clip)
        else:
            x, _ = ddpm_step(x, eps, ab_all[i], prev_all[i], noise, clip)
    return x


def compiled_sampler(model, kind, steps, eta=0.0, clip=None, jit=False, capture=False, T=1000,
                     eps_fn=None) -> DiffusionSampler:
    """(c) / (d): our DiffusionSampler around the same model."""
    acp = schedule(kind, steps, T)[0]
    eps_fn = eps_fn or (lambda z, c, t: model([tf.concat([z, c], -1), t], training=False))
    return DiffusionSampler(eps_fn, acp, kind=kind,
                            steps=steps, eta=eta, clip=clip, capture=capture, jit_compile=jit)


def median_time(fn, repeats):
    fn()  # warm-up (tracing, compilation) excluded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        np.asarray(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loop_only_step_time(kind, steps, x_T, cond, jit, repeats):
    """Per-step time of the compiled loop with a free 'network' (eps = 0): the work outside the network."""
    acp = schedule(kind, steps)[0]
    s = DiffusionSampler(lambda z, c, t: tf.zeros_like(z), acp, kind=kind, steps=steps, jit_compile=jit)
    return median_time(lambda: s(x_T, cond, 0)["x0"], max(repeats, 3)) / steps


def cases(quick):
    full = [((32, 32), 1, "DDIM", 15), ((32, 32), 8, "DDIM", 15), ((32, 32), 1, "DDIM", 50),
            ((32, 32), 8, "DDIM", 50), ((8, 8, 16), 1, "DDIM", 15), ((16, 16, 16), 1, "DDIM", 15),
            ((8, 8, 16), 1, "DDIM", 50), ((32, 32), 1, "DDPM", 1000), ((8, 8, 16), 1, "DDPM", 1000)]
    if quick:
        return [((32, 32), 1, "DDIM", 15), ((8, 8, 16), 1, "DDIM", 15), ((32, 32), 1, "DDPM", 1000)]
    return full


def run(quick: bool, repeats: int):
    rows = []
    models = {}
    for spatial, batch, kind, steps in cases(quick):
        if spatial not in models:
            models[spatial] = make_denoiser(spatial)
        model = models[spatial]
        shape = (batch,) + spatial + (LATENT_CH,)
        x_T = initial_noise(shape, 0)
        cond = tf.random.stateless_normal((batch,) + spatial + (COND_CH,), [1, 2])
        eta = 0.0
        long_loop = steps >= 1000
        reps = 1 if long_loop else repeats
        ways = {}
        # (a) is too slow for 1000 steps: estimate it from its per-step time on DDIM-15 instead
        if long_loop:
            per_step = median_time(lambda: predict_loop(model, x_T, cond, "DDIM", 15), 1) / 15
            ways["a"] = (per_step * steps, "estimated from 15 steps")
            ways["b"] = (median_time(lambda: eager_loop(model, x_T, cond, "DDIM", 15), 1) / 15 * steps,
                         "estimated from 15 steps")
        else:
            ways["a"] = (median_time(lambda: predict_loop(model, x_T, cond, kind, steps, eta), reps), "")
            ways["b"] = (median_time(lambda: eager_loop(model, x_T, cond, kind, steps, eta), reps), "")
        loop_only = {}
        for name, jit in (("c", False), ("d", True)):
            s = compiled_sampler(model, kind, steps, eta, jit=jit)
            ways[name] = (median_time(lambda: s(x_T, cond, 0)["x0"], reps), "")
            loop_only[name] = loop_only_step_time(kind, steps, x_T, cond, jit, repeats)
        base = ways["a"][0]
        for name, (sec, note) in ways.items():
            per_step = sec / steps
            rows.append({
                "case": f"{'x'.join(map(str, spatial))} b{batch} {kind}-{steps}", "way": name,
                "seconds": round(sec, 4), "steps/s": round(steps / sec, 1), "ratio_vs_a": round(base / sec, 1),
                "step_ms": round(1000 * per_step, 2),
                "loop_only_ms": round(1000 * loop_only[name], 3) if name in loop_only else "",
                "overhead_%": round(100 * loop_only[name] / per_step, 1) if name in loop_only else "",
                "note": note})
            print(f"  {rows[-1]['case']:<24} ({name}) {sec:8.3f} s  {rows[-1]['ratio_vs_a']:6.1f}x", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subset that finishes in a few minutes")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"# sampler benchmark ({'quick' if args.quick else 'full'}), {machine()}", flush=True)
    start = time.time()
    rows = run(args.quick, repeats)
    print()
    print("ways: (a) predict() per step + numpy, (b) eager loop, (c) one tf.function, (d) (c) + XLA; "
          "ratio = time of (a) / time of the way; loop_only_ms = a step of the same compiled loop with a free "
          "network (eps = 0); overhead = loop_only_ms / step_ms, the share of a step spent outside the network")
    print(markdown_table(rows))
    path = write_csv(rows, f"sampler{'_quick' if args.quick else ''}.csv")
    print(f"\nwritten {path} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
