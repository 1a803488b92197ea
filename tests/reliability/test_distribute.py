"""One train step under MirroredStrategy on two logical CPUs equals the single-device step; replicas draw their own
noise; mixed precision."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import ldseg_suite, keras, numpy as np
from keras import ops
from ldseg_suite.models.ldseg import LDSeg


class PerExampleNoise(LDSeg):
    """t and noise as functions of each example, so a replica draws what the single device draws."""

    def sample_t_and_noise(self, image, latent_shape):
        mean = ops.mean(image, axis=(1, 2, 3))
        t = ops.cast(mean * (self.hp["timesteps"] - 1), "int32")
        pooled = ops.average_pool(image, 2, 2)[..., :1]
        noise = ops.sin(37.0 * pooled + ops.reshape(ops.arange(latent_shape[-1], dtype="float32"), (1, 1, 1, -1)))
        return t, noise


def build():
    m = PerExampleNoise(in_channels=1, latent_channels=2, image_latent_channels=2, downsample=2, base_channels=8,
                        channel_mult=(1,), attention=False, timesteps=50, seed=0)
    m.build((None, 8, 8, 1))
    return m


rng = np.random.default_rng(0)
x = rng.random((4, 8, 8, 1)).astype("float32")
y = np.eye(2, dtype="float32")[(x[..., 0] > 0.5).astype(int)]
keras.utils.set_random_seed(0)
single = build()
start = [w.copy() for w in single.get_weights()]
single.compile(optimizer=keras.optimizers.SGD(0.5))
single.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0, shuffle=False)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    mirrored = build()
    mirrored.set_weights(start)
    mirrored.compile(optimizer=keras.optimizers.SGD(0.5))
mirrored.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0, shuffle=False)
moved = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), start))
diff = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights()))

with strategy.scope():  # the model's own draws: each replica must get its own t and noise
    plain = LDSeg(in_channels=1, latent_channels=2, image_latent_channels=2, downsample=2, base_channels=8,
                  channel_mult=(1,), attention=False, timesteps=50, seed=0)
    plain.build((None, 8, 8, 1))
noise = strategy.run(tf.function(lambda: plain.sample_t_and_noise(None, (2, 4, 4, 2))[1]))
a, b = strategy.experimental_local_results(noise)
gap = float(np.abs(a.numpy() - b.numpy()).max())
print(f"RESULT moved={moved} diff={diff} replica_noise_gap={gap}")
'''


def test_mirrored_step_equals_single_device_step():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, res.stderr[-3000:]
    values = dict(kv.split("=") for kv in line[0].split()[1:])
    assert float(values["moved"]) > 1e-3  # the step really changed the weights
    assert float(values["diff"]) < 1e-5
    assert float(values["replica_noise_gap"]) > 0.1  # replicas draw different noise for their examples


def test_mixed_precision_train_step_keeps_float32_losses_and_sampler():
    import keras
    import tensorflow as tf

    from ldseg_suite.models.ldseg import LDSeg

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        m = LDSeg(in_channels=1, latent_channels=2, image_latent_channels=2, downsample=2, base_channels=8,
                  channel_mult=(1,), timesteps=20)  # attention kept: its softmax under mixed precision
        m.build((None, 8, 8, 1))
        m.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)  # one step: tracing would cost more
        x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
        y = np.eye(2, dtype="float32")[(x[..., 0] > 0.5).astype(int)]
        logs = m.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])
        assert m.denoiser.compute_dtype == "bfloat16"
        probs, out = m.segment(tf.constant(x), m.make_sampler("DDIM", 3), seed=0)
        assert out["x0"].dtype == tf.float32 and probs.dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
