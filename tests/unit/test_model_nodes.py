"""Every model node builds on its own from the composed config, with the parameter counts of its source."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from runner.compose.load import compose_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("overrides", "params"),
    [
        # The weights add up to 6,691,392 (+1,418 biases); 6,682,810, often quoted, is a slip in that sum.
        (["+experiment=mnist_cnn"], 6_692_810),
        (["+experiment=mnist_cnn_seed"], 6_692_810),
        (["+experiment=vqa_vgg"], 8_676_328),
        (["+experiment=vqa_vgg", "model=vqa_lstm"], 13_707_240),
        (["+experiment=keras_mlp"], 5_569),
    ],
)
def test_model_node_builds_with_its_parameter_count(overrides: list[str], params: int) -> None:
    cfg = compose_config(ROOT, overrides)
    assert instantiate(cfg.model).count_params() == params


def test_seed_experiment_keeps_the_source_mistakes() -> None:
    model = instantiate(compose_config(ROOT, ["+experiment=mnist_cnn_seed"]).model)
    assert model.get_layer("conv1_1").activation.__name__ == "linear"
    assert model.get_layer("logits").activation.__name__ == "relu"
    fixed = instantiate(compose_config(ROOT, ["+experiment=mnist_cnn"]).model)
    assert fixed.get_layer("conv2_2").activation.__name__ == "relu"
    assert fixed.get_layer("logits").activation.__name__ == "linear"


def test_seed_schedule_is_the_notebooks() -> None:
    cfg = compose_config(ROOT, ["+experiment=mnist_cnn_seed"])
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.learning_rate) == (1785, 56, 0.001)
    assert max(s for s in range(1, 10**4) if s * 56 < 100_000) == 1785  # while step * batch_size < 100000
    assert round(42_000 * cfg.train.validation_split) == 12_000  # trains on 30,000 of Kaggle's 42,000


@pytest.mark.parametrize("model", ["vqa_bow", "vqa_lstm"])
def test_vqa_image_norm_makes_answers_scale_free_and_adds_no_weights(model: str) -> None:
    import numpy as np

    cfg = compose_config(ROOT, ["+experiment=vqa_vgg", f"model={model}", "model.answers=5"])
    rng = np.random.default_rng(0)
    question = rng.normal(size=(2, cfg.model.max_tokens, cfg.model.word_dim)).astype("float32")
    image = rng.uniform(0, 3, size=(2, cfg.model.image_dim)).astype("float32")

    def answers(node, scale: float):  # type: ignore[no-untyped-def]
        return node.predict({"question": question, "image": image * scale}, verbose=0)

    normed = instantiate(cfg.model, image_norm="l2")
    np.testing.assert_allclose(answers(normed, 1.0), answers(normed, 10.0), rtol=1e-4, atol=1e-6)
    raw = instantiate(cfg.model, image_norm="none")
    assert raw.count_params() == normed.count_params()
    assert not np.allclose(answers(raw, 1.0), answers(raw, 10.0), rtol=1e-4, atol=1e-6)
    with pytest.raises(InstantiationException, match=r"model.image_norm: 'max'; expected one of l2, none"):
        instantiate(cfg.model, image_norm="max")
