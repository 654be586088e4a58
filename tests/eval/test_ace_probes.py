"""ACE property probes: shapes, ranges, determinism, and closed-form cases with a mean-colour encoder."""

import keras
import numpy as np
import pytest
from keras import ops

from kmedssl.backbones import VisionTransformer
from kmedssl.eval.ace_probes import (
    compositionality,
    decompositionality,
    patch_to_image_retrieval,
    plot_similarity_distribution,
)


class MeanColour(keras.Model):
    """``features`` = per-channel mean pixel: the mean over sub-patches of equal area is the patch's own."""

    image_size = 8

    def features(self, images):
        return ops.mean(images, axis=(1, 2))  # (B, C)


def constant_images(rng, count=8, side=12):
    """Each image one random RGB colour (distinct directions, so cosine identifies the colour)."""
    colours = rng.uniform(0.1, 1.0, (count, 1, 1, 3)).astype("float32")
    return np.broadcast_to(colours, (count, side, side, 3)).copy()


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(1)
    return VisionTransformer(image_size=16, patch_size=8, dim=16, depth=1, num_heads=2)


def test_mean_colour_encoder_gives_the_closed_form_answers(rng):
    encoder, images = MeanColour(), constant_images(rng)
    result = compositionality(encoder, images, patch_size_px=6, num_patches=5, batch_size=2, seed=0)
    for n in ("2", "4"):
        np.testing.assert_allclose(result["similarities"][n], np.ones(5), rtol=1e-6)
        assert result["mean"][n] == pytest.approx(1.0)
    # f(X) - f(X\C) = area(C)/area(X) * colour = a multiple of f(C): every region is recognised.
    decomposed = decompositionality(encoder, images, batch_size=4, seed=0)
    assert decomposed["accuracy"] == 1.0 and decomposed["n_queries"] == 8 and decomposed["chance"] == 0.25
    np.testing.assert_allclose(decomposed["cosine"], np.ones(8), rtol=1e-6)
    retrieved = patch_to_image_retrieval(encoder, images, batch_size=4, seed=0)
    assert retrieved == {"accuracy": 1.0, "n_queries": 8, "chance": 0.25}


def test_vit_probes_shapes_ranges_and_determinism(vit, rng):
    images = rng.random((9, 20, 20, 1)).astype("float32")
    first = compositionality(vit, images, patch_size_px=10, num_patches=4, batch_size=4, seed=3)
    again = compositionality(vit, images, patch_size_px=10, num_patches=4, batch_size=4, seed=3)
    other = compositionality(vit, images, patch_size_px=10, num_patches=4, batch_size=4, seed=4)
    for n in ("2", "4"):
        values = first["similarities"][n]
        assert values.shape == (4,) and np.all(np.abs(values) <= 1.0 + 1e-9)
        assert first["mean"][n] == pytest.approx(values.mean())
        np.testing.assert_allclose(again["similarities"][n], values, rtol=1e-5)
        assert not np.allclose(other["similarities"][n], values)
    for probe in (decompositionality, patch_to_image_retrieval):
        result = probe(vit, images, batch_size=4, seed=0)
        assert result["n_queries"] == 8  # two full batches; the ninth image is left out
        assert 0.0 <= result["accuracy"] <= 1.0 and result["accuracy"] * 8 == int(result["accuracy"] * 8)
        assert probe(vit, images, batch_size=4, seed=0)["accuracy"] == result["accuracy"]
    decomposed = decompositionality(vit, images, batch_size=4, seed=0)
    assert decomposed["cosine"].shape == (8,) and np.all(np.abs(decomposed["cosine"]) <= 1.0 + 1e-9)


def test_bad_arguments_raise(vit, rng):
    images = rng.random((4, 12, 12, 1)).astype("float32")
    with pytest.raises(ValueError, match="even patch_size_px"):
        compositionality(vit, images, patch_size_px=7)
    with pytest.raises(ValueError, match="even patch_size_px"):
        compositionality(vit, images, patch_size_px=14)
    with pytest.raises(ValueError, match="at least batch_size images"):
        decompositionality(vit, images, batch_size=32)
    with pytest.raises(ValueError, match="area_range"):
        patch_to_image_retrieval(vit, images, area_range=(0.6, 0.3), batch_size=4)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        compositionality(vit, images[..., 0], patch_size_px=4)


@pytest.mark.backend_free
def test_plot_similarity_distribution_writes_a_png(tmp_path, rng):
    path = plot_similarity_distribution(
        {"trained, 4 sub-patches": np.clip(rng.normal(0.9, 0.04, 200), -1, 1),
         "random init, 4 sub-patches": np.clip(rng.normal(0.6, 0.15, 200), -1, 1),
         "constant": np.ones(10)},
        tmp_path / "figures" / "compositionality.png",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="non-empty"):
        plot_similarity_distribution({"empty": np.zeros(0)}, tmp_path / "x.png")
