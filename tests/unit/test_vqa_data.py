"""VQA files and loader on the synthetic generator's output: formats, answer filtering, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runner.errors import DataError
from runner.vqa import files, synth
from runner.vqa.loader import load, top_answers

NAMES = {
    "train_questions": "v2_OpenEnded_mscoco_train2014_questions.json",
    "train_annotations": "v2_mscoco_train2014_annotations.json",
    "test_questions": "v2_OpenEnded_mscoco_val2014_questions.json",
    "test_annotations": "v2_mscoco_val2014_annotations.json",
    "features": "vgg_feats.mat",
    "feature_map": "coco_vgg_IDMap.txt",
    "word_vectors": "glove.6B.300d.txt",
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("vqa")
    synth.generate(dest, images=30, seed=1)
    return dest


def copy(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_generator_writes_the_real_formats(synthetic: Path) -> None:
    questions = json.loads((synthetic / NAMES["train_questions"]).read_text())["questions"]
    assert set(questions[0]) == {"question_id", "image_id", "question"}
    ann = json.loads((synthetic / NAMES["train_annotations"]).read_text())["annotations"][0]
    assert {"question_id", "answers", "answer_type", "multiple_choice_answer"} <= set(ann)
    assert len(ann["answers"]) == 10 and set(ann["answers"][0]) >= {"answer", "answer_id"}
    from scipy.io import loadmat

    assert loadmat(str(synthetic / "vgg_feats.mat"))["feats"].shape == (4096, 30)
    first = (synthetic / NAMES["word_vectors"]).read_text().splitlines()[0].split(" ")
    assert len(first) == 301


def test_loader_inputs_and_answer_encoding(synthetic: Path) -> None:
    data = load(seed=0, path=str(synthetic), answers=5, **NAMES)
    assert data.classes == sorted(data.classes) and len(data.classes) == 5
    n = len(data.y_train)
    train = data.x_train.rows(slice(None))
    assert train["question"].shape == (n, 30, 300) and train["image"].shape == (n, 4096)
    assert data.y_train.min() >= 0 and data.y_train.max() < 5  # encoding fitted after the filtering
    assert len(data.test_questions) == len(data.y_test)  # every test question kept for scoring
    for q, seq in zip(data.test_questions, data.x_test.rows(slice(None))["question"], strict=True):
        n_tokens = len(files.tokenize(q.question))
        assert np.all(seq[:n_tokens].any(axis=1)) and not seq[n_tokens:].any()  # zero-padded after its tokens


def test_top_answers_ties_are_stable() -> None:
    qs = [files.Question(i, 0, "q", [], a, "other") for i, a in enumerate(["b", "a", "c", "c"])]
    assert top_answers(qs, 2) == ["a", "c"]


def test_tokenize() -> None:
    assert files.tokenize("What's the man's shirt color?") == [
        "what",
        "'s",
        "the",
        "man",
        "'s",
        "shirt",
        "color",
    ]


def test_npy_features_with_map(synthetic: Path, tmp_path: Path) -> None:
    from scipy.io import loadmat

    folder = copy(synthetic, tmp_path / "d")
    np.save(folder / "feats.npy", loadmat(str(folder / "vgg_feats.mat"))["feats"])
    a = load(seed=0, path=str(folder), **{**NAMES, "features": "feats.npy"})
    b = load(seed=0, path=str(synthetic), **NAMES)
    assert np.array_equal(a.x_train.rows(slice(None))["image"], b.x_train.rows(slice(None))["image"])


def test_missing_image_features_fail_or_skip(synthetic: Path, tmp_path: Path, capsys) -> None:
    folder = copy(synthetic, tmp_path / "d")
    lines = (folder / "coco_vgg_IDMap.txt").read_text().splitlines()
    (folder / "coco_vgg_IDMap.txt").write_text(
        "\n".join(lines[1:]) + "\n"
    )  # the first image loses its feature
    with pytest.raises(DataError) as err:
        load(seed=0, path=str(folder), **NAMES)
    assert "vgg_feats.mat: no image feature for 6 of" in str(err.value)
    assert "dataset.missing_features=skip" in str(err.value)
    data = load(seed=0, path=str(folder), missing_features="skip", **NAMES)
    assert data.info["data_info.skipped_questions"] == 6
    assert "skipped 6 of" in capsys.readouterr().out


def test_wrong_word_vector_dimension_names_the_file(synthetic: Path, tmp_path: Path) -> None:
    folder = copy(synthetic, tmp_path / "d")
    (folder / "glove.6B.300d.txt").write_text("the " + " ".join(["0.1"] * 50) + "\n")
    with pytest.raises(DataError) as err:
        load(seed=0, path=str(folder), **NAMES)
    assert "glove.6B.300d.txt line 1: 50 values for 'the', expected 300 (dataset.word_dim)" in str(err.value)


def test_missing_file_is_named(synthetic: Path, tmp_path: Path) -> None:
    folder = copy(synthetic, tmp_path / "d")
    (folder / "vgg_feats.mat").unlink()
    with pytest.raises(DataError, match=r"vgg_feats\.mat: no such file"):
        load(seed=0, path=str(folder), **NAMES)
