#!/usr/bin/env python
"""3D sliding-window inference: peak memory and time per voxel against the volume size.

A small deterministic 3D U-Net from ``ldseg_suite.nets`` (``UNet``, constant t, no attention, seeded weights,
softmax over 2 classes) is applied by ``ldseg_suite.inference.sliding_window`` (window 64^3, overlap 0.5,
Gaussian blending, 2 windows per call) to volumes of 64x64x128 (the baseline row), 128x128x256 (the LDSeg
anchor's knee size) and 256^3 (TPDM's size). Each size runs in a fresh subprocess, so its peak RSS
(``ru_maxrss`` of the child) is its own; the trace of the compiled predict is made before the clock starts.
"full-size MiB" is what the volume itself needs (image, output, weight sum; float32): the rest of the peak is
TensorFlow, the model and one batch of windows, which do not grow with the volume. "coverage" is the number
of window voxels computed per volume voxel: at overlap 0.5 it tends to 2 per axis (8 in 3D) as the volume
grows, so the time per voxel follows the coverage while the time per window stays constant.

usage: python benchmarks/window_memory.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, markdown_table, write_csv  # noqa: E402

CLASSES = 2
# (volume size, window, windows per call, U-Net base channels)
FULL = [((64, 64, 128), (64, 64, 64), 2, 8), ((128, 128, 256), (64, 64, 64), 2, 8),
        ((256, 256, 256), (64, 64, 64), 2, 8)]
QUICK = [((32, 32, 64), (32, 32, 32), 2, 8), ((64, 64, 128), (32, 32, 32), 2, 8),
         ((128, 128, 128), (32, 32, 32), 2, 8)]
GIB = 1024 ** 3


def one(spec) -> dict:
    """Child process: build the net, trace its predict, run the sliding window over one volume."""
    import resource

    import ldseg_suite  # noqa: F401  (before TensorFlow loads: sets the Keras backend and oneDNN)

    # isort: split
    import keras
    import numpy as np
    import tensorflow as tf

    from ldseg_suite.inference import sliding_window, window_starts
    from ldseg_suite.nets.unet import UNet

    size, window, batch, base = (tuple(spec[0]), tuple(spec[1]), int(spec[2]), int(spec[3]))
    keras.utils.set_random_seed(0)
    x_in = keras.Input(window + (1,))
    t_in = keras.Input((), dtype="int32")
    model = keras.Model([x_in, t_in], UNet(CLASSES, 3, base, (1, 2), attention=False)([x_in, t_in]))
    for w in model.weights:  # the output conv starts at zero: give it weights so the output is not constant
        if "out_conv" in w.path and "kernel" in w.path:
            w.assign(np.random.default_rng(0).normal(0, 0.1, w.shape).astype("float32"))
    t = tf.zeros((batch,), tf.int32)
    traces = []

    @tf.function
    def predict(x):
        traces.append(1)
        return tf.nn.softmax(model([x, t], training=False), axis=-1)

    predict(np.zeros((batch,) + window + (1,), np.float32))  # trace outside the clock
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    image = np.random.default_rng(1).standard_normal(size + (1,), dtype=np.float32)
    n_windows = len(window_starts(size, window, 0.5))
    start = time.perf_counter()
    out = sliding_window(image, predict, window, overlap=0.5, blend="gaussian", batch_size=batch)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    voxels = int(np.prod(size))
    assert np.allclose(out.sum(-1), 1.0, atol=1e-4) and len(traces) == 1
    return {"volume": "x".join(map(str, size)), "window": "x".join(map(str, window)), "batch": batch,
            "windows": n_windows, "calls": -(-n_windows // batch), "traces": len(traces),
            "full-size MiB": round(voxels * 4 * (1 + CLASSES + 1) / 2 ** 20, 1),
            "RSS before MiB": round(rss_ready), "peak RSS MiB": round(peak), "seconds": round(seconds, 2),
            "coverage": round(n_windows * int(np.prod(window)) / voxels, 2),
            "us/voxel": round(1e6 * seconds / voxels, 3), "s/window": round(seconds / n_windows, 3)}


def run_child(spec) -> dict:
    code = f"import json; from benchmarks.window_memory import one; print('@@' + json.dumps(one({spec!r})))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in res.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"window inference {spec} failed:\n{res.stderr[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32^3 windows on volumes up to 128^3 (about a minute)")
    args = ap.parse_args()
    start = time.time()
    print(f"# sliding-window memory benchmark ({'quick' if args.quick else 'full'}), {machine()}", flush=True)
    rows = []
    for spec in (QUICK if args.quick else FULL):
        row = run_child([list(spec[0]), list(spec[1]), spec[2], spec[3]])
        rows.append(row)
        print(f"  {row}", flush=True)
    for row in rows:
        row["RSS ratio"] = round(row["peak RSS MiB"] / rows[0]["peak RSS MiB"], 2)
        row["time/voxel ratio"] = round(row["us/voxel"] / rows[0]["us/voxel"], 2)
        row["time/window ratio"] = round(row["s/window"] / rows[0]["s/window"], 2)
    print("\nwindow inference of a 3D U-Net (base 8, 2 levels, no attention), overlap 0.5, Gaussian blend; "
          "each volume in its own process; ratios to the first row; RSS before = after TF import, model build "
          "and trace; coverage = window voxels computed per volume voxel (grows towards 2^3 = 8 at overlap 0.5 as the "
          "volume grows, so time per voxel grows with it while time per window stays constant)")
    print(markdown_table(rows))
    ok = all(r["peak RSS MiB"] * 2 ** 20 <= 3 * GIB for r in rows[1:])
    print(f"\npeak RSS <= 3 GiB at the larger sizes: {'yes' if ok else 'NO'}")
    path = write_csv(rows, f"window_memory{'_quick' if args.quick else ''}.csv")
    print(f"written {path} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
