#!/usr/bin/env python
"""Speed against MONAI at matched network cost: DDIM sampling and sliding-window inference.

Ours (TensorFlow / Keras: the sampler's plain ``tf.function`` and XLA) and MONAI (PyTorch: eager and
``torch.compile``) each run in a worker process of their own on the same number of threads. The parent
alternates single timed runs between the workers, so the load of a shared machine falls on both alike;
warm-up (tracing, compilation) is excluded and each figure is the median of the repeats. FLOPs per network
call: ours counted from the traced TensorFlow graph (Conv, MatMul, BatchMatMul and Einsum ops), MONAI's with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products): the same kinds of op on both
sides, so GFLOP/s compares work done per second even where the two networks differ a little.

Sampler rows: our LDSeg denoiser (``UNet`` on concat(z_t, z_i), as ``LDSeg`` builds it) in our
``DiffusionSampler`` against ``DiffusionModelUNet`` with the same levels, channels, res blocks, groups and
attention in the middle only, in ``DiffusionInferer.sample`` with ``DDIMScheduler`` (concat conditioning).
Window rows: ``ldseg_suite.inference.sliding_window`` against ``monai.inferers.SlidingWindowInferer`` (same
window, overlap, Gaussian blending, window batch) around deterministic U-Nets of close FLOPs; each library
and volume in a fresh process, so its peak RSS is its own.

needs (not the suite): pip install -r requirements-bench.txt, in a venv beside requirements-dev.txt
usage: python benchmarks/peers.py [--quick] [--repeats N] [--threads 2] [--only sampler|window] [--profile]
       [--omp-wait PASSIVE]   (tables: docs/performance.md; CSVs: benchmarks/results/, git-ignored)
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, markdown_table, peak_rss_mib, write_csv  # noqa: E402

LATENT_CH = 4
# LDSeg's denoisers: glas.ini (2D, base 32, mult 1,2, 16 image-latent channels), knee.ini (3D: 16; 1,2,2; 8)
DENOISER = {2: dict(base=32, mult=(1, 2), cond=16), 3: dict(base=16, mult=(1, 2, 2), cond=8)}
# the deterministic U-Nets of the window rows (1 input channel, 3 classes, window 64^3): ours as
# cfg/brain3d_unet.ini's (4 levels, 1 ResBlock each, GroupNorm, no attention) at base 12, MONAI's DynUNet
# (nnU-Net's residual U-Net) with 4 levels, filters 16..128 and GroupNorm: 27.8 and 28.2 GFLOP per window
SEG = dict(in_ch=1, classes=3, ours=dict(base=12, mult=(1, 2, 4, 8)), monai=dict(filters=(16, 32, 64, 128)))
WINDOW, OVERLAP, SW_BATCH = (64, 64, 64), 0.5, 4

SAMPLER_FULL = [(s, b, n) for n in (15, 50) for s, b in
                (((32, 32), 1), ((32, 32), 8), ((64, 64), 1), ((64, 64), 8), ((16, 16, 16), 1), ((16, 16, 16), 2))]
SAMPLER_QUICK = [((32, 32), 1, 15), ((32, 32), 8, 15), ((16, 16, 16), 1, 15)]
WINDOW_FULL = [(128, 128, 128), (128, 128, 256)]
WINDOW_QUICK = [(128, 128, 128)]
OURS_WAYS, MONAI_WAYS = ("tf.function", "XLA"), ("eager", "compile")
NEEDS = ("torch", "monai", "einops")
# torch's OpenMP threads spin-wait at every op's barrier; when the machine has more runnable threads than cores
# (a shared machine) a descheduled thread stalls every op, and MONAI ran 5-100x slower than alone (a 32x32
# DiffusionModelUNet call: 366 ms at load 9 on 2 cores, 62 ms with PASSIVE, 50 ms on 1 thread). PASSIVE gives
# MONAI its best 2-thread figure on a loaded machine; --omp-wait "" keeps the OpenMP default (quiet machines).
OMP_WAIT = "PASSIVE"


# -- workers: one library per process ---------------------------------------------------------------------
def rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads): the work of a run, whatever the machine's load
    (it includes threads' spin-waiting, which a loaded machine also inflates a little)."""
    t = os.times()
    return t.user + t.system


