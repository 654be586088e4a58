"""Zero-shot landmark correspondence (kmedssl.eval.correspondence, ACE §5.2) on every backend: an encoder whose
patch tokens depend on the patch's pixels alone (so an image and its copy shifted by whole patches have known
nearest patches), hand-computed pixel errors, visibility masking, a ResNet's and a Swin's last stage, and the
errors."""

import math

import keras
import numpy as np
import pytest

from kmedssl.backbones import ResNet18, VisionTransformer, swin_transformer
from kmedssl.eval.correspondence import evaluate_correspondence, extract_patch_tokens
from kmedssl.eval.intervals import Interval

SIZE, PATCH = 32, 8  # a 4 x 4 grid of 8-pixel patches; patch (c, r) has centre (8c + 3.5, 8r + 3.5)


@pytest.fixture(scope="module")
def content_encoder():
    """A ViT whose patch token is ``LN(standardised pixels of the patch)``: identity patch embedding, no positions,
    its one block zeroed (LayerNorm scales 0 and zero projections: the block is the identity)."""
    encoder = VisionTransformer(image_size=SIZE, patch_size=PATCH, dim=PATCH * PATCH, depth=1, num_heads=2, seed=0)
    for variable in encoder.blocks[0].weights:
        variable.assign(np.zeros(variable.shape, "float32"))
    encoder.position_embedding.assign(np.zeros(encoder.position_embedding.shape, "float32"))
    encoder.patch_embedding.kernel.assign(np.eye(PATCH * PATCH, dtype="float32"))
    encoder.patch_embedding.bias.assign(np.zeros(PATCH * PATCH, "float32"))
    return encoder


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(0).random((2, SIZE, SIZE, 1)).astype("float32")  # every patch distinct


def test_tokens_follow_content(content_encoder, noise):
    shifted = np.roll(noise[:1], PATCH, axis=2)  # one patch to the right, wrapping around
    tokens = extract_patch_tokens(content_encoder, np.concatenate([noise[:1], shifted]), batch_size=1)
    assert tokens.shape == (2, 16, PATCH * PATCH) and tokens.dtype == np.float32
    grid = tokens.reshape(2, 4, 4, -1)
    np.testing.assert_allclose(grid[1], np.roll(grid[0], 1, axis=1), atol=1e-5)


def test_self_correspondence_is_patch_quantisation(content_encoder, noise):
    points = np.array([[[10.0, 3.0], [0.0, 31.0], [12.2, 20.0]]] * 2)  # in patches (1, 0), (0, 3), (1, 2)
    visible = np.ones((2, 3), bool)
    result = evaluate_correspondence(content_encoder, noise, points, visible, noise, points, visible,
                                     landmark_names=["a", "b", "c"], n_resamples=50)
    # distance to the containing patch's centre: (11.5, 3.5), (3.5, 27.5), (11.5, 19.5)
    expected = [math.hypot(1.5, 0.5), math.hypot(3.5, 3.5), math.hypot(0.7, 0.5)]
    np.testing.assert_allclose(result["per_pair_error"], [expected] * 2, atol=1e-9)
    assert result["mean_error"] == pytest.approx(np.mean(expected))
    assert result["per_landmark"] == pytest.approx(dict(zip("abc", expected)))
    assert result["per_landmark_ci"]["b"].estimate == pytest.approx(expected[1])


def test_shifted_copy_visibility_and_intervals(content_encoder, noise):
    # key = query moved one patch right and two down: query patch (c, r) is found at key patch (c + 1, r + 2)
    key_images = np.roll(noise, (2 * PATCH, PATCH), axis=(1, 2))
    query_points = np.array([[[10.0, 3.0], [0.0, 4.0], [20.0, 9.0]],
                             [[10.0, 3.0], [0.0, 4.0], [20.0, 9.0]]])
    key_points = query_points + [PATCH, 2 * PATCH]
    key_points[1, 0] = (5.0, 5.0)  # pair 1, landmark 0: predicted (19.5, 19.5), 14.5 off on each axis
    query_visible = np.array([[True, False, True], [True, True, True]])
    key_visible = np.array([[True, True, True], [True, True, False]])
    result = evaluate_correspondence(content_encoder, noise, query_points, query_visible, key_images, key_points,
                                     key_visible, groups=["s", "s"], n_resamples=50)
    errors = result["per_pair_error"]
    quantisation = [math.hypot(1.5, 0.5), math.hypot(3.5, 0.5), math.hypot(0.5, 2.5)]
    np.testing.assert_allclose(errors[0], [quantisation[0], np.nan, quantisation[2]], atol=1e-9)
    np.testing.assert_allclose(errors[1], [math.hypot(14.5, 14.5), quantisation[1], np.nan], atol=1e-9)
    finite = errors[np.isfinite(errors)]
    assert result["mean_error"] == pytest.approx(finite.mean())
    assert result["per_landmark"]["0"] == pytest.approx((quantisation[0] + math.hypot(14.5, 14.5)) / 2)
    interval = result["mean_error_ci"]
    assert isinstance(interval, Interval) and interval.n_groups == 1  # both pairs in one study
    assert interval.estimate == pytest.approx(np.nanmean(np.nanmean(errors, axis=1)))


@pytest.mark.parametrize("name", ["resnet", "swin"])
def test_resnet_and_swin_grids(name):
    """Each patch its own nearest: the error is the distance to the patch's centre on the encoder's grid."""
    if name == "swin" and keras.backend.backend() == "jax":
        pytest.skip("the Swin's jit compile costs ~13 s on JAX (CI time); it takes the ViT's path, tested on JAX")
    if name == "resnet":  # test_resnet's width: on JAX its compiled initialisers are reused
        encoder, size, patch = ResNet18(width=8), 32, 8  # the cifar stem's last stage: stride 8
    else:  # test_swin's phantom Swin (same reuse): grids 32, 16, 8, 4 at 64 px
        encoder, size, patch = swin_transformer("phantom", image_size=64), 64, 16
    images = np.random.default_rng(1).random((2, size, size, 1)).astype("float32")
    points = np.array([[[10.0, 3.0], [0.0, size - 1.0]]] * 2)
    visible = np.ones((2, 2), bool)
    result = evaluate_correspondence(encoder, images, points, visible, images, points, visible, n_resamples=20)
    centres = (points + 0.5) // patch * patch + (patch - 1) / 2
    np.testing.assert_allclose(result["per_pair_error"], np.linalg.norm(points - centres, axis=-1), atol=1e-9)
    assert result["per_pair_error"][0, 0] == pytest.approx(math.hypot(1.5, 0.5) if patch == 8 else math.hypot(2.5, 4.5))


def test_errors(content_encoder, noise):
    points, visible = np.zeros((2, 1, 2)), np.ones((2, 1), bool)
    with pytest.raises(ValueError, match="VisionTransformer, SwinTransformer or ResNet"):
        evaluate_correspondence(keras.layers.Dense(2), noise, points, visible, noise, points, visible)
    with pytest.raises(ValueError, match="same shapes"):
        evaluate_correspondence(content_encoder, noise, points, visible, noise[:1], points[:1], visible[:1])
    with pytest.raises(ValueError, match=r"points \(N, K, 2\)"):
        evaluate_correspondence(content_encoder, noise, points[..., :1], visible, noise, points, visible)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        extract_patch_tokens(content_encoder, np.zeros((1, 30, 30, 1), "float32"))
