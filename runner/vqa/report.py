"""VQA evaluation, named by the config's `evaluate._target_`: results.json in the official format
([{"question_id", "answer"}]) and the official accuracy, overall and per answer type."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from runner.harness.batches import feed
from runner.vqa.accuracy import summarize
from runner.vqa.loader import VqaData


def evaluate(*, model: Any, data: VqaData, output: Path, batch_size: int) -> dict[str, float]:
    """Metrics (logged as test_<name>): accuracy, accuracy_<answer type>, and the majority-answer baseline."""
    probs = model.predict(**feed(data.x_test, None, batch_size), verbose=0)
    predicted = [data.classes[i] for i in np.argmax(probs[:, : len(data.classes)], axis=1)]
    results = [
        {"question_id": q.question_id, "answer": a}
        for q, a in zip(data.test_questions, predicted, strict=True)
    ]
    (output / "results.json").write_text(json.dumps(results))
    human = [q.answers for q in data.test_questions]
    kinds = [q.answer_type for q in data.test_questions]
    scores = summarize(predicted, human, kinds)
    majority = data.classes[Counter(data.y_train.tolist()).most_common(1)[0][0]]
    scores["majority_accuracy"] = summarize([majority] * len(human), human, kinds)["accuracy"]
    return scores
