"""fc2 features from images with keras.applications.VGG16, in the layout the VQA loader reads.

ImageNet's weights cannot be downloaded here: the weights file is VGG-16's own architecture with Keras's random
initial weights, saved the way a user's weights file would be given. The pipeline around it is the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runner.errors import DataError
from runner.vqa import features, files


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.weights.h5"
    keras.applications.VGG16(weights=None, include_top=True).save_weights(path)
    return path


def write_image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_features_and_map_in_the_loaders_layout(weights: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "COCO_val2014_000000000042.png", seed=1)
    write_image(images / "COCO_val2014_000000000007.png", seed=2)
    write_image(images / "COCO_val2014_000000000513.png", seed=1)  # the same pixels as image 42
    (images / "notes.txt").write_text("not an image")
    feats = features.compute(images, weights, tmp_path / "out", batch=2)

    assert feats.shape == (4096, 3) and feats.min() >= 0  # fc2 is a ReLU layer
    assert files.read_feature_map(tmp_path / "out" / "coco_vgg_IDMap.txt") == {7: 0, 42: 1, 513: 2}
    assert np.array_equal(files.read_features(tmp_path / "out" / "vgg_feats.npy", 4096), feats.T)
    np.testing.assert_allclose(feats[:, 1], feats[:, 2], rtol=1e-4, atol=1e-5)  # same pixels, same feature
    assert not np.allclose(feats[:, 0], feats[:, 1])


def test_bad_input_names_the_file(weights: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "cat.png", seed=1)
    with pytest.raises(DataError, match=r"cat.png: no image id at the end of the name"):
        features.compute(images, weights, tmp_path / "out")
    with pytest.raises(DataError, match=r"missing.h5: no such file \(VGG-16 weights"):
        features.fc2_model(tmp_path / "missing.h5")
    (tmp_path / "junk.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"junk.weights.h5: not VGG-16 weights"):
        features.fc2_model(tmp_path / "junk.weights.h5")
