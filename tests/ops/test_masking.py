"""kmedssl.ops.random_partition (SPEC §3.4) and mae_masking (SPEC §3.1) against NumPy oracles."""

import keras
import numpy as np
import pytest

from kmedssl.ops import mae_masking, random_partition
from tests.helpers import to_numpy
from tests.losses import oracles


def _noise(rng, batch, tokens):
    return rng.random((batch, tokens)).astype("float32")


def _compiled(fn, tokens):
    """fn under the backend's compiler (tf.function with a dynamic batch, jax.jit); eager on torch."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, input_signature=[tf.TensorSpec((None, tokens))])
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _assert_int32(*arrays):
    for array in arrays:
        assert keras.backend.standardize_dtype(array.dtype) == "int32"


# === random_partition ===


@pytest.mark.parametrize("tokens, mask_ratio", [(16, 0.6), (7, 0.3), (10, 0.0), (9, 0.5)])
def test_partition_matches_oracle(rng, tokens, mask_ratio):
    noise = _noise(rng, 3, tokens)
    outputs = random_partition(noise, mask_ratio)
    _assert_int32(*outputs)
    for output, expected in zip(outputs, oracles.random_partition(noise, mask_ratio)):
        np.testing.assert_array_equal(to_numpy(output), expected)


@pytest.mark.parametrize("tokens, mask_ratio", [(7, 0.3), (12, 0.5), (10, 0.6)])
def test_partition_is_disjoint_sorted_and_covers_the_visible_tokens(rng, tokens, mask_ratio):
    noise = _noise(rng, 4, tokens)
    masked, part_1, part_2 = (to_numpy(x) for x in random_partition(noise, mask_ratio))
    n_mask = int(tokens * mask_ratio)
    visible = tokens - n_mask
    assert masked.shape == (4, n_mask)
    assert part_1.shape == (4, visible // 2) and part_2.shape == (4, visible - visible // 2)
    for row in range(4):
        for part in (masked[row], part_1[row], part_2[row]):
            assert np.all(np.diff(part) > 0)  # sorted ascending, no repeats
        assert not set(part_1[row]) & set(part_2[row])
        # The two parts cover exactly the visible ids: all ids but the masked ones.
        assert set(part_1[row]) | set(part_2[row]) == set(range(tokens)) - set(masked[row])
        np.testing.assert_array_equal(np.sort(masked[row]), np.sort(np.argsort(noise[row])[:n_mask]))


def test_partition_odd_visible_count_puts_the_extra_token_in_part_2(rng):
    masked, part_1, part_2 = random_partition(_noise(rng, 2, 7), 0.3)  # n_mask = 2, V = 5
    assert tuple(masked.shape) == (2, 2) and tuple(part_1.shape) == (2, 2) and tuple(part_2.shape) == (2, 3)


def test_partition_compiled(rng):
    noise = _noise(rng, 3, 10)
    outputs = _compiled(lambda x: random_partition(x, 0.4), 10)(noise)
    for output, expected in zip(outputs, oracles.random_partition(noise, 0.4)):
        np.testing.assert_array_equal(to_numpy(output), expected)


@pytest.mark.parametrize("tokens, mask_ratio", [(8, 1.0), (8, -0.1), (4, 0.75), (10, 0.95)])
def test_partition_invalid_arguments(rng, tokens, mask_ratio):
    with pytest.raises(ValueError, match="Expected"):
        random_partition(_noise(rng, 2, tokens), mask_ratio)


def test_partition_rejects_non_matrix_noise(rng):
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        random_partition(rng.random(8).astype("float32"), 0.5)


# === mae_masking ===


@pytest.mark.parametrize("tokens, mask_ratio", [(16, 0.75), (7, 0.3), (10, 0.0), (49, 0.93)])
def test_mae_masking_matches_oracle(rng, tokens, mask_ratio):
    noise = _noise(rng, 3, tokens)
    ids_keep, mask, ids_restore = mae_masking(noise, mask_ratio)
    _assert_int32(ids_keep, ids_restore)
    assert keras.backend.standardize_dtype(mask.dtype) == "float32"
    expected_keep, expected_mask, expected_restore = oracles.mae_masking(noise, mask_ratio)
    np.testing.assert_array_equal(to_numpy(ids_keep), expected_keep)
    np.testing.assert_array_equal(to_numpy(mask), expected_mask)
    np.testing.assert_array_equal(to_numpy(ids_restore), expected_restore)


def test_mae_masking_consistency(rng):
    tokens, mask_ratio = 12, 0.75
    noise = _noise(rng, 4, tokens)
    ids_keep, mask, ids_restore = (to_numpy(x) for x in mae_masking(noise, mask_ratio))
    len_keep = int(tokens * (1 - mask_ratio))
    assert ids_keep.shape == (4, len_keep)
    np.testing.assert_array_equal(mask.sum(axis=1), tokens - len_keep)
    np.testing.assert_array_equal(np.take_along_axis(mask, ids_keep, axis=1), 0.0)
    # ids_restore inverts the shuffle: shuffle[restore] is the identity.
    shuffle = np.argsort(noise, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(shuffle, ids_restore, axis=1), np.tile(np.arange(tokens), (4, 1)))
    # ids_keep is in shuffled (ascending-noise) order, not sorted by index.
    assert np.all(np.diff(np.take_along_axis(noise, ids_keep, axis=1), axis=1) > 0)


def test_mae_masking_compiled(rng):
    noise = _noise(rng, 3, 10)
    outputs = _compiled(lambda x: mae_masking(x, 0.75), 10)(noise)
    for output, expected in zip(outputs, oracles.mae_masking(noise, 0.75)):
        np.testing.assert_array_equal(to_numpy(output), expected)


@pytest.mark.parametrize("tokens, mask_ratio", [(8, 1.0), (8, -0.5), (4, 0.9)])
def test_mae_masking_invalid_arguments(rng, tokens, mask_ratio):
    with pytest.raises(ValueError, match="Expected"):
        mae_masking(_noise(rng, 2, tokens), mask_ratio)


# === Dispatch to the Triton kernels (torch backend) ===


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the Triton kernels run on the torch backend only")
@pytest.mark.parametrize("tokens, mask_ratio", [(16, 0.6), (49, 0.75), (197, 0.3)])
def test_masking_dispatches_to_the_kernel(rng, monkeypatch, tokens, mask_ratio):
    """KMEDSSL_KERNELS=triton routes both ops to kmedssl_kernels.partition (Triton's interpreter on CPU) and
    gives the same integers as the keras.ops path (KMEDSSL_KERNELS=off); auto keeps CPU tensors on keras.ops."""
    pytest.importorskip("triton")
    import torch
    from kmedssl_kernels import partition

    calls = []
    for name in ("random_partition", "mae_masking"):
        kernel = getattr(partition, name)
        monkeypatch.setattr(partition, name, lambda *a, kernel=kernel, name=name: calls.append(name) or kernel(*a))
    noise = torch.from_numpy(_noise(rng, 3, tokens))
    noise[0, :4] = noise[0, 4]  # ties, broken by index on both paths
    results = {}
    for mode in ("off", "auto", "triton"):
        monkeypatch.setenv("KMEDSSL_KERNELS", mode)
        results[mode] = (*random_partition(noise, mask_ratio), *mae_masking(noise, mask_ratio))
    assert calls == ["random_partition", "mae_masking"]
    for got, want in zip(results["triton"], results["off"]):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
