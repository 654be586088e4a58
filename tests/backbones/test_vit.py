import keras
import numpy as np
import pytest

from kmedssl.backbones import DropPath, VisionTransformer, vision_transformer
from tests.backbones.backbone_checks import run_backbone_checks
from tests.helpers import assert_close, to_numpy

KWARGS = dict(image_size=32, patch_size=8, channels=1, dim=32, depth=2, num_heads=2)  # 16 patches


def _images(rng, batch=2, channels=1):
    return rng.normal(size=(batch, 32, 32, channels)).astype("float32")


def test_backbone_checks(rng, tmp_path):
    indices = np.stack([rng.permutation(16)[:5] for _ in range(2)]).astype("int32")
    model = run_backbone_checks(
        VisionTransformer, {**KWARGS, "drop_path_rate": 0.1, "seed": 3}, (_images(rng),), (2, 6, 32), tmp_path,
        call_kwargs={"token_indices": indices},
    )
    assert (model.dim, model.grid_size, model.num_patches, model.patch_dim) == (32, 4, 16, 64)
    assert tuple(model.features(_images(rng)).shape) == (2, 32)


def test_all_indices_in_order_equal_none(rng):
    model, images = VisionTransformer(**KWARGS), _images(rng)
    every = np.tile(np.arange(16, dtype="int32"), (2, 1))
    assert_close(model(images, token_indices=every), to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    assert_close(model.features(images), to_numpy(model(images))[:, 0], rtol=1e-6, atol=1e-6)


def test_tokens_follow_their_patches(rng):
    # Attention is permutation-equivariant, so positions must travel with their patches: permuting the
    # indices permutes the patch tokens and leaves CLS unchanged. Each sample uses its own permutation.
    model, images = VisionTransformer(**KWARGS), _images(rng)
    full = to_numpy(model(images))
    perms = np.stack([rng.permutation(16) for _ in range(2)]).astype("int32")
    permuted = to_numpy(model(images, token_indices=perms))
    assert_close(permuted[:, 0], full[:, 0], rtol=1e-4, atol=1e-5)
    assert_close(permuted[:, 1:], np.take_along_axis(full[:, 1:], perms[..., None], axis=1), rtol=1e-4, atol=1e-5)


def test_subset_without_blocks_is_gather_of_full(rng):
    # depth 0: token j = LN(E p_i + pos_i) with i = token_indices[:, j], whatever else is selected.
    model, images = VisionTransformer(**{**KWARGS, "depth": 0}), _images(rng)
    subset = np.array([[15, 0, 7], [3, 3, 9]], dtype="int32")
    full = to_numpy(model(images))
    assert_close(model(images, token_indices=subset)[:, 1:], np.take_along_axis(full[:, 1:], subset[..., None], 1))


def test_samples_are_encoded_independently(rng):
    # Sample 0 (with its own indices) encodes the same whatever sample 1 and its indices are.
    model, images = VisionTransformer(**KWARGS), _images(rng)
    subset = np.stack([rng.permutation(16)[:6] for _ in range(2)]).astype("int32")
    other_images, other_subset = images.copy(), subset.copy()
    other_images[1], other_subset[1] = rng.normal(size=(32, 32, 1)), rng.permutation(16)[:6]
    first = to_numpy(model(images, token_indices=subset))[0]
    assert_close(model(other_images, token_indices=other_subset)[0], first, rtol=1e-5, atol=1e-5)


def test_positions_are_fixed_mae_sincos():
    model = VisionTransformer(**KWARGS)
    grid, dim = 4, 32
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    expected = np.zeros((grid * grid, dim))
    for k in range(grid * grid):
        row, col = divmod(k, grid)
        column_code = [np.sin(col * omega), np.cos(col * omega)]
        row_code = [np.sin(row * omega), np.cos(row * omega)]
        expected[k] = np.concatenate(column_code + row_code)
    assert_close(model.position_embedding, expected, rtol=1e-6, atol=1e-6)
    assert not model.position_embedding.trainable
    assert all(w.path != model.position_embedding.path for w in model.trainable_weights)


def test_patchify_layout_and_round_trip(rng):
    model = VisionTransformer(**{**KWARGS, "channels": 3})
    images = _images(rng, channels=3)
    patches = to_numpy(model.patchify(images))
    assert patches.shape == (2, 16, 8 * 8 * 3)
    for k in range(16):
        row, col = divmod(k, 4)
        np.testing.assert_array_equal(patches[:, k], images[:, 8 * row:8 * row + 8, 8 * col:8 * col + 8].reshape(2, -1))
    np.testing.assert_array_equal(to_numpy(model.unpatchify(patches)), images)


def test_drop_path_is_identity_at_inference(rng):
    images = _images(rng)
    dropping = VisionTransformer(**{**KWARGS, "drop_path_rate": 0.5})
    plain = VisionTransformer(**KWARGS)
    plain.set_weights(dropping.get_weights())
    assert_close(dropping(images, training=False), to_numpy(plain(images)), rtol=1e-6, atol=1e-6)
    assert not np.allclose(to_numpy(dropping(images, training=True)), to_numpy(plain(images)))


def test_drop_path_drops_whole_samples(rng):
    layer = DropPath(0.5, seed=0)
    x = rng.normal(size=(64, 3, 4)).astype("float32") + 5.0
    ratio = to_numpy(layer(x, training=True)) / x
    per_sample = ratio[:, 0, 0]
    np.testing.assert_allclose(ratio, np.broadcast_to(per_sample[:, None, None], ratio.shape), rtol=1e-6)
    assert set(np.round(per_sample, 5)) == {0.0, 2.0}


def test_mixed_bfloat16_matches_float32(rng):
    images = _images(rng)
    full = VisionTransformer(**KWARGS)
    half = VisionTransformer(**KWARGS, dtype="mixed_bfloat16")
    half.set_weights(full.get_weights())
    output = half(images, token_indices=np.array([[1, 2], [3, 4]]))
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    expected = to_numpy(full(images, token_indices=np.array([[1, 2], [3, 4]])))
    assert_close(keras.ops.cast(output, "float32"), expected, rtol=0.1, atol=0.1)


def test_named_sizes():
    model = vision_transformer("phantom", image_size=64, patch_size=8)
    assert (model.dim, model.depth, model.num_heads, model.num_patches) == (96, 4, 3, 64)
    assert vision_transformer("tiny", image_size=32, patch_size=16, depth=1).dim == 192
    with pytest.raises(ValueError, match="base"):
        vision_transformer("huge")


def test_invalid_arguments_and_inputs(rng):
    with pytest.raises(ValueError, match="divisible by patch_size"):
        VisionTransformer(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="num_heads"):
        VisionTransformer(**{**KWARGS, "num_heads": 3})
    model = VisionTransformer(**KWARGS)
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, 32, 32, 1\)"):
        model(rng.normal(size=(2, 24, 24, 1)).astype("float32"))
    with pytest.raises(ValueError, match="Received: images.shape"):
        model(_images(rng, channels=3))
    with pytest.raises(ValueError, match="token_indices"):
        model(_images(rng), token_indices=np.arange(4))


