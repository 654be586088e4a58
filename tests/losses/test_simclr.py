"""nt_xent / NTXent (SPEC §3.2) against the float64 oracle, plus gradients, invariances and closed forms."""

import math

import keras
import numpy as np
import pytest

from kmedssl.losses import NTXent, nt_xent
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


def _pair(rng, batch, dim):
    return rng.normal(size=(2, batch, dim)).astype("float32")


@pytest.mark.parametrize("batch, dim, temperature", [(4, 8, 0.1), (5, 3, 0.5), (2, 16, 0.07)])
def test_matches_oracle(rng, batch, dim, temperature):
    z_a, z_b = _pair(rng, batch, dim)
    assert_close(nt_xent(z_a, z_b, temperature), oracles.nt_xent(z_a, z_b, temperature))


def test_gradient_matches_finite_differences(rng):
    z_a, z_b = _pair(rng, 3, 4)
    value, grads = value_and_grad(lambda a, b: nt_xent(a, b, temperature=0.2), z_a, z_b)
    expected = finite_difference_grad(lambda a, b: oracles.nt_xent(a, b, 0.2), [z_a, z_b])
    np.testing.assert_allclose(value, oracles.nt_xent(z_a, z_b, 0.2), rtol=1e-5)
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-5)


def test_invariant_to_view_swap_batch_permutation_and_scale(rng):
    z_a, z_b = _pair(rng, 6, 5)
    loss = to_numpy(nt_xent(z_a, z_b))
    perm = rng.permutation(6)
    np.testing.assert_allclose(to_numpy(nt_xent(z_b, z_a)), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(nt_xent(z_a[perm], z_b[perm])), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(nt_xent(3.0 * z_a, 0.5 * z_b)), loss, rtol=1e-5)


def test_closed_forms():
    batch, temperature = 4, 0.1
    orthonormal = np.eye(batch, 6, dtype="float32")
    # Positive similarity 1, the 2B - 2 other rows orthogonal: log(1 + (2B - 2) exp(-1/T)).
    expected = math.log(1 + (2 * batch - 2) * math.exp(-1 / temperature))
    assert_close(nt_xent(orthonormal, orthonormal, temperature), expected)
    # All rows identical: every logit equal, so -log(1 / (2B - 1)).
    same = np.ones((batch, 6), dtype="float32")
    assert_close(nt_xent(same, same, temperature), math.log(2 * batch - 1))


def test_bfloat16_gives_float32_scalar(rng):
    z_a, z_b = _pair(rng, 4, 8)
    a16, b16 = (keras.ops.cast(z, "bfloat16") for z in (z_a, z_b))
    loss = nt_xent(a16, b16)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    rounded = [to_numpy(keras.ops.cast(z, "float32")) for z in (a16, b16)]
    assert_close(loss, oracles.nt_xent(*rounded, 0.1))
    assert_close(loss, oracles.nt_xent(z_a, z_b, 0.1), rtol=2e-2)


def test_loss_class_and_config(rng):
    z_a, z_b = _pair(rng, 4, 8)
    loss = NTXent(temperature=0.3)
    stacked = np.stack([z_a, z_b], axis=1)  # (B, 2, D)
    assert_close(loss(np.zeros(4, "float32"), stacked), oracles.nt_xent(z_a, z_b, 0.3))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, NTXent) and restored.get_config() == loss.get_config()


def test_invalid_arguments(rng):
    z_a, z_b = _pair(rng, 4, 8)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z_a, z_b, temperature=0.0)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(z_a, z_b[:3])
