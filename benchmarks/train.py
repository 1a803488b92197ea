#!/usr/bin/env python
"""LDSeg training throughput and memory, and 3D inference memory.

Each configuration runs in a fresh subprocess so its peak RSS (VmHWM) is its own. A 2048x2048 float32
matmul timed in the same run is the machine's ceiling; the model's FLOPs per training step are counted
analytically from its Conv/Dense layers (forward FLOPs x 3 for forward + backward; attention's matmuls
added), so "of matmul peak" = achieved FLOP/s / matmul FLOP/s.

usage: python benchmarks/train.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, markdown_table, matmul_gflops, peak_rss_mib, write_csv  # noqa: E402

# name, spatial size, batch, jit, base channels, channel mult, downsample
QUICK = [
    ("2D size", (64, 64), 4, False, 32, (1, 2), 4),
    ("2D size", (128, 128), 4, False, 32, (1, 2), 4),
    ("2D size", (256, 256), 4, False, 32, (1, 2), 4),
    ("2D jit", (256, 256), 4, True, 32, (1, 2), 4),
    ("2D batch", (128, 128), 1, False, 32, (1, 2), 4),
    ("2D batch", (128, 128), 8, False, 32, (1, 2), 4),
    ("3D size", (64, 64, 64), 1, False, 16, (1, 2, 2), 2),
]
FULL = QUICK + [
    ("2D batch", (128, 128), 16, False, 32, (1, 2), 4),
    ("3D size", (32, 32, 32), 1, False, 16, (1, 2, 2), 2),
    ("3D size", (48, 48, 48), 1, False, 16, (1, 2, 2), 2),
    ("3D jit", (64, 64, 64), 1, True, 16, (1, 2, 2), 2),
    ("3D batch", (32, 32, 32), 4, False, 16, (1, 2, 2), 2),
]


def conv_flops(model, spatial, batch) -> float:
    """Forward FLOPs (2 x multiply-adds) of every Conv/Dense layer plus attention matmuls, from a probe run."""
    import keras
    from keras import layers

    from ldseg_suite.nets.layers import Attention

    total = 0.0
    hooks = []

    def wrap(layer, kind):
        original = layer.call

        def call(*args, **kwargs):
            nonlocal total
            out = original(*args, **kwargs)
            x = args[0]
            if kind == "conv":
                k = layer.kernel.shape
                out_positions = 1
                for s in out.shape[1:-1]:
                    out_positions *= int(s)
                per_out = 1
                for s in k[:-1]:
                    per_out *= int(s)
                total += 2.0 * int(out.shape[0]) * out_positions * per_out * int(k[-1])
            elif kind == "dense":
                total += 2.0 * int(x.shape[0]) * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
            else:  # attention: QK^T and AV over n positions, plus 4 projections (counted by Dense inside MHA)
                n = 1
                for s in x.shape[1:-1]:
                    n *= int(s)
                total += 2 * 2.0 * int(x.shape[0]) * n * n * int(x.shape[-1])
            return out

        layer.call = call
        hooks.append((layer, original))

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (layers.Conv2D, layers.Conv3D)):
            wrap(layer, "conv")
        elif isinstance(layer, layers.Dense) or type(layer).__name__ == "EinsumDense":
            if isinstance(layer, layers.Dense):
                wrap(layer, "dense")
        elif isinstance(layer, Attention):
            wrap(layer, "attn")
    import numpy as np

    image = np.zeros((batch,) + spatial + (3 if len(spatial) == 2 else 1,), "float32")
    onehot = np.zeros((batch,) + spatial + (2,), "float32")
    model._forward(image, onehot, keras.ops.zeros((batch,), "int32"),
                   keras.ops.zeros(model.latent_shape(image.shape)))
    for layer, original in hooks:
        layer.call = original
    return total


def one(spec_json: str) -> dict:
    """Run one configuration (in this process) and return its figures."""
    import ldseg_suite  # noqa: F401  (before TensorFlow loads: sets the Keras backend and oneDNN)

    # isort: split
    import keras
    import numpy as np
    import tensorflow as tf

    from ldseg_suite.models.ldseg import LDSeg

    name, spatial, batch, jit, base, mult, down = json.loads(spec_json)
    spatial = tuple(spatial)
    channels = 3 if len(spatial) == 2 else 1
    model = LDSeg(spatial_dims=len(spatial), in_channels=channels, classes=2, base_channels=base,
                  channel_mult=mult, downsample=down, image_latent_channels=8 if len(spatial) == 3 else 16)
    model.build((None,) + spatial + (channels,))
    flops = 3.0 * conv_flops(model, spatial, batch)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, use_ema=True), jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + spatial + (channels,)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, (batch,) + spatial)]
    start = time.perf_counter()
    model.train_on_batch(x, y)  # trace / compile
    compile_s = time.perf_counter() - start
    steps, elapsed = 0, 0.0
    while steps < 3 or (elapsed < 5.0 and steps < 50):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        elapsed += time.perf_counter() - t0
        steps += 1
    step_s = elapsed / steps
    del tf
    return {"config": name, "input": "x".join(map(str, spatial)), "batch": batch, "jit": jit,
            "params_M": round(model.count_params() / 1e6, 2), "compile_s": round(compile_s, 1),
            "steps/s": round(1 / step_s, 2), "images/s": round(batch / step_s, 2),
            "GFLOP/step": round(flops / 1e9, 1), "GFLOP/s": round(flops / step_s / 1e9, 1),
            "peak_rss_MiB": round(peak_rss_mib())}


def infer_memory(spec_json: str) -> dict:
    """Peak RSS of segmenting one volume of the given size with the knee config's architecture."""
    import ldseg_suite  # noqa: F401  (before TensorFlow loads: sets the Keras backend and oneDNN)

    # isort: split
    import numpy as np
    import tensorflow as tf

    from ldseg_suite import config, sections
    from ldseg_suite.tasks.ldseg import build_model

    spatial, steps = json.loads(spec_json)
    cfg = config.load(ROOT / "cfg" / "knee.ini", sections.schema_for,
                      [f"Data.Size={','.join(map(str, spatial))}"])
    model = build_model(cfg)
    sampler = model.make_sampler("DDIM", steps)
    x = tf.constant(np.random.default_rng(0).random((1,) + tuple(spatial) + (1,)).astype("float32"))
    start = time.perf_counter()
    probs, _ = model.segment(x, sampler, seed=0)
    np.asarray(probs)
    return {"config": "3D inference (knee.ini architecture)", "input": "x".join(map(str, spatial)),
            "batch": 1, "DDIM steps": steps, "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_MiB": round(peak_rss_mib())}


