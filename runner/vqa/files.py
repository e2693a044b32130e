"""VQA's real file formats: questions and annotations JSON, VGG fc7 features (Karpathy's vgg_feats.mat, a
4096 x N matrix, or a .npy) with an `image_id column` map, and GloVe-format word vectors. Pure reading."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.errors import DataError

_TOKEN = re.compile(r"[a-z0-9]+|'[a-z]+")  # "what's" -> what, 's (GloVe's own tokens)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass
class Question:
    question_id: int
    image_id: int
    question: str
    answers: list[str]  # the 10 human answers
    answer: str  # the modal answer (multiple_choice_answer)
    answer_type: str


def _json(path: Path, key: str) -> list[dict[str, Any]]:
    try:
        items = json.loads(path.read_text())[key]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: expected a JSON object with a '{key}' list ({exc}).") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: '{key}' is not a list.")
    return items


def read_questions(questions: Path, annotations: Path) -> list[Question]:
    """Questions joined with their annotations by question_id."""
    try:
        notes = {a["question_id"]: a for a in _json(annotations, "annotations")}
        out = []
        for q in _json(questions, "questions"):
            a = notes.get(q["question_id"])
            if a is None:
                raise DataError(
                    f"{annotations}: no annotation for question_id {q['question_id']} of {questions}."
                )
            answers = [x["answer"] for x in a["answers"]]
            out.append(
                Question(
                    int(q["question_id"]),
                    int(q["image_id"]),
                    q["question"],
                    answers,
                    a["multiple_choice_answer"],
                    a["answer_type"],
                )
            )
    except KeyError as exc:
        raise DataError(
            f"{questions} / {annotations}: missing field {exc}; expected questions[].{{question_id,image_id,question}}"
            " and annotations[].{question_id,answers[].answer,answer_type,multiple_choice_answer}."
        ) from None
    return out


def read_feature_map(path: Path) -> dict[int, int]:
    """Lines of `image_id column` (coco_vgg_IDMap.txt)."""
    out = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (the image_id -> column map).") from None
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise DataError(f"{path} line {n}: '{line.strip()}'; expected 'image_id column'.")
        out[int(parts[0])] = int(parts[1])
    return out


def read_features(path: Path, image_dim: int) -> np.ndarray:
    """The feature matrix as (N, image_dim) float32, from a .mat ('feats', image_dim x N) or a .npy."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (image features: vgg_feats.mat or a .npy).")
    if path.suffix == ".mat":
        from scipy.io import loadmat

        try:
            feats = loadmat(str(path))["feats"]
        except KeyError:
            raise DataError(
                f"{path}: no 'feats' matrix; expected Karpathy's layout ({image_dim} x N)."
            ) from None
    elif path.suffix == ".npy":
        feats = np.load(path, allow_pickle=False)
    else:
        raise DataError(f"{path}: image features must be a .mat ('feats', {image_dim} x N) or a .npy.")
    if feats.ndim != 2 or image_dim not in feats.shape:
        raise DataError(f"{path}: features of shape {feats.shape}; expected {image_dim} x N.")
    return np.ascontiguousarray(feats.T if feats.shape[0] == image_dim else feats, dtype=np.float32)


def read_word_vectors(path: Path, dim: int, words: set[str]) -> dict[str, np.ndarray]:
    """GloVe's text format (`word v1 ... vD` per line); keeps only `words`. Every line must have D values."""
    out = {}
    try:
        f = path.open(encoding="utf8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (GloVe-format word vectors).") from None
    with f:
        for n, line in enumerate(f, start=1):
            word, _, rest = line.rstrip("\n").partition(" ")
            values = rest.split(" ")
            if len(values) != dim:
                raise DataError(
                    f"{path} line {n}: {len(values)} values for '{word}', expected {dim} (dataset.word_dim)."
                )
            if word in words:
                out[word] = np.asarray(values, dtype=np.float32)
    return out
