"""kmedssl_kernels.jaccard_supcon (paper 001, Eq. 3; SPEC §3.3): the fused Triton op against its plain-torch
reference (value and gradient), and the reference against the float64 NumPy oracle of SPEC's formula, so that
kernel == reference == paper."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kmedssl_kernels import _common  # noqa: E402
from kmedssl_kernels import jaccard_supcon as supcon  # noqa: E402
from tests.helpers import finite_difference_grad  # noqa: E402
from tests.kernels.kernel_checks import (  # noqa: E402
    DEVICE, DTYPES, compare_value_and_grads, gemm_tolerance, saved_tensor_sizes,
)
from tests.losses import oracles  # noqa: E402

pytestmark = pytest.mark.backend_free

# (B, V, D, K): B = 1 (two views of one image), one view, B below one tile, odd and prime sizes, three views.
SHAPES = [(1, 2, 5, 3), (2, 1, 5, 3), (3, 2, 5, 4), (7, 2, 33, 6), (17, 2, 16, 5), (5, 3, 16, 7)]


def _features(batch, views, dim, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, views, dim, generator=generator)
    return features.to(device=DEVICE, dtype=dtype).requires_grad_()


def _labels(batch, num_labels, empty_rows=(), seed=0):
    """Multi-hot rows with about 40 % ones; ``empty_rows`` are all zero."""
    generator = torch.Generator().manual_seed(seed + 1)
    labels = (torch.rand(batch, num_labels, generator=generator) < 0.4).to(torch.float32)
    labels[list(empty_rows)] = 0.0
    return labels.to(DEVICE)


# === Kernel vs reference ===


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("batch, views, dim, num_labels", SHAPES)
def test_kernel_matches_reference(batch, views, dim, num_labels, threshold, dtype):
    features = _features(batch, views, dim, dtype)
    labels = _labels(batch, num_labels, empty_rows=[0] if batch > 2 else ())
    compare_value_and_grads(
        lambda f, y: supcon.jaccard_supcon(f, y, 0.07, threshold),
        lambda f, y: supcon.jaccard_supcon_reference(f, y, 0.07, threshold),
        [features, labels],
        **gemm_tolerance(dtype),
    )


@pytest.mark.parametrize("temperature, base_temperature", [(0.1, 0.07), (0.5, 1.0)])
def test_kernel_matches_reference_at_other_temperatures(temperature, base_temperature):
    features, labels = _features(7, 2, 16), _labels(7, 5, empty_rows=[2])
    compare_value_and_grads(
        lambda f, y: supcon.jaccard_supcon(f, y, temperature, 0.3, base_temperature),
        lambda f, y: supcon.jaccard_supcon_reference(f, y, temperature, 0.3, base_temperature),
        [features, labels],
    )


@pytest.mark.parametrize("label_dtype", [torch.bool, torch.int64, torch.float16])
def test_any_label_dtype(label_dtype):
    features, labels = _features(6, 2, 8), _labels(6, 4, empty_rows=[1, 4]).to(label_dtype)
    compare_value_and_grads(supcon.jaccard_supcon, supcon.jaccard_supcon_reference, [features, labels])


@pytest.mark.parametrize("num_labels", [3, 0])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
def test_all_label_rows_empty(threshold, num_labels):
    """J = 0 everywhere (never NaN): with threshold 0 every other row is a positive of weight 0, else none."""
    features, labels = _features(5, 2, 8), torch.zeros(5, num_labels, device=DEVICE)
    outputs, _ = compare_value_and_grads(
        lambda f, y: supcon.jaccard_supcon(f, y, 0.07, threshold),
        lambda f, y: supcon.jaccard_supcon_reference(f, y, 0.07, threshold),
        [features, labels],
    )
    assert float(outputs[0].detach()) == 0.0


@pytest.mark.parametrize("blocks", [None, (32, 16, 16, 16)], ids=["default", "small"])
def test_tiles_cover_more_than_one_block(monkeypatch, blocks):
    """VB = 130 rows: five row blocks of 32 by default; with (BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K) =
    (32, 16, 16, 16) and gradient blocks of 16 columns, nine column blocks, D = 40 in three blocks (GEMM and
    gradient columns: the split that rows wider than MAX_GRADIENT_COLUMNS take) and K = 20 labels in two
    blocks."""
    if blocks is not None:
        monkeypatch.setattr(supcon, "block_sizes", lambda num_rows, dim, num_labels: blocks)
        monkeypatch.setattr(_common, "MAX_GRADIENT_COLUMNS", 16)
    features, labels = _features(65, 2, 40), _labels(65, 20, empty_rows=[3, 64])
    compare_value_and_grads(supcon.jaccard_supcon, supcon.jaccard_supcon_reference, [features, labels])


def test_memory_saved_for_backward_is_linear_in_batch():
    """Only O(B·D), O(B·K) and O(B) tensors are kept between forward and backward, never a (VB, VB) matrix."""
    features, labels = _features(40, 2, 8), _labels(40, 5)
    loss = supcon.jaccard_supcon(features, labels)
    assert max(saved_tensor_sizes(loss)) <= 2 * 40 * 8 < (2 * 40) ** 2


def test_image_permutation_leaves_the_kernel_loss_unchanged():
    features, labels = _features(9, 2, 16).detach(), _labels(9, 5, empty_rows=[0])
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    torch.testing.assert_close(
        supcon.jaccard_supcon(features[order], labels[order]),
        supcon.jaccard_supcon(features, labels),
        rtol=1e-6,
        atol=0.0,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"features": torch.ones(1, 1, 4), "labels": torch.ones(1, 3)}, "at least 2 rows"),
        ({"labels": torch.ones(3, 3)}, "same B"),
        ({"features": torch.ones(2, 2, 4, dtype=torch.float64)}, "float32"),
        ({"temperature": 0.0}, "temperature"),
        ({"base_temperature": -1.0}, "base_temperature"),
        ({"threshold": 1.5}, "threshold"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"features": torch.ones(2, 2, 4), "labels": torch.ones(2, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        supcon.jaccard_supcon(**arguments)


# === Reference vs the float64 oracle of SPEC §3.3 ===


@pytest.mark.parametrize(
    "batch, views, dim, num_labels, threshold, temperature, base_temperature",
    [(1, 2, 5, 3, 0.3, 0.07, 0.07), (3, 2, 5, 4, 0.0, 0.1, 0.07), (7, 2, 16, 6, 0.3, 0.07, 0.07),
     (5, 3, 8, 7, 1.0, 0.5, 1.0), (17, 2, 33, 5, 0.3, 0.07, 0.07)],
)
def test_reference_matches_oracle(batch, views, dim, num_labels, threshold, temperature, base_temperature):
    features = _features(batch, views, dim).detach().cpu()
    labels = _labels(batch, num_labels, empty_rows=[0, 2] if batch > 2 else ()).cpu()
    expected = oracles.jaccard_supcon(features.numpy(), labels.numpy(), temperature, threshold, base_temperature)
    value = supcon.jaccard_supcon_reference(features, labels, temperature, threshold, base_temperature)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5, atol=1e-6)


def test_reference_gradient_matches_finite_differences_of_the_oracle():
    features = _features(3, 2, 4).detach().cpu().requires_grad_()
    labels = _labels(3, 4, empty_rows=[2]).cpu()
    (grad,) = torch.autograd.grad(supcon.jaccard_supcon_reference(features, labels, 0.1, 0.3), [features])
    (expected,) = finite_difference_grad(
        lambda f: oracles.jaccard_supcon(f, labels.numpy(), 0.1, 0.3), [features.detach().numpy()]
    )
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4, atol=1e-5)
