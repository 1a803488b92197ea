"""``--mode diagnose`` for LDSeg: where is the information lost between the label and the sampled mask?

On the held-out cases (whole, or stitched from windows as inference does), Dice of
- ``ceiling``: decode(encode(label)), what the label autoencoder keeps;
- ``one_step_t<T>``: the decoded one-step clean-latent estimate from the true latent noised to t (what the
  denoiser recovers at each noise level, given the image);
- ``sampled``: the full reverse diffusion from noise, as ``infer`` does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from ldseg_suite.data.cases import PreparedCase
from ldseg_suite.tasks import segmentation as seg
from ldseg_suite.tasks.common import atomic_csv

LEVELS = (0, 100, 250, 500, 750, 999)


def _stage(model, channels: int, t: int | None, seed: int):
    """predict(batch of image + one-hot label channels) -> class probabilities of one stage."""
    def predict(batch):
        image, onehot = tf.constant(batch[..., :channels]), tf.constant(batch[..., channels:])
        z0 = ops.cast(model.label_encoder(onehot), "float32")
        if t is None:
            return np.asarray(model.decode(z0))
        z_i = model.image_encoder(image)
        tt = tf.fill([batch.shape[0]], t)
        ab = model.alphas_cumprod[t]
        noise = tf.random.stateless_normal(tf.shape(z0), [seed, t])
        z_t = np.sqrt(ab) * z0 + np.sqrt(1 - ab) * noise
        eps = model.denoise(z_t, z_i, tt)
        z0_hat = ops.clip((z_t - np.sqrt(1 - ab) * eps) / np.sqrt(ab), -1.0, 1.0)
        return np.asarray(model.decode(z0_hat))
    return predict


def diagnose(cfg, model, test, run_dir: Path) -> pd.DataFrame:
    from ldseg_suite.tasks.ldseg import make_predict

    k, c, bs = cfg.Data.Classes, cfg.Data.Channels, cfg.Sampler.BatchSize
    levels = sorted({min(t, model.hp["timesteps"] - 1) for t in LEVELS})
    stages = {"ceiling": _stage(model, c, None, cfg.Run.Seed)}
    stages.update({f"one_step_t{t}": _stage(model, c, t, cfg.Run.Seed) for t in levels})
    rows = []
    for prepared in test:
        stacked = np.concatenate([prepared.image, np.eye(k, dtype=np.float32)[prepared.label]], axis=-1)
        with_label = PreparedCase(prepared.name, stacked, prepared.label, prepared.case)
        row = {"case": prepared.name}
        for name, predict in stages.items():
            labels = np.argmax(seg.segment_one(cfg, with_label, predict, bs)[..., :k], -1)
            row[name] = float(pd.DataFrame(seg.score_rows(cfg, prepared.case, labels))["dice"].mean())
        labels = np.argmax(seg.segment_one(cfg, prepared, make_predict(cfg, model, 1), bs)[..., :k], -1)
        row["sampled"] = float(pd.DataFrame(seg.score_rows(cfg, prepared.case, labels))["dice"].mean())
        rows.append(row)
        print(f"diagnose: {row}", flush=True)
    table = seg.mean_row(pd.DataFrame(rows))
    atomic_csv(table, run_dir / "diagnose.csv")
    mean = table.iloc[-1]
    print("diagnose (mean Dice over held-out cases): " + ", ".join(f"{c} {mean[c]:.4f}" for c in table.columns[1:])
          + f" -> {run_dir / 'diagnose.csv'}", flush=True)
    return table
