"""kmedssl_kernels.tsp_infonce (paper 003, Eqs. 1-2; SPEC §3.4): the fused Triton op against its plain-torch
reference (value and every gradient), and the reference against the float64 NumPy oracle of SPEC's formula, so
that kernel == reference == paper."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kmedssl_kernels import _common  # noqa: E402
from kmedssl_kernels import tsp_infonce as tsp  # noqa: E402
from tests.helpers import finite_difference_grad  # noqa: E402
from tests.kernels.kernel_checks import (  # noqa: E402
    DEVICE, DTYPES, compare_value_and_grads, gemm_tolerance, saved_tensor_sizes,
)
from tests.losses import oracles  # noqa: E402

pytestmark = pytest.mark.backend_free


# (B, D): B = 1 (each anchor's only other row is its positive), B below one tile, odd and prime sizes.
SHAPES = [(1, 5), (3, 5), (3, 33), (7, 16), (17, 33)]


def _pair(batch, dim, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(2, batch, dim, generator=generator)
    return [x.to(device=DEVICE, dtype=dtype).requires_grad_() for x in z]


def _scale(value):
    return torch.tensor(value, device=DEVICE, requires_grad=True)


# === Kernel vs reference ===


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kappa", [0.0, 16.0])
@pytest.mark.parametrize("batch, dim", SHAPES)
def test_kernel_matches_reference_with_a_fixed_scale(batch, dim, kappa, dtype):
    z_1, z_2 = _pair(batch, dim, dtype)
    compare_value_and_grads(
        lambda a, b: tsp.tsp_infonce(a, b, kappa, 1 / 0.07),
        lambda a, b: tsp.tsp_infonce_reference(a, b, kappa, 1 / 0.07),
        [z_1, z_2],
        **gemm_tolerance(dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kappa", [0.0, 16.0])
@pytest.mark.parametrize("batch, dim", [(3, 5), (7, 33), (17, 16)])
def test_kernel_matches_reference_with_a_trainable_scale(batch, dim, kappa, dtype):
    z_1, z_2 = _pair(batch, dim, dtype)
    _, grads = compare_value_and_grads(
        lambda a, b, s: tsp.tsp_infonce(a, b, kappa, s),
        lambda a, b, s: tsp.tsp_infonce_reference(a, b, kappa, s),
        [z_1, z_2, _scale(5.0)],
        **gemm_tolerance(dtype),
    )
    assert grads[2].abs() > 0


def test_scale_gradient_reaches_a_clamped_log_scale():
    """As the S-PCL model uses it: scale = clip(exp(log_scale), 1, 100) with log_scale trainable."""
    z_1, z_2 = _pair(5, 16)

    def scaled(function):
        return lambda a, b, log_scale: function(a, b, 16.0, torch.clamp(torch.exp(log_scale), 1.0, 100.0))

    _, grads = compare_value_and_grads(
        scaled(tsp.tsp_infonce), scaled(tsp.tsp_infonce_reference), [z_1, z_2, _scale(math.log(1 / 0.07))]
    )
    assert grads[2].abs() > 0


@pytest.mark.parametrize("blocks", [None, (32, 16, 16)], ids=["default", "small"])
def test_tiles_cover_more_than_one_block(monkeypatch, blocks):
    """2B = 130 rows: five row blocks of 32 by default; with (BLOCK_M, BLOCK_N, BLOCK_D) = (32, 16, 16) and
    gradient blocks of 16 columns, nine column blocks, and D = 40 in three blocks both for the GEMM and for the
    gradient's columns (the split that rows wider than MAX_GRADIENT_COLUMNS take)."""
    if blocks is not None:
        monkeypatch.setattr(tsp, "block_sizes", lambda num_rows, dim: blocks)
        monkeypatch.setattr(_common, "MAX_GRADIENT_COLUMNS", 16)
    z_1, z_2 = _pair(65, 40)
    compare_value_and_grads(
        lambda a, b, s: tsp.tsp_infonce(a, b, 16.0, s),
        lambda a, b, s: tsp.tsp_infonce_reference(a, b, 16.0, s),
        [z_1, z_2, _scale(1 / 0.07)],
    )


