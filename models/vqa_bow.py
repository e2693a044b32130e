"""VQA baseline (sominw/vqamd_floyd, train_baseMLP.py): bag of words + VGG fc7 -> MLP -> answer softmax.

question = sum of its word vectors (300), concatenated with the 4,096-d fc7 feature (4,396) -> dense 1024
(linear) -> dropout 0.5 -> 3 x [dense 1024 tanh -> dropout 0.5] -> dense N softmax: 8,676,328 parameters
with 1,000 answers. Input `question` is the zero-padded word-vector sequence; the sum has no parameters.
"""

from __future__ import annotations

import keras
from keras import layers

from models.vqa_head import answer_head, normalised_image


@keras.saving.register_keras_serializable(package="vqa")
class SumTokens(layers.Layer):
    """Sum over the token axis: a bag of words from a zero-padded sequence."""

    def call(self, x):  # type: ignore[no-untyped-def]
        return keras.ops.sum(x, axis=1)


def build(
    *,
    answers: int = 1000,
    word_dim: int = 300,
    image_dim: int = 4096,
    max_tokens: int = 30,
    hidden_units: int = 1024,
    hidden_layers: int = 3,
    dropout: float = 0.5,
    activation: str = "tanh",
    kernel_initializer: str = "uniform",  # the source's init='uniform' (U(-0.05, 0.05))
    image_norm: str = "none",  # raw fc7, as the source (l2: unit length)
) -> keras.Model:
    question = keras.Input(shape=(max_tokens, word_dim), name="question")
    image = keras.Input(shape=(image_dim,), name="image")
    x = layers.Concatenate(name="question_and_image")(
        [SumTokens(name="bag_of_words")(question), normalised_image(image, image_norm)]
    )
    x = layers.Dense(hidden_units, kernel_initializer=kernel_initializer, name="dense_in")(x)
    x = layers.Dropout(dropout, name="dropout_in")(x)
    out = answer_head(
        x,
        answers=answers,
        hidden_units=hidden_units,
        hidden_layers=hidden_layers,
        dropout=dropout,
        activation=activation,
        kernel_initializer=kernel_initializer,
    )
    return keras.Model({"question": question, "image": image}, out, name="vqa_bow")
