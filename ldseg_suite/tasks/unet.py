"""U-Net baseline runner: train, infer and predict, on the same data, patches, windows and outputs as LDSeg."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from ldseg_suite.errors import LDSegError
from ldseg_suite.models.unet_seg import UNetSeg
from ldseg_suite.tasks import segmentation as seg
from ldseg_suite.tasks.common import load_trained_weights, open_run

OUTPUTS = {"train": [], "infer": ["predictions", "metrics.csv"], "predict": []}


def build_model(cfg) -> UNetSeg:
    m = cfg.Model
    model = UNetSeg(spatial_dims=seg.spatial_dims(cfg.Data.Kind), in_channels=cfg.Data.Channels,
                    classes=cfg.Data.Classes, base_channels=m.BaseChannels, channel_mult=m.ChannelMult,
                    res_blocks=m.ResBlocks, attention=m.Attention, loss_weights=(m.Weight_CE, m.Weight_Dice))
    model.build((None, *seg.net_shape(cfg), cfg.Data.Channels))
    return model


def load_trained(cfg, run_dir: Path) -> UNetSeg:
    model = build_model(cfg)
    load_trained_weights(model, cfg, run_dir)
    return model


def make_predict(model: UNetSeg):
    """``predict(batch)``: class probabilities, one compiled call per batch shape."""
    compiled = tf.function(lambda x: model.probabilities(x), reduce_retracing=False)
    return lambda batch: np.asarray(compiled(tf.constant(batch, tf.float32)))


def run(cfg, mode: str, out: Path, overwrite: bool = False, input_path=None, shard=None) -> int:
    run_dir = open_run(cfg, mode, out, overwrite, seg.protected_outputs(OUTPUTS, mode, shard))
    batch = cfg.Inference.BatchSize
    if mode == "predict":
        if input_path is None:
            raise LDSegError("--mode predict needs --input PATH (an image/volume or a folder of them)")
        return seg.predict(cfg, make_predict(load_trained(cfg, run_dir)), batch, input_path, run_dir, overwrite,
                           shard)
    data = seg.open_cases(cfg, run_dir)
    if mode == "train":
        seg.train(cfg, data, run_dir, lambda: build_model(cfg))
        return 0
    seg.infer(cfg, data["test"], make_predict(load_trained(cfg, run_dir)), batch, run_dir, shard=shard,
              train=data["train"])
    return 0
