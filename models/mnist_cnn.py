"""FloydHub's MNIST CNN (dotcs/mnist-cnn-floydhub): two conv blocks, a 1024-unit dense layer, softmax.

conv 3x3 "same" 64 -> 64 -> max-pool 2x2 -> 128 -> 128 -> max-pool 2x2 -> flatten (6272) -> dense 1024 relu
-> dropout -> dense 10 -> softmax: 6,692,810 parameters. The source's conv layers have no activation and its
logits pass through relu: `conv_activation="linear", logits_activation="relu"` reproduces it.
"""

from __future__ import annotations

import keras
from keras import layers


def build(
    *,
    conv_activation: str = "relu",
    logits_activation: str = "linear",
    filters: tuple[int, int] = (64, 128),
    dense_units: int = 1024,
    dropout: float = 0.25,
    classes: int = 10,
) -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = inputs
    for block, width in enumerate(filters, start=1):
        for i in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", activation=conv_activation, name=f"conv{block}_{i}")(
                x
            )
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(classes, activation=logits_activation, name="logits")(x)
    out = layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, out, name="mnist_cnn")