def test_zero_and_parallel_rows():
    """A zero row (n(0) = 0, finite gradient) and rows that are exact copies (cosine 1). At c = 1 the pair's
    gradient is scale * ds/dc = 10 * 16.5 times larger than the result left after the normalisation's
    projection removes its component along u, so float32 reordering shows at ~1e-6 absolute."""
    z_1, z_2 = (z.detach() for z in _pair(4, 5))
    z_1[0] = 0.0
    z_2[1] = 3.0 * z_1[1]
    z_2[2] = z_1[3]
    compare_value_and_grads(
        tsp.tsp_infonce,
        tsp.tsp_infonce_reference,
        [z_1.requires_grad_(), z_2.requires_grad_(), 16.0, _scale(10.0)],
        atol=1e-5,
    )


def test_memory_saved_for_backward_is_linear_in_batch():
    """Only O(B·D) and O(B) tensors are kept between forward and backward, never the (2B, 2B) matrix."""
    z_1, z_2 = _pair(40, 8)
    loss = tsp.tsp_infonce(z_1, z_2, 16.0, _scale(10.0))
    assert max(saved_tensor_sizes(loss)) <= 2 * 40 * 8 < (2 * 40) ** 2


def test_view_swap_and_batch_permutation_leave_the_kernel_loss_unchanged():
    z_1, z_2 = (z.detach() for z in _pair(7, 16))
    order = torch.randperm(7, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    loss = tsp.tsp_infonce(z_1, z_2)
    torch.testing.assert_close(tsp.tsp_infonce(z_2, z_1), loss, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(tsp.tsp_infonce(z_1[order], z_2[order]), loss, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kappa": -1.0}, "kappa"),
        ({"scale": 0.0}, "scale"),
        ({"scale": torch.ones(2)}, "scale"),
        ({"z_2": torch.ones(3, 4)}, "same shape"),
        ({"z_1": torch.ones(2, 5, dtype=torch.float64), "z_2": torch.ones(2, 5, dtype=torch.float64)}, "float32"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"z_1": torch.ones(2, 5), "z_2": torch.ones(2, 5), **kwargs}
    with pytest.raises(ValueError, match=message):
        tsp.tsp_infonce(**arguments)


# === Reference vs the float64 oracle of SPEC §3.4 ===


@pytest.mark.parametrize(
    "batch, dim, kappa, scale",
    [(1, 5, 16.0, 1 / 0.07), (3, 5, 0.0, 10.0), (7, 16, 16.0, 1 / 0.07), (17, 33, 4.0, 1.0)],
)
def test_reference_matches_oracle(batch, dim, kappa, scale):
    z_1, z_2 = (z.detach().cpu() for z in _pair(batch, dim))
    expected = oracles.tsp_infonce(z_1.numpy(), z_2.numpy(), kappa, scale)
    np.testing.assert_allclose(float(tsp.tsp_infonce_reference(z_1, z_2, kappa, scale)), expected, rtol=1e-5, atol=1e-6)


def test_reference_gradients_match_finite_differences_of_the_oracle():
    z_1, z_2 = (z.detach().cpu().requires_grad_() for z in _pair(3, 4))
    scale = torch.tensor(5.0, requires_grad=True)
    grads = torch.autograd.grad(tsp.tsp_infonce_reference(z_1, z_2, 4.0, scale), [z_1, z_2, scale])
    args = [z_1.detach().numpy(), z_2.detach().numpy(), np.float64(5.0)]
    expected = finite_difference_grad(lambda a, b, s: oracles.tsp_infonce(a, b, 4.0, float(s)), args)
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad.numpy(), reference, rtol=1e-4, atol=1e-5)
