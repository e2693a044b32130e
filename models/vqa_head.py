"""What both VQA models share: the image input's normalisation and the answer classifier."""

from __future__ import annotations

from typing import Any

from keras import layers

from runner.errors import ConfigError

IMAGE_NORMS = ("l2", "none")


def normalised_image(image: Any, norm: str) -> Any:
    """fc7 scaled to unit L2 norm ("norm I" of the VQA paper's baselines), or as given (the source's choice).

    Raw fc7 (4,096 unscaled ReLU outputs) saturates the LSTM variant's first tanh layer: it does not learn
    without the norm. The bag of words is the other way round: its linear first layer needs the image's scale
    beside the summed word vectors. The layer has no weights: parameter counts are the same either way.
    """
    if norm not in IMAGE_NORMS:
        raise ConfigError(f"model.image_norm: '{norm}'; expected one of {', '.join(IMAGE_NORMS)}.")
    return layers.UnitNormalization(name="image_l2")(image) if norm == "l2" else image


def answer_head(  # hidden x [dense -> dropout] -> dense N softmax
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
