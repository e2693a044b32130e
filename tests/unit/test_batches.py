"""Lookup inputs fed batch by batch: every row once per epoch, the same rows as the dense arrays, seeded order."""

from __future__ import annotations

import numpy as np

from runner.harness.batches import Batches
from runner.loaders import Lookup


def lookup(n: int = 10) -> tuple[Lookup, np.ndarray]:
    words = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)  # 4 entries of 3 values
    tokens = np.arange(n * 2).reshape(n, 2) % 4
    images = np.eye(5, dtype=np.float32)
    return Lookup({"question": (words, tokens), "image": (images, np.arange(n) % 5)}), np.arange(n)


def epoch(batches: Batches, k: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    batches.set_epoch(k)
    return [batches[i] for i in range(len(batches))]


def labels(batches: list[tuple[dict[str, np.ndarray], np.ndarray]]) -> np.ndarray:
    return np.concatenate([y for _, y in batches])


def test_rows_and_subset_match_the_dense_lookup() -> None:
    x, _ = lookup()
    dense = x.rows(slice(None))
    assert dense["question"].shape == (10, 2, 3) and dense["image"].shape == (10, 5)
    rows = np.array([7, 2])
    sub = x.subset(rows)
    assert len(sub) == 2
    for name in ("question", "image"):
        assert np.array_equal(sub.rows(slice(None))[name], dense[name][rows])


def test_each_epoch_feeds_every_row_once_in_an_order_of_the_seed_and_epoch() -> None:
    x, y = lookup()
    a, b = Batches(x, y, 4, seed=3), Batches(x, y, 4, seed=3)
    assert len(a) == 3  # 4 + 4 + 2
    first, second = epoch(a, 0), epoch(a, 1)
    orders = [labels(e) for e in (first, second)]
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled between epochs
    assert np.array_equal(orders[1], labels(epoch(b, 1)))  # epoch 1 without epoch 0 before it: a resumed run
    dense = x.rows(slice(None))
    for inputs, ys in first:  # each label travels with its own row's inputs
        assert np.array_equal(inputs["image"], dense["image"][ys])


def test_a_resumed_epoch_leaves_out_the_batches_trained_before() -> None:
    x, y = lookup()
    whole, resumed = Batches(x, y, 4, seed=3), Batches(x, y, 4, seed=3)
    resumed.resume(2, 1)
    assert len(resumed) == 2
    assert np.array_equal(labels(epoch(resumed, 2)), labels(epoch(whole, 2))[4:])
    assert len(epoch(resumed, 3)) == 3  # the epoch after it is whole


def test_arrays_are_fed_the_same_way() -> None:
    features, y = np.arange(20).reshape(10, 2), np.arange(10)
    for inputs, ys in epoch(Batches({"a": features}, y, 4, seed=1), 0):
        assert np.array_equal(inputs["a"], features[ys])
    rows = labels(epoch(Batches(features, y, 4, seed=1), 0))
    assert np.array_equal(rows, labels(epoch(Batches(x=lookup()[0], y=y, batch_size=4, seed=1), 0)))


def test_prediction_batches_keep_the_row_order() -> None:
    x, _ = lookup()
    batches = Batches(x, None, 4)
    images = np.concatenate([batches[i]["image"] for i in range(len(batches))])
    assert np.array_equal(images, x.rows(slice(None))["image"])
