"""The seed's MLP: Dense(64, relu) -> Dropout(0.5) -> Dense(64, relu) -> Dropout(0.5) -> Dense(1, sigmoid)."""

from __future__ import annotations

import keras
from keras import layers


def build(
    *,
    input_dim: int = 20,
    units: int = 64,
    hidden_layers: int = 2,
    dropout: float = 0.5,
    outputs: int = 1,
    output_activation: str = "sigmoid",
) -> keras.Model:
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    for i in range(hidden_layers):
        x = layers.Dense(units, activation="relu", name=f"dense_{i + 1}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    out = layers.Dense(outputs, activation=output_activation, name="output")(x)
    return keras.Model(inputs, out, name="mlp")
