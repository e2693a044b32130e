"""The answer classifier both VQA models share: hidden x [dense -> dropout] -> dense N softmax."""

from __future__ import annotations

from typing import Any

from keras import layers


def answer_head(
    x: Any,
    *,
    answers: int,
    hidden_units: int,
    hidden_layers: int,
    dropout: float,
    activation: str,
    kernel_initializer: str,
) -> Any:
    for i in range(1, hidden_layers + 1):
        x = layers.Dense(
            hidden_units, activation=activation, kernel_initializer=kernel_initializer, name=f"dense_{i}"
        )(x)
        x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    return layers.Dense(answers, activation="softmax", kernel_initializer=kernel_initializer, name="answer")(
        x
    )
