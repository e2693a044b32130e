"""The VQA loader named by `dataset._target_`: questions as padded word-vector sequences plus fc7 features,
looked up batch by batch from the word-vector table and the feature matrix (runner.loaders.Lookup).

Answers: the N most frequent modal answers of the training questions; training keeps only questions whose
answer is among them, and the label encoding (sorted answers) is fitted after that filtering. Test questions
are all kept: the official accuracy scores every one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runner.errors import DataError
from runner.loaders import Data, Lookup, in_run_path
from runner.vqa import files
from runner.vqa.files import Question

MISSING_CHOICES = ("fail", "skip")


@dataclass
class VqaData(Data):
    classes: list[str] = field(default_factory=list)  # answer strings, by label index
    test_questions: list[Question] = field(default_factory=list)


def top_answers(questions: list[Question], n: int) -> list[str]:
    """The n most frequent modal answers (ties broken alphabetically, so the choice is stable), sorted."""
    counts = Counter(q.answer for q in questions)
    return sorted(sorted(counts, key=lambda a: (-counts[a], a))[:n])


def word_table(vectors: dict[str, np.ndarray], dim: int) -> tuple[np.ndarray, dict[str, int]]:
    """(1 + V, dim) word vectors, row 0 all zeros (padding, and unknown words, as spaCy's were), and word -> row."""
    words = sorted(vectors)
    table = np.zeros((1 + len(words), dim), dtype=np.float32)
    for i, word in enumerate(words, start=1):
        table[i] = vectors[word]
    return table, {w: i for i, w in enumerate(words, start=1)}


def token_rows(questions: list[Question], rows: dict[str, int], max_tokens: int) -> np.ndarray:
    """(N, max_tokens) word-table rows of each question's tokens, zero-padded (0: no vector)."""
    out = np.zeros((len(questions), max_tokens), dtype=np.int32)
    for i, q in enumerate(questions):
        for j, token in enumerate(files.tokenize(q.question)[:max_tokens]):
            out[i, j] = rows.get(token, 0)
    return out


def drop_missing(
    questions: list[Question], columns: dict[int, int], source: Path, policy: str
) -> list[Question]:
    """Questions whose image has a feature column; the rest counted, then fail or skip as configured."""
    kept = [q for q in questions if q.image_id in columns]
    missing = len(questions) - len(kept)
    if missing and policy == "fail":
        ids = sorted({q.image_id for q in questions if q.image_id not in columns})
        raise DataError(
            f"{source}: no image feature for {missing} of {len(questions)} questions (image ids "
            f"{', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''}). "
            "Set dataset.missing_features=skip to leave them out."
        )
    if missing:
        print(f"[data] skipped {missing} of {len(questions)} questions: no image feature in {source}")
    return kept


def _feature_matrix(
    folder: Path, features: str, feature_map: str, columns: dict[int, int], dim: int
) -> np.ndarray:
    """The image features, checked against the map of image ids to their columns."""
    matrix = files.read_features(folder / features, dim)
    bad = [c for c in columns.values() if c >= len(matrix)]
    if bad:
        raise DataError(
            f"{folder / feature_map}: column {bad[0]} is past the {len(matrix)} columns of {features}."
        )
    return matrix


def _questions(
    folder: Path,
    train_files: tuple[str, str],
    test_files: tuple[str, str],
    columns: dict[int, int],
    source: Path,
    policy: str,
) -> tuple[list[Question], list[Question], int]:
    """The training and test questions with an image feature, and how many were skipped for lack of one."""
    train = files.read_questions(folder / train_files[0], folder / train_files[1])
    test = files.read_questions(folder / test_files[0], folder / test_files[1])
    n_train, n_test = len(train), len(test)
    train = drop_missing(train, columns, source, policy)
    test = drop_missing(test, columns, source, policy)
    return train, test, n_train + n_test - len(train) - len(test)


def load(
    *,
    seed: int,
    path: str,
    train_questions: str,
    train_annotations: str,
    test_questions: str,
    test_annotations: str,
    features: str,
    feature_map: str,
    word_vectors: str,
    answers: int = 1000,
    word_dim: int = 300,
    image_dim: int = 4096,
    max_tokens: int = 30,
    missing_features: str = "fail",
    name: str = "vqa",
) -> VqaData:
    if missing_features not in MISSING_CHOICES:
        raise DataError(f"dataset.missing_features: '{missing_features}'; expected fail or skip.")
    folder = in_run_path(path)
    columns = files.read_feature_map(folder / feature_map)
    matrix = _feature_matrix(folder, features, feature_map, columns, image_dim)
    train, test, skipped = _questions(
        folder, (train_questions, train_annotations), (test_questions, test_annotations), columns,
        folder / features, missing_features,
    )  # fmt: skip

    classes = top_answers(train, answers)
    index = {a: i for i, a in enumerate(classes)}
    train = [q for q in train if q.answer in index]
    words = {t for q in train + test for t in files.tokenize(q.question)}
    vectors = files.read_word_vectors(folder / word_vectors, word_dim, words)
    print(
        f"[data] {name}: {len(train)} training questions with one of the {len(classes)} top answers, "
        f"{len(test)} test questions, {len(vectors)}/{len(words)} words with vectors"
    )

    table, word_rows = word_table(vectors, word_dim)

    def inputs(questions: list[Question]) -> Lookup:  # built batch by batch: full VQA would not fit densely
        images = np.array([columns[q.image_id] for q in questions], dtype=np.int64)
        return Lookup(
            {"question": (table, token_rows(questions, word_rows, max_tokens)), "image": (matrix, images)}
        )

    return VqaData(
        inputs(train),
        np.array([index[q.answer] for q in train], dtype=np.int64),
        inputs(test),
        np.array([index.get(q.answer, -1) for q in test], dtype=np.int64),  # -1: not among the answers
        info={
            "data_info.answers_used": len(classes),
            "data_info.train_questions": len(train),
            "data_info.skipped_questions": skipped,
        },
        classes=classes,
        test_questions=test,
    )
