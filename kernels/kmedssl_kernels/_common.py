"""Pieces shared by the contrastive fused ops (``tsp_infonce``, ``jaccard_supcon``).

GEMM operands stay in the input dtype: float16/bfloat16 rows go to the tensor cores (``tl.dot`` with float32
accumulation); float32 rows use TF32 tensor cores where torch allows it (``torch.get_float32_matmul_precision()``
``"high"`` or ``"medium"``, on CUDA) and exact float32 (``"ieee"``) otherwise. Every log-sum-exp, softmax and
reduction is float32.

Launch: on CUDA the kernels are autotuned over ``contrastive_configs`` (keyed by the row count, D and the
dtypes); in Triton's interpreter (the CPU tests) they run with the one fixed config of the op's
``block_sizes``, since the autotuner would time every config there.
"""

import os

import torch
import triton
import triton.language as tl

# A backward program holds its rows' gradient over all D columns (no similarity tile recomputed per column
# block) up to this many columns; wider rows are split into column blocks of this width.
MAX_GRADIENT_COLUMNS = 1024
# Register budget of a backward program's float32 gradient block (BLOCK_M x gradient columns).
MAX_GRADIENT_ELEMENTS = 64 * 512


@triton.jit
def cosine_tile(u_ptr, rows, cols, num_rows, dim, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    # c[r, k] = sum_d u[rows[r], d] * u[cols[k], d]   (BLOCK_M, BLOCK_N) float32; rows/columns outside u read as
    # zeros. u: (num_rows, dim) contiguous, float32/float16/bfloat16 (the GEMM runs in that dtype).
    cosine = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d_start in range(0, dim, BLOCK_D):
        d = d_start + tl.arange(0, BLOCK_D)
        in_dim = d[None, :] < dim
        u_rows = tl.load(u_ptr + rows[:, None] * dim + d[None, :], mask=(rows[:, None] < num_rows) & in_dim, other=0.0)
        u_cols = tl.load(u_ptr + cols[:, None] * dim + d[None, :], mask=(cols[:, None] < num_rows) & in_dim, other=0.0)
        cosine = tl.dot(u_rows, tl.trans(u_cols), cosine, input_precision=PRECISION)
    return cosine


@triton.jit
def accumulate_rows(grad, weight, u_ptr, cols, out_d, num_rows, dim, PRECISION: tl.constexpr):
    # grad + weight @ u[cols, out_d]: weight (BLOCK_M, BLOCK_N) float32 rounded to u's dtype for the GEMM,
    # grad (BLOCK_M, BLOCK_DO) float32.
    u_cols = tl.load(u_ptr + cols[:, None] * dim + out_d[None, :],
                     mask=(cols[:, None] < num_rows) & (out_d[None, :] < dim), other=0.0)
    return tl.dot(weight.to(u_cols.dtype), u_cols, grad, input_precision=PRECISION)


def l2_normalize(x):
    """``n(x) = x / sqrt(max(sum(x^2), 1e-24))`` along the last axis, in float32 (zero rows stay zero)."""
    x = x.float()
    return x / torch.sqrt(torch.clamp(torch.sum(x * x, dim=-1, keepdim=True), min=1e-24))


def operand_rows(x):
    """``n(x)`` computed in float32 and rounded to ``x``'s dtype: the rows the GEMMs read."""
    return l2_normalize(x).to(x.dtype)


def interpreted():
    """True when Triton's CPU interpreter runs the kernels (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_precision(u):
    """``tl.dot``'s input precision for float32 rows ``u``: ``"tf32"`` on CUDA when torch's float32 matmul
    precision allows TF32, else ``"ieee"`` (float16/bfloat16 operands ignore it)."""
    allows_tf32 = torch.get_float32_matmul_precision() in ("high", "medium")
    return "tf32" if u.dtype == torch.float32 and u.is_cuda and allows_tf32 and not interpreted() else "ieee"


def gradient_columns(dim):
    """Columns of the gradient block a backward program owns: all of D (padded to a power of two, at least
    16), at most ``MAX_GRADIENT_COLUMNS``."""
    return min(MAX_GRADIENT_COLUMNS, max(16, triton.next_power_of_2(dim)))


# Autotuning candidates (BLOCK_M, BLOCK_N, BLOCK_D, warps, stages): few, since each compiles once per
# (rows, D, dtype) on the first call.
FORWARD_CONFIGS = ((64, 64, 64, 4, 3), (128, 64, 64, 8, 3), (64, 32, 128, 4, 2), (128, 32, 64, 4, 3),
                   (32, 64, 64, 4, 2))
BACKWARD_CONFIGS = ((16, 64, 64, 4, 2), (32, 64, 64, 8, 3), (32, 32, 64, 4, 2), (64, 64, 64, 8, 3),
                    (64, 32, 32, 4, 2))


def contrastive_configs(backward):
    """``triton.Config`` list of the forward or backward candidates."""
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d}, num_warps=warps, num_stages=stages)
        for block_m, block_n, block_d, warps, stages in (BACKWARD_CONFIGS if backward else FORWARD_CONFIGS)
    ]


def prune_backward_configs(configs, named_args, **kwargs):
    """Keep the backward configs whose float32 gradient block fits ``MAX_GRADIENT_ELEMENTS`` (the smallest
    BLOCK_M always stays)."""
    columns = kwargs["BLOCK_DO"]
    smallest = min(config.kwargs["BLOCK_M"] for config in configs)
    return [config for config in configs
            if config.kwargs["BLOCK_M"] * columns <= MAX_GRADIENT_ELEMENTS or config.kwargs["BLOCK_M"] == smallest]


def launch(kernel, tuned_kernel, num_grid_rows, extra_grid, fixed_blocks, *args, **constexprs):
    """Run ``tuned_kernel`` (autotuned) on CUDA, or ``kernel`` with ``fixed_blocks`` (a dict of BLOCK_M, BLOCK_N,
    BLOCK_D) in Triton's interpreter; the grid is (cdiv(num_grid_rows, BLOCK_M), *extra_grid)."""
    if interpreted():
        grid = (triton.cdiv(num_grid_rows, fixed_blocks["BLOCK_M"]), *extra_grid)
        kernel[grid](*args, **fixed_blocks, **constexprs, num_warps=4)
    else:
        tuned_kernel[lambda meta: (triton.cdiv(num_grid_rows, meta["BLOCK_M"]), *extra_grid)](*args, **constexprs)
