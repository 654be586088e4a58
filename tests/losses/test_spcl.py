"""tsp_similarity / tsp_infonce / TSPInfoNCE (paper 003, Eqs. 1-2; SPEC §3.4) against the float64 oracle."""

import math

import keras
import numpy as np
import pytest

from kmedssl.losses import TSPInfoNCE, tsp_infonce, tsp_similarity
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


def _pair(rng, batch, dim):
    return rng.normal(size=(2, batch, dim)).astype("float32")


@pytest.mark.parametrize("kappa", [0.0, 1.0, 16.0])
def test_similarity_matches_oracle(rng, kappa):
    a, b = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(5, 4)).astype("float32")
    assert_close(tsp_similarity(a, b, kappa), oracles.tsp_similarity(a, b, kappa))


def test_similarity_closed_forms():
    kappa = 16.0
    basis = np.eye(2, dtype="float32")
    a = np.stack([basis[0], basis[0], basis[0]])
    b = np.stack([3 * basis[0], basis[1], -basis[0]])  # c = 1, 0, -1
    values = np.diag(to_numpy(tsp_similarity(a, b, kappa)))
    np.testing.assert_allclose(values, [1.0, 0.5 / (1 + kappa), 0.0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch, dim, kappa, scale", [(4, 8, 16.0, 1 / 0.07), (3, 5, 2.0, 10.0), (6, 2, 16.0, 1.0)])
def test_matches_oracle(rng, batch, dim, kappa, scale):
    z_1, z_2 = _pair(rng, batch, dim)
    assert_close(tsp_infonce(z_1, z_2, kappa, scale), oracles.tsp_infonce(z_1, z_2, kappa, scale))


def test_gradient_matches_finite_differences_including_scale(rng):
    z_1, z_2 = _pair(rng, 3, 4)
    scale = np.float32(5.0)
    _, grads = value_and_grad(lambda a, b, s: tsp_infonce(a, b, kappa=4.0, scale=s), z_1, z_2, scale)
    expected = finite_difference_grad(lambda a, b, s: oracles.tsp_infonce(a, b, 4.0, float(s)), [z_1, z_2, scale])
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-5)


def test_gradient_reaches_a_clamped_log_scale(rng):
    """As in the S-PCL model: scale = clip(exp(log_scale), 1, 100), log_scale trainable."""
    z_1, z_2 = _pair(rng, 3, 4)
    log_scale = np.float32(math.log(1 / 0.07))

    def loss(s):
        return tsp_infonce(z_1, z_2, scale=keras.ops.clip(keras.ops.exp(s), 1.0, 100.0))

    _, (grad,) = value_and_grad(loss, log_scale)
    (expected,) = finite_difference_grad(lambda s: oracles.tsp_infonce(z_1, z_2, 16.0, math.exp(s)), [log_scale])
    assert grad != 0.0
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_invariant_to_view_swap_and_batch_permutation(rng):
    z_1, z_2 = _pair(rng, 6, 5)
    loss = to_numpy(tsp_infonce(z_1, z_2))
    perm = rng.permutation(6)
    np.testing.assert_allclose(to_numpy(tsp_infonce(z_2, z_1)), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(tsp_infonce(z_1[perm], z_2[perm])), loss, rtol=1e-5)


def test_closed_form_orthonormal_pairs():
    batch, kappa, scale = 3, 16.0, 10.0
    z = np.eye(batch, 4, dtype="float32")
    # Positive: sim 1; the 2B - 2 orthogonal rows: sim 0.5 / (1 + kappa).
    negative = scale * 0.5 / (1 + kappa)
    expected = -scale + math.log(math.exp(scale) + (2 * batch - 2) * math.exp(negative))
    assert_close(tsp_infonce(z, z, kappa, scale), expected)


def test_compiled_with_tensor_scale(rng):
    z_1, z_2 = _pair(rng, 4, 3)
    backend = keras.backend.backend()
    fn = lambda a, b, s: tsp_infonce(a, b, 16.0, s)  # noqa: E731
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, 3))
        fn = tf.function(fn, input_signature=[spec, spec, tf.TensorSpec(())])
    elif backend == "jax":
        import jax

        fn = jax.jit(fn)
    assert_close(fn(z_1, z_2, np.float32(12.0)), oracles.tsp_infonce(z_1, z_2, 16.0, 12.0))


def test_bfloat16_gives_float32_scalar(rng):
    z_1, z_2 = _pair(rng, 4, 8)
    a16, b16 = (keras.ops.cast(z, "bfloat16") for z in (z_1, z_2))
    loss = tsp_infonce(a16, b16)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    rounded = [to_numpy(keras.ops.cast(z, "float32")) for z in (a16, b16)]
    assert_close(loss, oracles.tsp_infonce(*rounded))
    assert_close(loss, oracles.tsp_infonce(z_1, z_2), rtol=2e-2)


def test_loss_class_and_config(rng):
    z_1, z_2 = _pair(rng, 4, 8)
    loss = TSPInfoNCE(kappa=8.0, scale=20.0)
    stacked = np.stack([z_1, z_2], axis=1)  # (B, 2, D)
    assert_close(loss(np.zeros(4, "float32"), stacked), oracles.tsp_infonce(z_1, z_2, 8.0, 20.0))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, TSPInfoNCE) and restored.get_config() == loss.get_config()


def test_invalid_arguments(rng):
    z_1, z_2 = _pair(rng, 4, 8)
    with pytest.raises(ValueError, match="kappa"):
        tsp_similarity(z_1, z_2, kappa=-1.0)
    with pytest.raises(ValueError, match="scale"):
        tsp_infonce(z_1, z_2, scale=0.0)
    with pytest.raises(ValueError, match="same shape"):
        tsp_infonce(z_1, z_2[:2])
    with pytest.raises(ValueError, match="Expected a"):
        tsp_similarity(z_1, z_2[:, :3], kappa=1.0)
