"""Pieces shared by the contrastive fused ops (``tsp_infonce``, ``jaccard_supcon``)."""

import torch
import triton
import triton.language as tl


@triton.jit
def cosine_tile(u_ptr, rows, cols, num_rows, dim, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    # c[r, k] = sum_d u[rows[r], d] * u[cols[k], d]   (BLOCK_M, BLOCK_N); rows/columns outside u read as zeros.
    # u: (num_rows, dim) float32, contiguous.
    cosine = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d_start in range(0, dim, BLOCK_D):
        d = d_start + tl.arange(0, BLOCK_D)
        in_dim = d[None, :] < dim
        u_rows = tl.load(u_ptr + rows[:, None] * dim + d[None, :], mask=(rows[:, None] < num_rows) & in_dim, other=0.0)
        u_cols = tl.load(u_ptr + cols[:, None] * dim + d[None, :], mask=(cols[:, None] < num_rows) & in_dim, other=0.0)
        cosine = tl.dot(u_rows, tl.trans(u_cols), cosine, input_precision="ieee")
    return cosine


def l2_normalize(x):
    """``n(x) = x / sqrt(max(sum(x^2), 1e-24))`` along the last axis, in float32 (zero rows stay zero)."""
    x = x.float()
    return x / torch.sqrt(torch.clamp(torch.sum(x * x, dim=-1, keepdim=True), min=1e-24))