def tf_graph_flops(concrete) -> float:
    """FLOPs (2 x multiply-adds) of the Conv, MatMul, BatchMatMul and Einsum ops of a traced graph."""
    import numpy as np

    total = 0.0
    for op in concrete.graph.get_operations():
        kind = op.type
        if kind not in ("Conv2D", "Conv3D", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"):
            continue
        shapes = [tuple(int(d) for d in t.shape) for t in op.inputs]
        out = tuple(int(d) for d in op.outputs[0].shape)
        if kind.startswith("Conv"):
            total += 2.0 * np.prod(out) * np.prod(shapes[1][:-1])
        elif kind == "MatMul":
            total += 2.0 * np.prod(out) * shapes[0][0 if op.get_attr("transpose_a") else 1]
        elif kind.startswith("BatchMatMul"):
            total += 2.0 * np.prod(out) * shapes[0][-2 if op.get_attr("adj_x") else -1]
        else:
            eq = op.get_attr("equation").decode()
            if "..." in eq:
                raise ValueError(f"einsum with an ellipsis not counted: {eq}")
            sizes = {}
            for letters, shape in zip(eq.split("->")[0].split(","), shapes):
                sizes.update(zip(letters, shape))
            total += 2.0 * np.prod(list(sizes.values()))
    return float(total)


class OursWorker:
    """Our side: the LDSeg denoiser in DiffusionSampler, a UNet in ldseg_suite.inference.sliding_window."""

    def __init__(self, threads: int):
        import ldseg_suite  # noqa: F401  (before TensorFlow loads: sets the Keras backend and oneDNN)

        # isort: split
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

        self.tf, self.runs, self.nets, self.threads = tf, {}, {}, threads
        self.rss_start = rss_now_mib()

    def versions(self):
        import keras

        return {"tensorflow": self.tf.__version__, "keras": keras.__version__}

    def matmul(self, n: int = 2048) -> float:
        from benchmarks.common import matmul_gflops

        return matmul_gflops(n)

    def _denoiser(self, sd: int):
        import keras
        import numpy as np

        from ldseg_suite.nets.unet import UNet

        if sd not in self.nets:
            spec = DENOISER[sd]
            keras.utils.set_random_seed(0)
            net = UNet(LATENT_CH, sd, spec["base"], spec["mult"], attention=True, name="denoiser")
            net([self.tf.zeros((1,) + (8,) * sd + (LATENT_CH + spec["cond"],)), self.tf.zeros((1,), "int32")])
            for w in net.weights:  # the output conv starts at zero: give it weights, so every path does work
                if "out_conv" in w.path and "kernel" in w.path:
                    w.assign(np.random.default_rng(0).normal(0, 0.02, w.shape).astype("float32"))
            self.nets[sd] = net
        return self.nets[sd]

    def sampler_setup(self, spatial, batch, steps):
        """Build (cached per rank) and warm up the two ways of one sampler case; FLOPs of one network call."""
        tf = self.tf
        from ldseg_suite.diffusion.samplers import DiffusionSampler, initial_noise
        from ldseg_suite.diffusion.schedules import alphas_cumprod, betas

        sd = len(spatial)
        net, cond_ch = self._denoiser(sd), DENOISER[sd]["cond"]

        def eps_fn(z, c, t):  # LDSeg.denoise: the UNet on concat(z_t, z_i)
            return net([tf.concat([z, c], -1), t], training=False)

        x_in = tf.TensorSpec((batch,) + tuple(spatial) + (LATENT_CH,))
        c_in = tf.TensorSpec((batch,) + tuple(spatial) + (cond_ch,))
        flops = tf_graph_flops(tf.function(eps_fn).get_concrete_function(
            x_in, c_in, tf.TensorSpec((batch,), tf.int32)))
        acp = alphas_cumprod(betas("linear", 1000))
        x_T = initial_noise((batch,) + tuple(spatial) + (LATENT_CH,), 0)
        cond = tf.random.stateless_normal((batch,) + tuple(spatial) + (cond_ch,), [1, 2])
        compile_s, self.runs = {}, {}
        for way, jit in zip(OURS_WAYS, (False, True)):
            s = DiffusionSampler(eps_fn, acp, kind="DDIM", steps=steps, clip=1.0, jit_compile=jit)
            self.runs[way] = lambda s=s: s(x_T, cond, 0)["x0"].numpy()
            t0 = time.perf_counter()
            self.runs[way]()
            compile_s[way] = round(time.perf_counter() - t0, 1)
        return {"params": net.count_params(), "gflop_call": flops / 1e9, "calls": steps, "compile_s": compile_s}

    def window_setup(self, shape, ways):
        """A deterministic UNet (softmax output) behind our sliding window, on one random volume."""
        import keras
        import numpy as np

        tf = self.tf
        from ldseg_suite.inference.sliding_window import sliding_window

        keras.utils.set_random_seed(0)
        net = UNet_seg_ours()
        net(tf.zeros((1,) + WINDOW + (SEG["in_ch"],)))
        flops = tf_graph_flops(tf.function(lambda x: net(x)).get_concrete_function(
            tf.TensorSpec((1,) + WINDOW + (SEG["in_ch"],))))
        image = np.random.default_rng(0).random(tuple(shape) + (SEG["in_ch"],)).astype("float32")
        self.windows, compile_s, self.runs = 0, {}, {}
        for way in ways:
            fn = tf.function(lambda x: tf.nn.softmax(net(x, training=False), -1), jit_compile=way == "XLA")

            def predict(x, fn=fn):
                self.windows += len(x)
                return fn(x).numpy()

            self.runs[way] = lambda p=predict: sliding_window(image, p, WINDOW, OVERLAP, "gaussian", SW_BATCH)
            t0 = time.perf_counter()
            self.runs[way]()
            compile_s[way] = round(time.perf_counter() - t0, 1)
        return {"params": net.count_params(), "gflop_call": flops / 1e9, "compile_s": compile_s}

    def run(self, way):
        self.windows = 0
        t0, c0 = time.perf_counter(), cpu_seconds()
        self.runs[way]()
        return {"s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "windows": self.windows}

    def memory(self):
        return {"rss_start_MiB": round(self.rss_start), "peak_rss_MiB": round(peak_rss_mib())}

    def profile(self, net_kind, spatial, batch):
        """ms per network call: the whole call (plain and XLA) and, from a traced run of the plain graph, the
        time of its ops by kind (TensorFlow's step stats: the same graph, run by the same executor)."""
        import collections

        import keras
        import numpy as np
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        tf = self.tf
        sd = len(spatial)
        if net_kind == "denoiser":
            net = self._denoiser(sd)
            args = [tf.random.normal((batch,) + tuple(spatial) + (LATENT_CH + DENOISER[sd]["cond"],)),
                    tf.fill([batch], 500)]
        else:
            keras.utils.set_random_seed(0)
            net = UNet_seg_ours()
            args = [tf.random.normal((batch,) + tuple(spatial) + (SEG["in_ch"],))]
        call = (lambda x, t: net([x, t])) if net_kind == "denoiser" else (lambda x: net(x))
        # XLA's CPU Conv3D is an order of magnitude slower at 64^3 windows (44 s a call, measured): skipped there
        out = {way: {"whole call": round(_median_ms(tf.function(call, jit_compile=jit), args, star=True), 3)}
               for way, jit in zip(OURS_WAYS, (False, True)) if not (jit and net_kind != "denoiser")}
        frozen = convert_variables_to_constants_v2(tf.function(call).get_concrete_function(*args))
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=self.threads,
                                          inter_op_parallelism_threads=self.threads)
        sess = tf.compat.v1.Session(graph=graph, config=config)
        fetch, feed = [t.name for t in frozen.outputs], {t.name: a.numpy() for t, a in zip(frozen.inputs, args)}
        sess.run(fetch, feed)
        parts, runs = collections.Counter(), 3
        for _ in range(runs):
            meta = tf.compat.v1.RunMetadata()
            sess.run(fetch, feed, options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
                     run_metadata=meta)
            for dev in meta.step_stats.dev_stats:
                for node in dev.node_stats:
                    label = node.timeline_label
                    kind = label.split(" = ")[1].split("(")[0] if " = " in label else "other"
                    parts[op_category(kind)] += node.op_end_rel_micros / 1000 / runs
        sess.close()
        out[OURS_WAYS[0]].update({f"ops: {k}": round(v, 3) for k, v in sorted(parts.items())})
        out[OURS_WAYS[0]]["ops: sum"] = round(sum(parts.values()), 3)
        if net_kind == "denoiser":  # a DDIM step's own work: the compiled loop with a free network
            from ldseg_suite.diffusion.samplers import DiffusionSampler
            from ldseg_suite.diffusion.schedules import alphas_cumprod, betas

            z = tf.random.normal((batch,) + tuple(spatial) + (LATENT_CH,))
            for way, jit in zip(OURS_WAYS, (False, True)):
                s = DiffusionSampler(lambda z, c, t: tf.zeros_like(z), alphas_cumprod(betas("linear", 1000)),
                                     "DDIM", 50, clip=1.0, jit_compile=jit)
                out[way]["DDIM update (per step)"] = round(_median_ms(lambda a: s(a, z, 0)["x0"], z) / 50, 3)
        del np
        return out


# op kinds of both libraries (TensorFlow graph ops, ATen ops) by what they do
OP_CATEGORIES = [("conv", ("conv",)), ("attention matmul+softmax", ("batchmatmul", "einsum", "softmax", "bmm",
                                                                     "scaled_dot", "matmul")),
                 ("dense", ("addmm", "linear")), ("activation", ("swish", "silu", "sigmoid", "relu", "prelu")),
                 ("norm statistics", ("group_norm", "mean", "squareddifference", "rsqrt", "var", "sum")),
                 ("copies (concat, resize, pad, reshape)", ("concat", "cat", "resize", "upsample", "pad", "reshape",
                                                            "transpose", "tile", "copy", "clone", "contiguous",
                                                            "squeeze", "view", "permute", "slice", "split")),
                 ("elementwise", ("mul", "add", "sub", "div", "neg", "exp", "sqrt", "maximum", "clip", "cast"))]


def op_category(kind: str) -> str:
    k = kind.lower().replace("_mkl", "").replace("aten::", "")
    if k in ("matmul", "mm") and "batch" not in k:
        return "dense"
    for name, keys in OP_CATEGORIES:
        if any(key in k for key in keys):
            return name
    return "other"


def _median_ms(fn, arg, budget_s: float = 2.0, star: bool = False) -> float:
    """Median ms of fn(arg) (fn(*arg) with star) after a warm-up: 3 to 20 runs, as many as fit in budget_s."""
    call = (lambda: fn(*arg)) if star else (lambda: fn(arg))
    call()
    times = []
    while len(times) < 3 or (len(times) < 20 and sum(times) < budget_s):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def UNet_seg_ours():
    """The deterministic UNet of the window rows (our side)."""
    from ldseg_suite.nets.unet import UNet

    spec = SEG["ours"]
    return UNet(SEG["classes"], 3, spec["base"], spec["mult"], attention=False, time_conditioned=False)


class MonaiWorker:
    """MONAI's side: DiffusionModelUNet in DiffusionInferer.sample with DDIMScheduler, SlidingWindowInferer."""

    def __init__(self, threads: int):
        sys.modules["tensorboard"] = None  # MONAI's optional tensorboard import loads TensorFlow: keep it out
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
        self.torch, self.runs, self.nets, self.compiled = torch, {}, {}, {}
        import monai.inferers  # noqa: F401

        self.rss_start = rss_now_mib()

    def versions(self):
        import einops
        import monai

        return {"torch": self.torch.__version__, "monai": monai.__version__, "einops": einops.__version__}

    def matmul(self, n: int = 2048) -> float:
        torch = self.torch
        a = torch.randn(n, n)
        torch.mm(a, a)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, a)
            best = min(best, time.perf_counter() - t0)
        return 2 * n ** 3 / best / 1e9

    def _flops(self, net, *args) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        with self.torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(*args)
        return float(counter.get_total_flops())

    def _randomise(self, net):
        """MONAI zero-initialises some convs (as we do our output conv): give every weight values."""
        g = self.torch.Generator().manual_seed(0)
        with self.torch.no_grad():
            for p in net.parameters():
                if not p.abs().sum():
                    p.copy_(0.02 * self.torch.randn(p.shape, generator=g))
        return net.eval()

    def _denoiser(self, sd: int):
        from monai.networks.nets import DiffusionModelUNet

        if sd not in self.nets:
            spec = DENOISER[sd]
            chans = tuple(spec["base"] * m for m in spec["mult"])
            self.torch.manual_seed(0)
            # our Attention: heads = min(4, ch // 8), key_dim = ch // heads; GroupNorm 8 groups, epsilon 1e-3
            heads = max(1, min(4, chans[-1] // 8))
            self.nets[sd] = self._randomise(DiffusionModelUNet(
                sd, LATENT_CH + spec["cond"], LATENT_CH, num_res_blocks=1, channels=chans,
                attention_levels=(False,) * len(chans), norm_num_groups=8, norm_eps=1e-3,
                num_head_channels=chans[-1] // heads))
        return self.nets[sd]

    def _compiled(self, key, net):
        if key not in self.compiled:
            self.compiled[key] = self.torch.compile(net, dynamic=False)  # static shapes: one graph each
        return self.compiled[key]

    def sampler_setup(self, spatial, batch, steps):
        torch = self.torch
        from monai.inferers import DiffusionInferer
        from monai.networks.schedulers import DDIMScheduler

        sd = len(spatial)
        net, cond_ch = self._denoiser(sd), DENOISER[sd]["cond"]
        x_in = torch.zeros((batch, LATENT_CH + cond_ch) + tuple(spatial))
        flops = self._flops(net, x_in, torch.full((batch,), 500))
        scheduler = DDIMScheduler(1000, schedule="linear_beta", clip_sample=True)
        scheduler.set_timesteps(steps)
        inferer = DiffusionInferer(scheduler)
        gen = torch.Generator().manual_seed(0)
        x_T = torch.randn((batch, LATENT_CH) + tuple(spatial), generator=gen)
        cond = torch.randn((batch, cond_ch) + tuple(spatial), generator=gen)
        compile_s, self.runs = {}, {}
        for way in MONAI_WAYS:
            model = net if way == "eager" else self._compiled((sd, batch) + tuple(spatial), net)
            self.runs[way] = lambda m=model: inferer.sample(x_T, m, scheduler, conditioning=cond, mode="concat",
                                                            verbose=False)
            t0 = time.perf_counter()
            self.runs[way]()
            compile_s[way] = round(time.perf_counter() - t0, 1)
        return {"params": sum(p.numel() for p in net.parameters()), "gflop_call": flops / 1e9, "calls": steps,
                "compile_s": compile_s}

    def window_setup(self, shape, ways):
        torch = self.torch
        from monai.inferers import SlidingWindowInferer

        net = self._seg_net()
        flops = self._flops(net, torch.zeros((1, SEG["in_ch"]) + WINDOW))
        inferer = SlidingWindowInferer(WINDOW, sw_batch_size=SW_BATCH, overlap=OVERLAP, mode="gaussian",
                                       sigma_scale=0.125, padding_mode="constant", cval=0.0, progress=False)
        image = torch.rand((1, SEG["in_ch"]) + tuple(shape), generator=torch.Generator().manual_seed(0))
        self.windows, compile_s, self.runs = 0, {}, {}
        for way in ways:
            model = net if way == "eager" else torch.compile(net, dynamic=False)

            def predict(x, model=model):
                self.windows += len(x)
                return torch.softmax(model(x), 1)

            def run(predict=predict):
                with torch.inference_mode():
                    return inferer(image, predict)

            self.runs[way] = run
            t0 = time.perf_counter()
            run()
            compile_s[way] = round(time.perf_counter() - t0, 1)
        return {"params": sum(p.numel() for p in net.parameters()), "gflop_call": flops / 1e9,
                "compile_s": compile_s}

    def run(self, way):
        self.windows = 0
        t0, c0 = time.perf_counter(), cpu_seconds()
        with self.torch.inference_mode():
            self.runs[way]()
        return {"s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "windows": self.windows}

    def memory(self):
        return {"rss_start_MiB": round(self.rss_start), "peak_rss_MiB": round(peak_rss_mib())}

    def _seg_net(self):
        from monai.networks.nets import DynUNet

        self.torch.manual_seed(0)
        n = len(SEG["monai"]["filters"])
        return self._randomise(DynUNet(3, SEG["in_ch"], SEG["classes"], kernel_size=[3] * n,
                                       strides=[1] + [2] * (n - 1), upsample_kernel_size=[2] * (n - 1),
                                       filters=SEG["monai"]["filters"], res_block=True,
                                       norm_name=("group", {"num_groups": 8})))

    def profile(self, net_kind, spatial, batch):
        """As OursWorker.profile: the whole call (eager, compiled) and the eager call's ATen ops by kind."""
        import collections

        from torch.profiler import ProfilerActivity, profile

        torch = self.torch
        sd = len(spatial)
        if net_kind == "denoiser":
            net = self._denoiser(sd)
            args = (torch.randn((batch, LATENT_CH + DENOISER[sd]["cond"]) + tuple(spatial)),
                    torch.full((batch,), 500))
        else:
            net = self._seg_net()
            args = (torch.randn((batch, SEG["in_ch"]) + tuple(spatial)),)
        out, runs = {}, 3
        with torch.inference_mode():
            out["eager"] = {"whole call": round(_median_ms(net, args, star=True), 3)}
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    net(*args)
            parts = collections.Counter()
            for evt in prof.key_averages():
                parts[op_category(evt.key)] += evt.self_cpu_time_total / 1000 / runs
            out["eager"].update({f"ops: {k}": round(v, 3) for k, v in sorted(parts.items())})
            out["eager"]["ops: sum"] = round(sum(parts.values()), 3)
            compiled = torch.compile(net, dynamic=False)
            out["compile"] = {"whole call": round(_median_ms(compiled, args, star=True), 3)}
            if net_kind == "denoiser":
                from monai.networks.schedulers import DDIMScheduler

                sch = DDIMScheduler(1000, schedule="linear_beta", clip_sample=True)
                sch.set_timesteps(50)
                z = torch.randn((batch, LATENT_CH) + tuple(spatial))
                out["eager"]["DDIM update (per step)"] = round(_median_ms(
                    lambda a: [sch.step(a, t, a)[0] for t in sch.timesteps][-1], z) / 50, 3)
        return out


def worker_main(kind: str, threads: int):
    """Serve one JSON request per stdin line: {"op": method, "args": [...]}; reply on stdout as '@@' + JSON."""
    worker = {"ours": OursWorker, "monai": MonaiWorker}[kind](threads)
    print("@@" + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            out = getattr(worker, req["op"])(*req.get("args", []))
            print("@@" + json.dumps({"ok": out}), flush=True)
        except Exception as e:  # reported to the parent, which stops with the worker's message
            import traceback

            traceback.print_exc()
            print("@@" + json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)


class Worker:
    """The parent's handle on a worker process."""

    def __init__(self, kind: str, threads: int):
        self.kind, self.keep_log = kind, False
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"peers_{kind}_", suffix=".log", delete=False)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
               "OMP_NUM_THREADS": str(threads)}
        if kind == "monai" and OMP_WAIT:  # see --omp-wait
            env["OMP_WAIT_POLICY"] = OMP_WAIT
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--threads", str(threads)],
                                     cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self._reply()

    def _reply(self):
        for line in self.proc.stdout:
            if line.startswith("@@"):
                out = json.loads(line[2:])
                if "error" in out:
                    self.keep_log = True
                    raise RuntimeError(f"{self.kind} worker: {out['error']} (log: {self.log.name})")
                return out.get("ok", out)
        self.log.flush()
        self.keep_log = True
        tail = Path(self.log.name).read_text()[-3000:]
        raise RuntimeError(f"{self.kind} worker died (log {self.log.name}):\n{tail}")

    def __call__(self, op, *args):
        self.proc.stdin.write(json.dumps({"op": op, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        if not self.keep_log:
            os.unlink(self.log.name)


# -- the parent: alternate timed runs, build the tables ---------------------------------------------------
def alternate(workers: dict, ways: dict, repeats: int) -> dict:
    """(median seconds, windows per run, median CPU seconds) of every (library, way), runs alternating between
    libraries."""
    lanes = [[(lib, w) for w in ws] for lib, ws in ways.items()]
    order = [k for pair in itertools.zip_longest(*lanes) for k in pair if k is not None]
    times, cpu = {k: [] for k in order}, {k: [] for k in order}
    windows = {}
    for _ in range(repeats):
        for lib, way in order:
            out = workers[lib]("run", way)
            times[(lib, way)].append(out["s"])
            cpu[(lib, way)].append(out["cpu_s"])
            windows[(lib, way)] = out["windows"]
    return {k: (statistics.median(v), windows[k], statistics.median(cpu[k])) for k, v in times.items()}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg()[:2])


def sampler_rows(cases, repeats, threads):
    workers = {"ours": Worker("ours", threads), "monai": Worker("monai", threads)}
    try:
        info = {"ours": workers["ours"]("versions"), "monai": workers["monai"]("versions"),
                "matmul_GFLOPs": {k: w("matmul") for k, w in workers.items()}}
        rows, summary = [], []
        for spatial, batch, steps in cases:
            case = f"{'x'.join(map(str, spatial))} b{batch} DDIM-{steps}"
            load0 = load()
            setup = {lib: w("sampler_setup", spatial, batch, steps) for lib, w in workers.items()}
            med = alternate(workers, {"ours": OURS_WAYS, "monai": MONAI_WAYS}, repeats)
            best = {}
            for (lib, way), (sec, _, cpu) in med.items():
                s = setup[lib]
                gflops = s["gflop_call"] * s["calls"] / sec
                rows.append({"case": case, "library": "ours" if lib == "ours" else "MONAI", "way": way,
                             "params_M": round(s["params"] / 1e6, 3), "GFLOP/call": round(s["gflop_call"], 3),
                             "compile_s": s["compile_s"][way], "s/run": round(sec, 4),
                             "ms/sample": round(1000 * sec / batch, 1), "samples/s": round(batch / sec, 2),
                             "GFLOP/s": round(gflops, 1), "CPU ms/sample": round(1000 * cpu / batch, 1)})
                if lib not in best or sec < best[lib][0]:
                    best[lib] = (sec, way, gflops, cpu)
                print(f"  {case:<22} {lib:<6} {way:<12} {sec:8.3f} s  {gflops:6.1f} GFLOP/s", flush=True)
            (so, wo, go, co), (sm, wm, gm, cm) = best["ours"], best["monai"]
            summary.append({"case": case, "ours best": wo, "ours ms/sample": round(1000 * so / batch, 1),
                            "ours GFLOP/s": round(go, 1), "MONAI best": wm,
                            "MONAI ms/sample": round(1000 * sm / batch, 1), "MONAI GFLOP/s": round(gm, 1),
                            "ratio GFLOP/s": round(go / gm, 2), "ratio samples/s": round(sm / so, 2),
                            "ratio CPU-s (MONAI / ours)": round(cm / co, 2),
                            "load 1/5 min": f"{load0} -> {load()}"})
            print(f"  => {summary[-1]}", flush=True)
        return info, rows, summary
    finally:
        for w in workers.values():
            w.close()


def window_rows(shapes, repeats, threads, quick):
    rows = []
    # ours without XLA: its CPU Conv3D makes a 64^3 window batch 10x slower (see --profile)
    ways = {"ours": OURS_WAYS[:1], "monai": ("eager",) if quick else MONAI_WAYS}
    for shape in shapes:
        vol = "x".join(map(str, shape))
        workers = {lib: Worker(lib, threads) for lib in ways}  # fresh processes: peak RSS per volume and library
        try:
            load0 = load()
            setup = {lib: w("window_setup", list(shape), list(ways[lib])) for lib, w in workers.items()}
            peak = {lib: w("matmul") for lib, w in workers.items()}  # each library's own 2048^2 matmul
            med = alternate(workers, ways, repeats)
            mem = {lib: w("memory") for lib, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
        best = {}
        for (lib, way), (sec, windows, cpu) in med.items():
            s = setup[lib]
            gflops = s["gflop_call"] * windows / sec
            rows.append({"volume": vol, "library": "ours" if lib == "ours" else "MONAI", "way": way,
                         "params_M": round(s["params"] / 1e6, 3), "GFLOP/window": round(s["gflop_call"], 2),
                         "windows": windows, "compile_s": s["compile_s"][way], "s/volume": round(sec, 2),
                         "CPU s/volume": round(cpu, 1),
                         "GFLOP/s": round(gflops, 1), "% of matmul peak": round(100 * gflops / peak[lib]),
                         "rss_start_MiB": mem[lib]["rss_start_MiB"],
                         "peak_rss_MiB": mem[lib]["peak_rss_MiB"], "load 1/5 min": f"{load0} -> {load()}"})
            if lib not in best or sec < best[lib][0]:
                best[lib] = (sec, gflops, cpu)
            print(f"  {vol:<12} {lib:<6} {way:<12} {sec:8.2f} s  {gflops:6.1f} GFLOP/s", flush=True)
        for r in rows[-len(med):]:
            r["speed vs MONAI best"] = round(best["monai"][0] / r["s/volume"], 2)
            r["GFLOP/s vs MONAI best"] = round(r["GFLOP/s"] / best["monai"][1], 2)
            r["CPU-s: MONAI best / this"] = round(best["monai"][2] / r["CPU s/volume"], 2)
    return rows


PROFILE_CASES = [("denoiser", (32, 32), 1), ("denoiser", (32, 32), 8), ("denoiser", (16, 16, 16), 1),
                 ("segmentation UNet", WINDOW, SW_BATCH)]


def profile_rows(threads):
    """Where a network call's time goes, per layer type, on both sides (each library alone on the machine)."""
    results = {}
    for lib in ("ours", "monai"):
        w = Worker(lib, threads)
        try:
            results[lib] = []
            for kind, sp, b in PROFILE_CASES:
                results[lib].append(w("profile", "denoiser" if kind == "denoiser" else "seg", list(sp), b))
                print(f"  {lib} {kind} {sp} b{b}: {results[lib][-1]}", flush=True)
        finally:
            w.close()
    rows = []
    for i, (kind, sp, b) in enumerate(PROFILE_CASES):
        cols = {f"ours {way}": results["ours"][i][way] for way in OURS_WAYS if way in results["ours"][i]}
        cols.update({f"MONAI {way}": results["monai"][i][way] for way in MONAI_WAYS})
        for part in dict.fromkeys(k for c in cols.values() for k in c):
            rows.append({"net": f"{kind} {'x'.join(map(str, sp))} b{b}", "part (ms)": part,
                         **{name: c.get(part, "") for name, c in cols.items()}})
    return rows


def check_needs():
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"peers.py needs {', '.join(missing)}: pip install -r requirements-bench.txt "
                 "(in a venv of its own beside requirements-dev.txt; the suite itself never needs them)")


def main():
    global OMP_WAIT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subset that finishes in under 10 minutes")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per way (default 3 quick, 5 full)")
    ap.add_argument("--threads", type=int, default=2, help="intra/inter-op threads of both libraries")
    ap.add_argument("--only", choices=("sampler", "window"), default=None)
    ap.add_argument("--profile", action="store_true", help="only the per-layer-type breakdown of one call")
    ap.add_argument("--omp-wait", default=OMP_WAIT, metavar="POLICY",
                    help="OMP_WAIT_POLICY of the MONAI worker (default PASSIVE: see the comment at OMP_WAIT; "
                         "'' = OpenMP's default)")
    ap.add_argument("--worker", choices=("ours", "monai"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.worker, args.threads)
    check_needs()
    OMP_WAIT = args.omp_wait
    repeats = args.repeats or (3 if args.quick else 5)
    tag = "_quick" if args.quick else ""
    start = time.time()
    if args.profile:
        rows = profile_rows(args.threads)
        print("ms per network call: the whole call (median of 3-20 runs) and, for ours plain and MONAI eager, the "
              "traced ops' own time summed by kind (mean of 3 traced runs; tracing adds overhead to the sum)")
        print(markdown_table(rows))
        write_csv(rows, "peers_profile.csv")
        return
    print(f"# peers benchmark ({'quick' if args.quick else 'full'}), {machine()}, {args.threads} threads each, "
          f"{repeats} alternating repeats, MONAI OMP_WAIT_POLICY={OMP_WAIT or 'default'}, load average 1/5 min "
          f"{load()}", flush=True)
    if args.only != "window":
        info, rows, summary = sampler_rows(SAMPLER_QUICK if args.quick else SAMPLER_FULL, repeats, args.threads)
        print(f"\nversions: {info['ours']} | {info['monai']}; 2048^2 matmul GFLOP/s: "
              f"TF {info['matmul_GFLOPs']['ours']:.1f}, torch {info['matmul_GFLOPs']['monai']:.1f}")
        print("\nDDIM sampling, per way (GFLOP/call counted on each net; GFLOP/s = GFLOP/call x steps / time)")
        print(markdown_table(rows))
        print("\nDDIM sampling, ours best vs MONAI best (ratio > 1: ours faster)")
        print(markdown_table(summary))
        write_csv(rows, f"peers_sampler{tag}.csv")
        write_csv(summary, f"peers_sampler_summary{tag}.csv")
    if args.only != "sampler":
        rows = window_rows(WINDOW_QUICK if args.quick else WINDOW_FULL, min(repeats, 2) if args.quick else repeats,
                           args.threads, args.quick)
        print(f"\nsliding window {'x'.join(map(str, WINDOW))}, overlap {OVERLAP}, gaussian, {SW_BATCH} windows "
              "per batch; each library and volume in its own process")
        print(markdown_table(rows))
        write_csv(rows, f"peers_window{tag}.csv")
    print(f"\ndone in {time.time() - start:.0f} s, load average 1/5 min {load()}; CSV in benchmarks/results/")


if __name__ == "__main__":
    main()
