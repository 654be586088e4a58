"""multiview_infonce / MultiviewInfoNCE (paper 000, Eq. 2; SPEC §3.2) against the float64 oracle."""

import math

import keras
import numpy as np
import pytest

from kmedssl.losses import MultiviewInfoNCE, multiview_infonce, nt_xent
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


def _pair(rng, batch, dim):
    return rng.normal(size=(2, batch, dim)).astype("float32")


@pytest.mark.parametrize("exclude_positive", [True, False])
@pytest.mark.parametrize("batch, dim, temperature", [(4, 8, 0.1), (3, 5, 0.5), (6, 2, 0.2)])
def test_matches_oracle(rng, batch, dim, temperature, exclude_positive):
    z_f, z_l = _pair(rng, batch, dim)
    expected = oracles.multiview_infonce(z_f, z_l, temperature, exclude_positive)
    assert_close(multiview_infonce(z_f, z_l, temperature, exclude_positive), expected)


def test_without_exclusion_equals_nt_xent(rng):
    z_f, z_l = _pair(rng, 5, 4)
    assert_close(multiview_infonce(z_f, z_l, 0.3, exclude_positive=False), to_numpy(nt_xent(z_f, z_l, 0.3)))


@pytest.mark.parametrize("exclude_positive", [True, False])
def test_gradient_matches_finite_differences(rng, exclude_positive):
    z_f, z_l = _pair(rng, 3, 4)
    _, grads = value_and_grad(lambda a, b: multiview_infonce(a, b, 0.2, exclude_positive), z_f, z_l)
    expected = finite_difference_grad(lambda a, b: oracles.multiview_infonce(a, b, 0.2, exclude_positive), [z_f, z_l])
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-5)


def test_invariant_to_view_swap_and_batch_permutation(rng):
    z_f, z_l = _pair(rng, 6, 5)
    loss = to_numpy(multiview_infonce(z_f, z_l))
    perm = rng.permutation(6)
    np.testing.assert_allclose(to_numpy(multiview_infonce(z_l, z_f)), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(multiview_infonce(z_f[perm], z_l[perm])), loss, rtol=1e-5)


def test_closed_forms():
    batch, temperature = 4, 0.1
    orthonormal = np.eye(batch, 6, dtype="float32")
    # Eq. 2: positive exp(1/T) over 2B - 2 orthogonal terms exp(0): -1/T + log(2B - 2).
    assert_close(multiview_infonce(orthonormal, orthonormal, temperature), -1 / temperature + math.log(2 * batch - 2))
    same = np.ones((batch, 6), dtype="float32")
    assert_close(multiview_infonce(same, same, temperature), math.log(2 * batch - 2))


def test_bfloat16_gives_float32_scalar(rng):
    z_f, z_l = _pair(rng, 4, 8)
    f16, l16 = (keras.ops.cast(z, "bfloat16") for z in (z_f, z_l))
    loss = multiview_infonce(f16, l16)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    rounded = [to_numpy(keras.ops.cast(z, "float32")) for z in (f16, l16)]
    assert_close(loss, oracles.multiview_infonce(*rounded))
    assert_close(loss, oracles.multiview_infonce(z_f, z_l), rtol=2e-2)


def test_loss_class_and_config(rng):
    z_f, z_l = _pair(rng, 4, 8)
    loss = MultiviewInfoNCE(temperature=0.5, exclude_positive=False)
    stacked = np.stack([z_f, z_l], axis=1)  # (B, 2, D)
    assert_close(loss(np.zeros(4, "float32"), stacked), oracles.multiview_infonce(z_f, z_l, 0.5, False))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, MultiviewInfoNCE) and restored.get_config() == loss.get_config()


def test_invalid_arguments(rng):
    z_f, z_l = _pair(rng, 4, 8)
    with pytest.raises(ValueError, match="temperature"):
        multiview_infonce(z_f, z_l, temperature=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        multiview_infonce(z_f, z_l[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        multiview_infonce(z_f[:1], z_l[:1])
