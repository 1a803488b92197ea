"""Small image classifier whose penultimate features define the "FID (local features)".

Inception weights cannot be fetched here, so FID is computed on the features of this network trained on
the same data set. The numbers are comparable between models scored with the same classifier weights,
never with published Inception FIDs.
"""
from __future__ import annotations

import keras
from keras import layers

from ldseg_suite.nets.layers import PKG


@keras.saving.register_keras_serializable(PKG)
class FeatureClassifier(keras.Model):
    def __init__(self, size=(32, 32), channels: int = 1, classes: int = 10, base_channels: int = 32,
                 features: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.hp = dict(size=list(size), channels=channels, classes=classes, base_channels=base_channels,
                       features=features)
        b = base_channels
        self.body = [layers.Conv2D(b, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                     layers.Conv2D(2 * b, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                     layers.Conv2D(4 * b, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                     layers.Flatten(), layers.Dense(features, activation="relu")]
        self.dropout = layers.Dropout(0.3)
        self.head = layers.Dense(classes)

    def build(self, input_shape):
        self.head(self.features(keras.ops.zeros((1, *self.hp["size"], self.hp["channels"]))))
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **self.hp}

    def features(self, x):
        """Penultimate activations, (batch, features)."""
        h = x
        for layer in self.body:
            h = layer(h)
        return h

    def call(self, x, training=False):
        return self.head(self.dropout(self.features(x), training=training))
