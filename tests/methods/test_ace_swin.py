"""ACE with a Swin encoder (``--set encoder=swin``): the recipe builds and checks a Swin, its views cut cells of
the Swin's token stride, and a one-epoch phantom pretraining runs with a finite loss."""

import math

import keras
import numpy as np
import pytest

from kmedssl import recipes
from kmedssl.backbones import SwinTransformer
from kmedssl.recipes.registry import make_recipe

# The phantom Swin at 64 px: tokens of 16 px (patch 2, three mergings), a 4 x 4 grid; 8 cells of 16 px per source side.
SWIN = dict(encoder="swin", image_size=64, image_cells=8, head_dim=64, head_hidden_dim=32, head_bottleneck_dim=16)


@pytest.mark.backend_free
def test_recipe_checks_the_swin_settings_before_building():
    recipe = make_recipe("ace", "phantom", encoder="swin", image_size=64)
    assert recipe.token_stride() == 16 and make_recipe("ace", "phantom").token_stride() == 12  # ViT: patch_size
    # The ViT recipe's 96 px leave the phantom Swin's last stage a 6 x 6 grid, which its 4 x 4 windows do not tile
    with pytest.raises(ValueError, match=r"multiple of window_size=4. Received: stage 3: resolution=6"):
        make_recipe("ace", "phantom", encoder="swin")
    with pytest.raises(ValueError, match=r"Expected encoder in \('vit', 'swin'\). Received: encoder='resnet'"):
        make_recipe("ace", "phantom", encoder="resnet")
    with pytest.raises(ValueError, match=r"Expected encoder_size in \['base', 'phantom', 'small', 'tiny'\] for "
                                         r"encoder='swin'. Received: encoder_size='large'"):
        make_recipe("ace", "phantom", encoder="swin", encoder_size="large")
    with pytest.raises(ValueError, match="Expected image_size divisible by patch_size"):
        make_recipe("ace", "phantom", encoder="swin", image_size=40)
    with pytest.raises(ValueError, match="Expected an even token grid image_size / 16 for ACE on a Swin. Received: "
                                         "image_size=16"):
        make_recipe("ace", "phantom", encoder="swin", image_size=16)  # a 1 x 1 grid


def test_views_match_the_swin_grid():
    recipe = make_recipe("ace", "phantom", **SWIN)
    encoder = recipe.build_encoder()
    assert isinstance(encoder, SwinTransformer) and encoder.grid_size == 4
    image = np.random.default_rng(0).random((8 * 16, 8 * 16)).astype("float32")  # image_cells * token_stride
    views = recipe.views()({"image": image}, np.random.default_rng(0))
    assert views["crop_1"].shape == views["crop_2"].shape == (64, 64, 1)
    assert views["mask_1"].shape == (encoder.grid_size**2,)
    assert tuple(encoder(keras.KerasTensor((1, *views["crop_1"].shape))).shape) == (1, 1 + 16, encoder.dim)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="CI time: tracing the step (two Swins, "
                    "their EMA and AdamW) costs 30-50 s on TF and JAX; the Swin itself is checked on every backend")
def test_one_epoch_of_phantom_pretraining_with_a_swin(tmp_path):
    result = recipes.pretrain("ace", epochs=1, steps_per_epoch=1, batch_size=4, data_size=40, health_every=0,
                              verbose=0, output_dir=tmp_path / "run", **SWIN)
    assert isinstance(result.encoder, SwinTransformer) and isinstance(result.model.teacher, SwinTransformer)
    assert result.recipe.encoder == "swin"
    for term in ("loss", "global_loss", "composition_loss", "decomposition_loss"):
        assert all(math.isfinite(v) for v in result.history[term]), (term, result.history[term])
