"""kmedssl_kernels.partition (SPEC §3.1, §3.4): the fused random partition, MAE masking and token gather
against their plain-torch references, and the references against the NumPy oracles of SPEC's formulas
(tests/losses/oracles.py). The library dispatch is tested in tests/ops/test_masking.py."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kmedssl_kernels import partition as pt  # noqa: E402
from tests.kernels.kernel_checks import DEVICE, DTYPES, compare_value_and_grads  # noqa: E402
from tests.losses import oracles  # noqa: E402

pytestmark = pytest.mark.backend_free

# (B, N): B in {1, 3, 7, 17}; N odd, a power of two, and above one token block (64) and one rank block (128).
SHAPES = [(1, 5), (3, 16), (7, 33), (17, 16), (3, 197)]
RATIOS = [0.0, 0.3, 0.6, 0.75]


def make_noise(batch, tokens, dtype=torch.float32, seed=0, levels=None):
    """Uniform noise; with ``levels``, quantised to that many values so that ties are common."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, tokens, generator=generator)
    if levels is not None:
        noise = torch.floor(noise * levels) / levels
    return noise.to(device=DEVICE, dtype=dtype)


def assert_same(outputs, expected):
    assert len(outputs) == len(expected)
    for output, reference in zip(outputs, expected):
        assert output.dtype == reference.dtype and output.shape == reference.shape
        torch.testing.assert_close(output, reference, rtol=0.0, atol=0.0)


# === Kernel vs reference ===


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mask_ratio", RATIOS)
@pytest.mark.parametrize("batch, tokens", SHAPES)
def test_partition_matches_reference(batch, tokens, mask_ratio, dtype):
    noise = make_noise(batch, tokens, dtype)
    outputs = pt.random_partition(noise, mask_ratio)
    assert_same(outputs, pt.random_partition_reference(noise, mask_ratio))
    assert all(o.dtype == torch.int32 for o in outputs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mask_ratio", RATIOS)
@pytest.mark.parametrize("batch, tokens", SHAPES)
def test_mae_masking_matches_reference(batch, tokens, mask_ratio, dtype):
    noise = make_noise(batch, tokens, dtype)
    ids_keep, mask, ids_restore = pt.mae_masking(noise, mask_ratio)
    assert_same((ids_keep, mask, ids_restore), pt.mae_masking_reference(noise, mask_ratio))
    assert ids_keep.dtype == ids_restore.dtype == torch.int32 and mask.dtype == torch.float32


@pytest.mark.parametrize("tokens", [16, 197])
def test_ties_are_broken_by_index_like_a_stable_argsort(tokens):
    """Noise with 4 distinct values (ties everywhere, also across rank blocks): the order is the index order."""
    noise = make_noise(3, tokens, levels=4)
    assert_same(pt.random_partition(noise, 0.6), pt.random_partition_reference(noise, 0.6))
    assert_same(pt.mae_masking(noise, 0.75), pt.mae_masking_reference(noise, 0.75))
    constant = torch.zeros(2, tokens, device=DEVICE)
    ids_keep, _, ids_restore = pt.mae_masking(constant, 0.5)
    np.testing.assert_array_equal(ids_keep.cpu().numpy(), np.tile(np.arange(tokens // 2), (2, 1)))
    np.testing.assert_array_equal(ids_restore.cpu().numpy(), np.tile(np.arange(tokens), (2, 1)))


def test_empty_batch_gives_empty_outputs():
    noise = torch.rand(0, 10, device=DEVICE)
    assert [tuple(o.shape) for o in pt.random_partition(noise, 0.4)] == [(0, 4), (0, 3), (0, 3)]
    assert [tuple(o.shape) for o in pt.mae_masking(noise, 0.4)] == [(0, 6), (0, 10), (0, 10)]


@pytest.mark.parametrize(
    "function, tokens, mask_ratio, message",
    [
        (pt.random_partition, 8, 1.0, "mask_ratio"),
        (pt.random_partition, 4, 0.75, "visible"),
        (pt.mae_masking, 8, -0.1, "mask_ratio"),
        (pt.mae_masking, 4, 0.9, "kept"),
    ],
)
def test_invalid_arguments_raise(function, tokens, mask_ratio, message):
    with pytest.raises(ValueError, match=message):
        function(torch.rand(2, tokens), mask_ratio)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        function(torch.rand(8), 0.5)


# === Token gather ===


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch, tokens, count, dim", [(1, 5, 3, 5), (3, 16, 7, 16), (3, 33, 33, 33)])
def test_gather_tokens_matches_reference_with_repeated_ids(batch, tokens, count, dim, dtype):
    generator = torch.Generator().manual_seed(0)
    token_values = torch.randn(batch, tokens, dim, generator=generator).to(device=DEVICE, dtype=dtype)
    ids = torch.randint(0, tokens, (batch, count), generator=generator, dtype=torch.int32)
    ids[:, 0] = ids[:, -1]  # a repeated id: its gradient rows add up
    compare_value_and_grads(pt.gather_tokens, pt.gather_tokens_reference,
                            [token_values.requires_grad_(), ids.to(DEVICE)])


def test_gather_tokens_of_a_partition_round_trips():
    """Gathering the three partition parts and scattering them back (through the backward) covers each token once."""
    noise = make_noise(3, 33)
    tokens = torch.randn(3, 33, 8, device=DEVICE, requires_grad=True)
    parts = pt.random_partition(noise, 0.3)
    gathered = [pt.gather_tokens(tokens, ids) for ids in parts]
    (grad,) = torch.autograd.grad(sum(g.sum() for g in gathered), [tokens])
    torch.testing.assert_close(grad, torch.ones_like(tokens))


def test_gather_tokens_validates_shapes():
    with pytest.raises(ValueError, match="ids"):
        pt.gather_tokens(torch.ones(2, 5, 3), torch.zeros(3, 2, dtype=torch.int32))


# === References vs the NumPy oracles of SPEC §3.1 / §3.4 ===


@pytest.mark.parametrize("mask_ratio", RATIOS)
@pytest.mark.parametrize("levels", [None, 4])
def test_references_match_oracles(mask_ratio, levels):
    noise = make_noise(7, 33, levels=levels).cpu()
    for output, expected in zip(pt.random_partition_reference(noise, mask_ratio),
                                oracles.random_partition(noise.numpy(), mask_ratio)):
        np.testing.assert_array_equal(output.numpy(), expected)
    for output, expected in zip(pt.mae_masking_reference(noise, mask_ratio),
                                oracles.mae_masking(noise.numpy(), mask_ratio)):
        np.testing.assert_array_equal(output.numpy(), expected)
