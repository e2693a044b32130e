"""VGG-16 fc2 ("fc7") features computed from images, in the layout the VQA loader reads.

    python -m runner.vqa.features --images DIR --weights FILE --to DIR [--batch 32]

Every .jpg/.jpeg/.png in DIR is resized to 224 x 224, preprocessed as VGG-16 expects and passed through
`keras.applications.VGG16` up to its fc2 layer, with the weights read from FILE (nothing is downloaded).
The image id is the number that ends the file name (COCO's `COCO_val2014_000000123456.jpg` is 123456).
Writes `vgg_feats.npy` (4096 x N, Karpathy's layout) and `coco_vgg_IDMap.txt` (`image_id column`). The
loader reads one folder: put the two files beside the questions, annotations and word vectors, add that folder
as the next `vqa` version (`runner data add vqa DIR`) and train with `dataset.features=vgg_feats.npy`.
As a command-mode run, so that the features' own provenance is on record:

    python -m runner command='python -m runner.vqa.features --images /input/images --weights
    /input/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5 --to /output' 'data=[coco_images@1:/input/images,
    vgg16@1:/input/vgg16]' env=keras_models
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from runner.errors import DataError
from runner.loaders import in_run_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_ids(folder: Path) -> list[tuple[int, Path]]:
    """(image id, file) for each image in the folder, by id; a name that ends in no number is an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of images.")
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        found = re.search(r"(\d+)$", path.stem)
        if not found:
            raise DataError(
                f"{path}: no image id at the end of the name (as in COCO_val2014_000000123456.jpg)."
            )
        out.append((int(found.group(1)), path))
    if not out:
        raise DataError(f"{folder}: no {', '.join(IMAGE_SUFFIXES)} images.")
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"{folder}: image ids {twice[:5]} appear in more than one file name.")
    return sorted(out)


def fc2_model(weights: Path):  # type: ignore[no-untyped-def]
    import keras

    if not weights.is_file():
        raise DataError(f"{weights}: no such file (VGG-16 weights with the classifier top, .h5).")
    try:
        vgg = keras.applications.VGG16(weights=str(weights), include_top=True)
    except (ValueError, OSError) as err:
        raise DataError(f"{weights}: not VGG-16 weights with the classifier top ({err}).") from None
    return keras.Model(vgg.input, vgg.get_layer("fc2").output, name="vgg16_fc2")


def compute(images: Path, weights: Path, dest: Path, batch: int = 32) -> np.ndarray:
    """Writes the features and the map; returns the (4096, N) matrix."""
    import keras
    from keras.applications.vgg16 import preprocess_input

    found = image_ids(images)
    model = fc2_model(weights)
    feats = np.empty((4096, len(found)), dtype=np.float32)  # one copy: full COCO is 2 GB of it
    for start in range(0, len(found), batch):
        pixels = np.stack(
            [
                keras.utils.img_to_array(keras.utils.load_img(p, target_size=(224, 224)))
                for _, p in found[start : start + batch]
            ]
        )
        feats[:, start : start + len(pixels)] = model.predict(preprocess_input(pixels), verbose=0).T
        print(f"[features] {start + len(pixels)}/{len(found)} images", flush=True)
    dest.mkdir(parents=True, exist_ok=True)
    np.save(dest / "vgg_feats.npy", feats)
    (dest / "coco_vgg_IDMap.txt").write_text("".join(f"{i} {c}\n" for c, (i, _) in enumerate(found)))
    print(f"wrote {dest}/vgg_feats.npy ({feats.shape[0]} x {feats.shape[1]}) and coco_vgg_IDMap.txt")
    return feats


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.vqa.features", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--images", required=True, help="folder of images, each named with its image id")
    parser.add_argument("--weights", required=True, help="VGG-16 weights file (with the classifier top)")
    parser.add_argument("--to", dest="dest", required=True, help="folder to write the features into")
    parser.add_argument("--batch", type=positive, default=32, help="images per forward pass")
    args = parser.parse_args(argv)
    try:
        compute(in_run_path(args.images), in_run_path(args.weights), in_run_path(args.dest), args.batch)
    except DataError as err:
        print(f"runner.vqa.features: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
