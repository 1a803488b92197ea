"""tf.distribute strategies and mixed precision from the config.

Models scale their losses by the global batch (``per-example sum / (local batch x replicas)``) and
Keras sums gradients over replicas, so a ``mirrored`` run needs no code change and matches one device.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from ldseg_suite.errors import LDSegError


def strategy_for(name: str):
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise LDSegError("[Distribute] Strategy = multiworker needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker; see the README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise LDSegError(f"[Distribute] Strategy = {name}: expected none, mirrored or multiworker")


def set_precision(policy: str) -> None:
    """float32, mixed_float16 or mixed_bfloat16 for the layers; samplers keep float32 schedules."""
    keras.mixed_precision.set_global_policy(policy)
