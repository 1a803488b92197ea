"""What LDSeg and the U-Net baseline share: the soft Dice, the global-batch loss and the train / test steps."""
from __future__ import annotations

import tensorflow as tf
from keras import ops


def soft_dice_per_example(onehot, probs, smooth: float = 1.0):
    """Mean soft Dice over the foreground classes (all classes if there is only one), per example."""
    axes = tuple(range(1, len(onehot.shape) - 1))
    inter = ops.sum(onehot * probs, axis=axes)
    denom = ops.sum(onehot, axis=axes) + ops.sum(probs, axis=axes)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    return ops.mean(dice[:, 1:] if onehot.shape[-1] > 1 else dice, axis=-1)


def global_batch_mean(per_example, batch):
    """Sum of per-example losses over the global batch, so a tf.distribute run (gradients summed over replicas)
    needs no change."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return ops.sum(per_example) / ops.cast(batch * replicas, "float32")


class SegmentationSteps:
    """train_step / test_step for a keras.Model with ``trackers`` (name -> Mean, "loss" first) and
    ``_loss_terms(data, training) -> (loss, per_example, {name: per-example values})``."""

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _update(self, per_example, parts):
        self.trackers["loss"].update_state(per_example)
        for k, v in parts.items():
            self.trackers[k].update_state(v)
        return {k: m.result() for k, m in self.trackers.items()}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, per_example, parts = self._loss_terms(data, training=True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update(per_example, parts)

    def test_step(self, data):
        _, per_example, parts = self._loss_terms(data, training=False)
        return self._update(per_example, parts)
