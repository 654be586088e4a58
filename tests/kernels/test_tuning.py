"""The launch machinery of the contrastive kernels (``kmedssl_kernels._common``): autotuning candidates, the
pruning of backward configs by the gradient block's size, the GEMM input precision, and the autotuned launch
path that CUDA takes, run here in Triton's interpreter with the candidates cut to ones that need no timing."""

import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from kmedssl_kernels import _common  # noqa: E402
from kmedssl_kernels import jaccard_supcon as supcon  # noqa: E402
from kmedssl_kernels import tsp_infonce as tsp  # noqa: E402
from tests.kernels.kernel_checks import DEVICE, compare_value_and_grads  # noqa: E402

pytestmark = pytest.mark.backend_free


def _config(block_m):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": 16, "BLOCK_D": 16}, num_warps=4, num_stages=1)


@pytest.mark.parametrize("dim, columns", [(5, 16), (33, 64), (512, 512), (768, 1024), (1024, 1024), (4096, 1024)])
def test_a_backward_program_owns_all_columns_up_to_the_limit(dim, columns):
    assert _common.gradient_columns(dim) == columns


def test_backward_pruning_keeps_the_gradient_block_in_budget():
    configs = _common.contrastive_configs(backward=True)
    for columns in (16, 512, 1024):
        kept = _common.prune_backward_configs(configs, {}, BLOCK_DO=columns)
        assert kept, columns
        assert all(c.kwargs["BLOCK_M"] * columns <= _common.MAX_GRADIENT_ELEMENTS for c in kept)
    assert len(_common.prune_backward_configs(configs, {}, BLOCK_DO=16)) == len(configs)
    kept_wide = _common.prune_backward_configs(configs, {}, BLOCK_DO=1024)
    assert {c.kwargs["BLOCK_M"] for c in kept_wide} == {16, 32}


def test_every_candidate_tile_suits_tl_dot():
    for backward in (False, True):
        for config in _common.contrastive_configs(backward):
            assert min(config.kwargs.values()) >= 16
            assert all(v & (v - 1) == 0 for v in config.kwargs.values())  # powers of two


@pytest.mark.parametrize("dtype, matmul_precision, expected", [
    (torch.float32, "highest", "ieee"),
    (torch.float32, "high", "ieee"),  # CPU tensors (and the interpreter) never take TF32
    (torch.float16, "high", "ieee"),
])
def test_dot_precision_on_cpu(monkeypatch, dtype, matmul_precision, expected):
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: matmul_precision)
    assert _common.dot_precision(torch.ones(2, 2, dtype=dtype)) == expected


@pytest.mark.skipif(DEVICE != "cpu", reason="on a GPU the real autotuning runs in the kernel tests")
@pytest.mark.parametrize("op", ["tsp", "supcon"])
def test_the_autotuned_launch_path_gives_the_reference_values(monkeypatch, op):
    """What CUDA runs: ``launch`` calls the autotuned kernels with a grid that reads BLOCK_M from the chosen
    config. Here the forward has one candidate and the backward two, of which pruning keeps one (D = 600 gives
    1024 gradient columns: BLOCK_M = 64 is over budget), so the autotuner picks without timing anything."""
    module = tsp if op == "tsp" else supcon
    monkeypatch.setattr(_common, "interpreted", lambda: False)
    monkeypatch.setattr(module._tuned_forward_kernel, "configs", [_config(32)])
    monkeypatch.setattr(module._tuned_backward_kernel, "configs", [_config(16), _config(64)])
    for kernel in (module._tuned_forward_kernel, module._tuned_backward_kernel):
        monkeypatch.setattr(kernel, "cache", {})
    generator = torch.Generator().manual_seed(0)
    if op == "tsp":
        z_1, z_2 = (torch.randn(20, 600, generator=generator).requires_grad_() for _ in range(2))
        compare_value_and_grads(tsp.tsp_infonce, tsp.tsp_infonce_reference, [z_1, z_2])
    else:
        features = torch.randn(20, 2, 600, generator=generator).requires_grad_()
        labels = (torch.rand(20, 6, generator=generator) < 0.4).float()
        compare_value_and_grads(supcon.jaccard_supcon, supcon.jaccard_supcon_reference, [features, labels])
    chosen = module._tuned_backward_kernel.cache
    assert [config.kwargs["BLOCK_M"] for config in chosen.values()] == [16]
