"""The deterministic baseline: a segmentation UNet from the project's own blocks, cross-entropy + soft Dice.

Same data, patches, windows, metrics and outputs as LDSeg, so the two are compared on equal terms.
"""
from __future__ import annotations

import keras
from keras import ops

from ldseg_suite.models.seg_steps import SegmentationSteps, global_batch_mean, soft_dice_per_example
from ldseg_suite.nets.layers import PKG
from ldseg_suite.nets.unet import UNet


@keras.saving.register_keras_serializable(PKG)
class UNetSeg(SegmentationSteps, keras.Model):
    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, classes: int = 2, base_channels: int = 16,
                 channel_mult=(1, 2, 4, 8), res_blocks: int = 1, attention: bool = False,
                 loss_weights=(1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(spatial_dims=spatial_dims, in_channels=in_channels, classes=classes,
                       base_channels=base_channels, channel_mult=list(channel_mult), res_blocks=res_blocks,
                       attention=attention, loss_weights=list(loss_weights))
        self.net = UNet(classes, spatial_dims, base_channels, channel_mult, res_blocks=res_blocks,
                        attention=attention, time_conditioned=False, name="unet")
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "ce", "dice_loss")}

    def build(self, input_shape):
        spatial = tuple(input_shape[1:-1])
        self.net(ops.zeros((1,) + spatial + (self.hp["in_channels"],)))
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **{k: list(v) if isinstance(v, (list, tuple)) else v
                                           for k, v in self.hp.items()}}

    def call(self, image, training=False):
        """Class logits (float32) at the input's size."""
        return ops.cast(self.net(image, training=training), "float32")

    def probabilities(self, image):
        return ops.softmax(self(image, training=False), axis=-1)

    def _loss_terms(self, data, training):
        image, onehot, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(image, training=training)
        ce = ops.mean(keras.losses.categorical_crossentropy(onehot, logits, from_logits=True),
                      axis=tuple(range(1, len(onehot.shape) - 1)))
        dice_loss = 1.0 - soft_dice_per_example(onehot, ops.softmax(logits, axis=-1))
        w_ce, w_dice = self.hp["loss_weights"]
        per_example = w_ce * ce + w_dice * dice_loss
        loss = global_batch_mean(per_example, ops.shape(image)[0])
        return loss, per_example, {"ce": ce, "dice_loss": dice_loss}
