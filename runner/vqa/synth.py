"""A small synthetic VQA dataset in the real formats, with a signal both question and image carry.

    python -m runner.vqa.synth --to DIR [--images 400] [--seed 0]

Each image shows one object type, in one colour, some number of times (1-5); its 4,096-d "fc7" feature is
relu(colour + object + count prototypes + noise). Per image: two "what color is the OBJ?" (answer type other),
two "how many OBJs are there?" (number) and two "is there a OBJ in the picture?" (yes/no, half of them about
the object shown). Ten human answers each: the true answer, or with 10% chance a wrong one of the same type.
Files (the names the vqa dataset config expects): VQA v2 questions/annotations JSON for train2014 and
val2014 (80/20 by image), Karpathy's vgg_feats.mat (4096 x N, 'feats') with coco_vgg_IDMap.txt, and
GloVe-format 300-d word vectors (random, one per word used) in glove.6B.300d.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from runner.loaders import in_run_path
from runner.vqa.files import tokenize

OBJECTS = ["cat", "dog", "car", "bus", "horse", "bird", "boat", "kite"]
PLURALS = {"bus": "buses"}
COLORS = ["red", "blue", "green", "white", "black", "yellow"]
COUNTS = ["1", "2", "3", "4", "5"]
FILES = {
    "train": ("v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json"),
    "val": ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"),
}


def _humans(rng: np.random.RandomState, truth: str, pool: list[str]) -> list[str]:
    return [truth if rng.rand() < 0.9 else pool[rng.randint(len(pool))] for _ in range(10)]


def _questions(
    rng: np.random.RandomState, image_id: int, obj: str, color: str, count: str
) -> list[dict[str, Any]]:
    plural = PLURALS.get(obj, obj + "s")
    other = [o for o in OBJECTS if o != obj]
    asked = [obj, other[rng.randint(len(other))]]
    specs = [
        (f"what color is the {obj}?", "what color is the", "other", color, COLORS),
        (f"what color is the {obj} in the image?", "what color is the", "other", color, COLORS),
        (f"how many {plural} are there?", "how many", "number", count, COUNTS),
        (f"how many {plural} are in the picture?", "how many", "number", count, COUNTS),
        *(
            (
                f"is there a {o} in the picture?",
                "is there a",
                "yes/no",
                "yes" if o == obj else "no",
                ["yes", "no"],
            )
            for o in asked
        ),
    ]
    out = []
    for j, (text, qtype, atype, truth, pool) in enumerate(specs):
        answers = _humans(rng, truth, pool)
        modal = max(sorted(set(answers)), key=lambda a: (answers.count(a), a == truth))
        out.append({"question_id": image_id * 10 + j, "image_id": image_id, "question": text, "question_type": qtype,
                    "answer_type": atype, "multiple_choice_answer": modal, "answers": answers})  # fmt: skip
    return out


def generate(
    dest: Path, images: int = 400, seed: int = 0, image_dim: int = 4096, word_dim: int = 300
) -> None:
    from scipy.io import savemat

    rng = np.random.RandomState(seed)
    protos = {name: rng.normal(0, 1, image_dim) for name in OBJECTS + COLORS + COUNTS}
    image_ids = sorted(rng.choice(581_929, size=images, replace=False) + 1)
    feats = np.zeros((image_dim, images), dtype=np.float32)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for col, image_id in enumerate(image_ids):
        obj, color, count = OBJECTS[rng.randint(8)], COLORS[rng.randint(6)], COUNTS[rng.randint(5)]
        noise = rng.normal(0, 1, image_dim)
        feats[:, col] = np.maximum(0, protos[obj] + protos[color] + protos[count] + noise)
        split = "train" if rng.rand() < 0.8 else "val"
        splits[split] += _questions(rng, int(image_id), obj, color, count)

    dest.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        qfile, afile = FILES[split]
        questions = [{k: q[k] for k in ("question_id", "image_id", "question")} for q in items]
        annotations = [
            {**{k: q[k] for k in ("question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer")},
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(q["answers"])]}
            for q in items
        ]  # fmt: skip
        subtype = f"{split}2014"
        (dest / qfile).write_text(json.dumps({"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype, "questions": questions}))  # fmt: skip
        (dest / afile).write_text(json.dumps({"data_type": "mscoco", "data_subtype": subtype, "annotations": annotations}))  # fmt: skip
    savemat(str(dest / "vgg_feats.mat"), {"feats": feats})
    (dest / "coco_vgg_IDMap.txt").write_text("".join(f"{i} {c}\n" for c, i in enumerate(image_ids)))
    words = sorted({t for items in splits.values() for q in items for t in tokenize(q["question"])})
    with (dest / "glove.6B.300d.txt").open("w") as f:
        for word in words:
            f.write(word + " " + " ".join(f"{v:.5f}" for v in rng.normal(0, 0.4, word_dim)) + "\n")
    (dest / "README.txt").write_text("Synthetic VQA data in the real formats; see runner/vqa/synth.py.\n")
    print(
        f"wrote {dest}: {images} images, {len(splits['train'])} train and {len(splits['val'])} val questions"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.vqa.synth", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--to", dest="dest", required=True, help="folder to write the dataset into")
    parser.add_argument("--images", type=int, default=400, help="number of images (6 questions each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(in_run_path(args.dest), args.images, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