@pytest.mark.backend_free
@pytest.mark.parametrize("change, message", [
    ({"patch_size": 0}, r"Received: patch_size=0"),
    ({"dim": "32", "depth": -1}, r"Received: dim='32', depth=-1"),
    ({"image_size": 30}, "divisible by patch_size"),
    ({"mlp_ratio": 0.0, "input_std": float("nan"), "seed": 1.5}, r"Received: mlp_ratio=0.0, input_std=nan, seed=1.5"),
])
def test_validate_config_names_the_bad_fields_without_building(change, message):
    with pytest.raises(ValueError, match=message):
        VisionTransformer.validate_config({**KWARGS, **change})


def test_parameter_count_of_a_config_is_that_of_the_built_model():
    model = VisionTransformer(**{**KWARGS, "channels": 3, "mlp_ratio": 2.5, "drop_path_rate": 0.1, "seed": 1})
    assert VisionTransformer.parameter_count(model.get_config()) == model.count_params()


def test_input_normalisation_is_applied_first():
    """``(x - input_mean) / input_std`` before the patch embedding (paper 000 §2): a model with (0.5, 0.25) on
    x equals the same weights with (0, 1) on the normalised x."""
    normalised = VisionTransformer(image_size=16, patch_size=8, dim=16, depth=1, num_heads=2)
    raw = VisionTransformer(image_size=16, patch_size=8, dim=16, depth=1, num_heads=2, input_mean=0.0, input_std=1.0)
    raw.set_weights(normalised.get_weights())
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalised(x)),
                               keras.ops.convert_to_numpy(raw((x - 0.5) / 0.25)), rtol=1e-5, atol=1e-5)
    assert normalised.get_config()["input_std"] == 0.25
