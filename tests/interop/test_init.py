"""``pretrain(init=PATH)`` / ``--init``: the encoder starts from the file's weights, and the run records it."""

import json

import numpy as np
import pytest

from kmedssl import recipes
from kmedssl.interop import load_into, parse_init
from kmedssl.recipes.registry import make_recipe

TINY = dict(epochs=1, steps_per_epoch=1, batch_size=4, image_size=32, patch_size=8, data_size=40)


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory):
    """A ``.keras`` encoder of the tiny S-PCL recipe's architecture with weights unlike a fresh one's."""
    encoder = make_recipe("spcl", "phantom", **TINY).build_encoder()
    encoder.set_weights([w + 0.5 for w in encoder.get_weights()])
    path = tmp_path_factory.mktemp("init") / "start.keras"
    encoder.save(path)
    return path, encoder.get_weights()


def test_pretraining_starts_from_the_init_file_and_records_it(start_weights, tmp_path):
    path, weights = start_weights
    result = recipes.pretrain("spcl", output_dir=tmp_path / "run", verbose=0, init=path, learning_rate=1e-12,
                              weight_decay=0.0, **TINY)
    for trained, start in zip(result.encoder.get_weights(), weights):
        np.testing.assert_allclose(trained, start, atol=1e-6)  # one step at lr 1e-12 moves nothing
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["init"] == str(path.resolve())
    with pytest.raises(ValueError, match="init=None"):  # a resume must name the same start
        recipes.pretrain("spcl", output_dir=tmp_path / "run", resume=True, verbose=0, learning_rate=1e-12,
                         weight_decay=0.0, **TINY)


def test_a_mismatching_init_file_is_refused_before_training(start_weights, tmp_path):
    other = make_recipe("spcl", "phantom", **{**TINY, "patch_size": 4}).build_encoder()  # 4x4 patch kernels
    path = tmp_path / "other.keras"
    other.save(path)
    with pytest.raises(ValueError, match="other.keras"):
        recipes.pretrain("spcl", output_dir=tmp_path / "run", verbose=0, init=path, **TINY)
    assert not (tmp_path / "run" / "environment.json").exists()


@pytest.mark.backend_free
def test_parse_init_reads_the_imagenet_prefix_and_names_a_missing_file(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    assert parse_init(weights) == (weights, None)
    assert parse_init(f"imagenet:{weights}") == (weights, "imagenet")
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path}/missing.pth: initial weights not found$"):
        parse_init(f"imagenet:{tmp_path}/missing.pth")


def test_an_imagenet_init_folds_the_normalisation_and_is_recorded(tmp_path):
    rgb = make_recipe("spcl", "phantom", **TINY).build_encoder()
    rgb = type(rgb).from_config({**rgb.get_config(), "channels": 3})  # an RGB model of the same architecture
    path = tmp_path / "rgb.keras"
    rgb.save(path)
    result = recipes.pretrain("spcl", output_dir=tmp_path / "run", verbose=0, init=f"imagenet:{path}",
                              learning_rate=1e-12, weight_decay=0.0, **TINY)
    expected = load_into(make_recipe("spcl", "phantom", **TINY).build_encoder(), path, source_normalization="imagenet")
    for trained, folded in zip(result.encoder.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(trained, folded, atol=1e-6)
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["init"] == f"imagenet:{path.resolve()}"