def matmul_peak() -> float:
    import ldseg_suite  # noqa: F401

    return matmul_gflops() * 1e9


def subprocess_json(func: str, spec) -> dict:
    arg = json.dumps(json.dumps(spec))
    code = f"import json; from benchmarks.train import {func}; print('@@' + json.dumps({func}({arg})))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__('os').environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in res.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"{func} {spec} failed:\n{res.stderr[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--infer-size", default="128,128,256", help="3D inference memory probe size ('' to skip)")
    args = ap.parse_args()
    start = time.time()
    print(f"# LDSeg training benchmark ({'quick' if args.quick else 'full'}), {machine()}", flush=True)
    peak = matmul_peak()
    print(f"matmul ceiling (2048^2 float32): {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    for spec in (QUICK if args.quick else FULL):
        row = subprocess_json("one", spec)
        row["of_matmul_peak_%"] = round(100 * row["GFLOP/s"] * 1e9 / peak, 1)
        rows.append(row)
        print(f"  {row}", flush=True)
    print("\nFLOPs counted analytically (Conv/Dense/attention, forward x 3 for a training step); "
          "peak RSS per configuration in its own process")
    print(markdown_table(rows))
    write_csv(rows, f"train{'_quick' if args.quick else ''}.csv")
    if args.infer_size:
        spatial = [int(s) for s in args.infer_size.split(",")]
        mem = subprocess_json("infer_memory", [spatial, 2 if args.quick else 15])
        print("\n3D inference memory")
        print(markdown_table([mem]))
        write_csv([mem], f"infer_memory{'_quick' if args.quick else ''}.csv")
    print(f"\ndone in {time.time() - start:.0f} s; CSV in benchmarks/results/")


if __name__ == "__main__":
    main()
