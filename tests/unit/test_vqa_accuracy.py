"""The official VQA accuracy on hand-worked cases."""

from __future__ import annotations

import pytest

from runner.vqa.accuracy import normalize_prediction, question_accuracy, summarize


@pytest.mark.parametrize(
    ("predicted", "human", "expected"),
    [
        ("yes", ["yes"] * 10, 1.0),
        ("no", ["yes"] * 10, 0.0),
        # 3 matches: leaving out a matching one leaves 2 (2/3, 3 times); otherwise 3 (1, 7 times) -> 0.9
        ("2", ["2"] * 3 + ["3"] * 7, (3 * 2 / 3 + 7 * 1) / 10),
        # 1 match: 1/3 in the 9 subsets that keep it, 0 in the one that drops it -> 0.3
        ("red", ["red"] + ["blue"] * 9, 9 * (1 / 3) / 10),
        # 2 matches: 8 subsets keep both (2/3), 2 keep one (1/3) -> 0.6
        ("red", ["red"] * 2 + ["blue"] * 8, (8 * 2 / 3 + 2 * 1 / 3) / 10),
        ("red", ["red"] * 4 + ["blue"] * 6, 1.0),
        # normalisation of the prediction: case, articles, number words, punctuation
        ("Two", ["2"] * 10, 1.0),
        ("the dog.", ["dog"] * 10, 1.0),
        ("A Dog", ["dog"] * 10, 1.0),
        ("dont", ["don't"] * 10, 1.0),
        # human answers get punctuation processing only when they differ
        ("yes", ["yes!"] * 10, 0.0),
        ("hot dog", ["hot,dog"] * 3 + ["x"] * 7, 0.9),  # "hot,dog" -> "hot dog"
        ("hot dog", ["hot,dog"] * 10, 0.0),  # all the same: left as typed
        ("hot dog", ["hot-dog"] * 10, 0.0),  # "-" is not punctuation to VQA
    ],
)
def test_question_accuracy(predicted: str, human: list[str], expected: float) -> None:
    assert question_accuracy(predicted, human) == pytest.approx(expected)


def test_normalization() -> None:
    assert normalize_prediction("  The Two Dogs\n") == "2 dogs"
    assert normalize_prediction("1,000") == "1000"
    assert normalize_prediction("3.5") == "3.5"
    assert normalize_prediction("yes.") == "yes"


def test_summary_per_answer_type() -> None:
    scores = summarize(
        ["yes", "2", "red"],
        [["yes"] * 10, ["3"] * 10, ["red"] + ["blue"] * 9],
        ["yes/no", "number", "other"],
    )
    assert scores == pytest.approx(
        {"accuracy": (1 + 0 + 0.3) / 3, "accuracy_yes_no": 1.0, "accuracy_number": 0.0, "accuracy_other": 0.3}
    )
