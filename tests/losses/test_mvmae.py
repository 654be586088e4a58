"""mae_reconstruction and latent_alignment (paper 000, Eq. 1; SPEC §3.1) against the float64 oracle."""

import keras
import numpy as np
import pytest

from kmedssl.losses import latent_alignment, mae_reconstruction
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


def _reconstruction_inputs(rng, batch, length, pixels):
    target = rng.normal(loc=0.5, size=(batch, length, pixels)).astype("float32")
    pred = rng.normal(size=(batch, length, pixels)).astype("float32")
    mask = (rng.random((batch, length)) < 0.6).astype("float32")
    mask[:, 0] = 1.0
    return target, pred, mask


# === mae_reconstruction ===


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("batch, length, pixels", [(2, 5, 4), (3, 7, 12)])
def test_reconstruction_matches_oracle(rng, batch, length, pixels, norm_pix):
    target, pred, mask = _reconstruction_inputs(rng, batch, length, pixels)
    expected = oracles.mae_reconstruction(target, pred, mask, norm_pix)
    assert_close(mae_reconstruction(target, pred, mask, norm_pix=norm_pix), expected)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_reconstruction_gradient_matches_finite_differences(rng, norm_pix):
    target, pred, mask = _reconstruction_inputs(rng, 2, 3, 4)
    _, grads = value_and_grad(lambda t, p: mae_reconstruction(t, p, mask, norm_pix), target, pred)
    expected = finite_difference_grad(lambda t, p: oracles.mae_reconstruction(t, p, mask, norm_pix), [target, pred])
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-5)


def test_reconstruction_closed_forms(rng):
    target, pred, mask = _reconstruction_inputs(rng, 2, 5, 4)
    assert_close(mae_reconstruction(target, target, mask), 0.0)
    # Errors on visible patches are ignored.
    assert_close(mae_reconstruction(target, np.where(mask[..., None] > 0, target, pred), mask), 0.0)
    # A full mask gives the plain MSE.
    assert_close(mae_reconstruction(target, pred, np.ones_like(mask)), np.mean((pred - target) ** 2.0))
    # norm_pix: unbiased variance, eps 1e-6. Patch [0, 2] has mean 1 and unbiased variance 2.
    patch = np.array([[[0.0, 2.0]]], dtype="float32")
    normalised = np.array([-1.0, 1.0]) / np.sqrt(2.0 + 1e-6)
    loss = mae_reconstruction(patch, np.zeros_like(patch), np.ones((1, 1)), norm_pix=True)
    assert_close(loss, np.mean(normalised**2))
    # Nothing masked: 0, not NaN.
    assert_close(mae_reconstruction(target, pred, np.zeros_like(mask)), 0.0)


def test_reconstruction_invariant_to_patch_and_batch_permutation(rng):
    target, pred, mask = _reconstruction_inputs(rng, 3, 6, 4)
    loss = to_numpy(mae_reconstruction(target, pred, mask, norm_pix=True))
    patches, batch = rng.permutation(6), rng.permutation(3)
    permuted = mae_reconstruction(target[batch][:, patches], pred[batch][:, patches], mask[batch][:, patches], True)
    np.testing.assert_allclose(to_numpy(permuted), loss, rtol=1e-5)


def test_reconstruction_bfloat16_gives_float32_scalar(rng):
    target, pred, mask = _reconstruction_inputs(rng, 2, 5, 4)
    t16, p16 = (keras.ops.cast(x, "bfloat16") for x in (target, pred))
    loss = mae_reconstruction(t16, p16, mask, norm_pix=True)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    rounded = [to_numpy(keras.ops.cast(x, "float32")) for x in (t16, p16)]
    assert_close(loss, oracles.mae_reconstruction(*rounded, mask, True))
    assert_close(loss, oracles.mae_reconstruction(target, pred, mask, True), rtol=2e-2)


def test_reconstruction_invalid_arguments(rng):
    target, pred, mask = _reconstruction_inputs(rng, 2, 5, 4)
    with pytest.raises(ValueError, match="mask"):
        mae_reconstruction(target, pred, mask[:, :4])
    with pytest.raises(ValueError, match="pred"):
        mae_reconstruction(target, pred[:, :, :3], mask)
    with pytest.raises(ValueError, match="P >= 2"):
        mae_reconstruction(target[..., :1], pred[..., :1], mask, norm_pix=True)


# === latent_alignment ===


@pytest.mark.parametrize("mode", ["tokens", "pooled"])
@pytest.mark.parametrize("batch, tokens, dim", [(2, 5, 4), (3, 4, 8)])
def test_alignment_matches_oracle(rng, batch, tokens, dim, mode):
    f, l = rng.normal(size=(2, batch, tokens, dim)).astype("float32")
    assert_close(latent_alignment(f, l, mode), oracles.latent_alignment(f, l, mode))


@pytest.mark.parametrize("mode", ["tokens", "pooled"])
def test_alignment_gradient_matches_finite_differences(rng, mode):
    f, l = rng.normal(size=(2, 2, 3, 4)).astype("float32")
    _, grads = value_and_grad(lambda a, b: latent_alignment(a, b, mode), f, l)
    expected = finite_difference_grad(lambda a, b: oracles.latent_alignment(a, b, mode), [f, l])
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["tokens", "pooled"])
def test_alignment_invariant_to_view_swap_and_batch_permutation(rng, mode):
    f, l = rng.normal(size=(2, 4, 3, 5)).astype("float32")
    loss = to_numpy(latent_alignment(f, l, mode))
    perm = rng.permutation(4)
    np.testing.assert_allclose(to_numpy(latent_alignment(l, f, mode)), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(latent_alignment(f[perm], l[perm], mode)), loss, rtol=1e-5)


def test_alignment_closed_forms(rng):
    f = rng.normal(size=(2, 5, 4)).astype("float32")
    # tokens: a constant offset c on every entry gives T * c^2 (sum over tokens of the per-token MSE).
    assert_close(latent_alignment(f, f + 0.5, "tokens"), 5 * 0.25)
    # pooled: opposite pooled directions give 0.5 * mean_d (2 n(a))^2 = 2 / D; a rescaling gives 0.
    assert_close(latent_alignment(f, -f, "pooled"), 2 / 4)
    assert_close(latent_alignment(f, 3 * f, "pooled"), 0.0)


@pytest.mark.parametrize("mode", ["tokens", "pooled"])
def test_alignment_bfloat16_gives_float32_scalar(rng, mode):
    f, l = rng.normal(size=(2, 2, 5, 4)).astype("float32")
    f16, l16 = (keras.ops.cast(x, "bfloat16") for x in (f, l))
    loss = latent_alignment(f16, l16, mode)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    rounded = [to_numpy(keras.ops.cast(x, "float32")) for x in (f16, l16)]
    assert_close(loss, oracles.latent_alignment(*rounded, mode))
    assert_close(loss, oracles.latent_alignment(f, l, mode), rtol=2e-2)


def test_alignment_invalid_arguments(rng):
    f, l = rng.normal(size=(2, 2, 5, 4)).astype("float32")
    with pytest.raises(ValueError, match="mode"):
        latent_alignment(f, l, mode="cls")
    with pytest.raises(ValueError, match="same shape"):
        latent_alignment(f, l[:, :4])
