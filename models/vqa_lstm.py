"""VQA LSTM (sominw/vqamd_floyd, train_LSTM.py): 3 stacked LSTM(512) over the question + VGG fc7 -> MLP.

question word vectors (padded and masked to 30 tokens) -> LSTM 512 x 3 -> concatenated with fc7 (4,608) ->
3 x [dense 1024 tanh -> dropout 0.5] -> dense N softmax: 13,707,240 parameters with 1,000 answers.
"""

from __future__ import annotations

import keras
from keras import layers

from models.vqa_head import answer_head, normalised_image


def build(
    *,
    answers: int = 1000,
    word_dim: int = 300,
    image_dim: int = 4096,
    max_tokens: int = 30,
    lstm_units: int = 512,
    lstm_layers: int = 3,
    hidden_units: int = 1024,
    hidden_layers: int = 3,
    dropout: float = 0.5,
    activation: str = "tanh",
    kernel_initializer: str = "uniform",  # the source's init='uniform' on the dense layers
    image_norm: str = "l2",  # "none": raw fc7, as the source
) -> keras.Model:
    question = keras.Input(shape=(max_tokens, word_dim), name="question")
    image = keras.Input(shape=(image_dim,), name="image")
    x = layers.Masking(0.0, name="padding")(question)
    for i in range(1, lstm_layers + 1):
        x = layers.LSTM(lstm_units, return_sequences=i < lstm_layers, name=f"lstm_{i}")(x)
    x = layers.Concatenate(name="question_and_image")([x, normalised_image(image, image_norm)])
    out = answer_head(
        x,
        answers=answers,
        hidden_units=hidden_units,
        hidden_layers=hidden_layers,
        dropout=dropout,
        activation=activation,
        kernel_initializer=kernel_initializer,
    )
    return keras.Model({"question": question, "image": image}, out, name="vqa_lstm")
