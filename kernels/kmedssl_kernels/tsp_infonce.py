"""T-SP InfoNCE of S-PCL (paper 003, Eqs. 1-2; SPEC §3.4) as a fused Triton op with O(B·D) memory.

With ``z = [z_1; z_2]`` (N = 2B rows), ``u_i = n(z_i)``, ``c_ij = u_i . u_j`` and ``pos(i) = (i + B) mod N``:

    s_ij   = 0.5 (1 + c_ij) / (1 + (1 - c_ij) kappa)                        (Eq. 1, in [0, 1])
    l_ij   = scale * s_ij
    loss   = 1/N sum_i [ lse_i - l_{i,pos(i)} ],   lse_i = log sum_{j != i} exp(l_ij)      (Eq. 2)

The (N, N) matrix is never stored: the forward kernel streams (BLOCK_M, BLOCK_N) tiles of ``c`` (a tiled GEMM
over D) through an online log-sum-exp and keeps three numbers per row. The backward kernel recomputes each tile
once per row block: a program owns its rows' gradient over all D columns (up to ``MAX_GRADIENT_COLUMNS``).
Because ``c`` (hence ``l``) is symmetric and ``pos`` is an involution, the gradient of row i collects both the
terms where i is the anchor and those where it is the column, in one deterministic pass (no atomics):

    dL/dc_ij + dL/dc_ji = 1/N * scale * ds/dc_ij * (p_ij + p_ji - 2 [j = pos(i)]),   p_ij = exp(l_ij - lse_i)
    ds/dc             = 0.5 (1 + 2 kappa) / (1 + (1 - c) kappa)^2
    dL/du_i           = sum_{j != i} (dL/dc_ij + dL/dc_ji) u_j
    dL/dscale         = 1/N sum_i [ sum_{j != i} p_ij s_ij - s_{i,pos(i)} ]

The row normalisation ``n(x) = x / max(||x||, 1e-12)`` runs as torch ops on the (N, D) rows in float32 (autograd
gives its gradient), rounded back to the input dtype: the GEMMs read float16/bfloat16 rows on the tensor cores
(TF32 or exact float32 for float32 rows, ``_common.dot_precision``) and accumulate in float32; the log-sum-exp and
every reduction are float32; the gradients return in the input dtype.
"""

import numbers

import torch
import triton
import triton.language as tl

from kmedssl_kernels._common import (
    accumulate_rows, contrastive_configs, cosine_tile, dot_precision, gradient_columns, l2_normalize, launch,
    operand_rows, prune_backward_configs,
)

# === Kernels ===


@triton.jit
def _tsp(cosine, kappa):
    # s = 0.5 (1 + c) / (1 + (1 - c) kappa)   (paper 003, Eq. 1)
    return 0.5 * (1.0 + cosine) / (1.0 + (1.0 - cosine) * kappa)


@triton.jit
def _tsp_slope(cosine, kappa):
    # ds/dc = 0.5 (1 + 2 kappa) / (1 + (1 - c) kappa)^2
    denominator = 1.0 + (1.0 - cosine) * kappa
    return 0.5 * (1.0 + 2.0 * kappa) / (denominator * denominator)


@triton.jit
def _tsp_infonce_forward_kernel(u_ptr, scale_ptr, lse_ptr, expected_ptr, positive_ptr, num_rows, half, dim, kappa,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                PRECISION: tl.constexpr):
    # One program per block of BLOCK_M anchors i, streaming every column block j (online log-sum-exp):
    #   lse_i      = log sum_{j != i} exp(scale * s_ij)
    #   expected_i = sum_{j != i} softmax_i(l)_j * s_ij          (for dL/dscale)
    #   positive_i = s_{i, pos(i)}
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    positives = (rows + half) % num_rows
    scale = tl.load(scale_ptr)
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum exp(l - run_max)
    run_sim = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum exp(l - run_max) * s
    positive = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for col_start in range(0, num_rows, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        sim = _tsp(cosine_tile(u_ptr, rows, cols, num_rows, dim, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION), kappa)
        keep = (cols[None, :] < num_rows) & (cols[None, :] != rows[:, None])
        logits = tl.where(keep, scale * sim, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # a row with nothing kept yet
        rescale = tl.exp(run_max - shift)
        weights = tl.exp(logits - shift[:, None])
        run_sum = run_sum * rescale + tl.sum(weights, axis=1)
        run_sim = run_sim * rescale + tl.sum(weights * sim, axis=1)
        run_max = new_max
        positive += tl.sum(tl.where(cols[None, :] == positives[:, None], sim, 0.0), axis=1)
    valid = rows < num_rows
    run_sum = tl.where(valid, run_sum, 1.0)
    tl.store(lse_ptr + rows, run_max + tl.log(run_sum), mask=valid)
    tl.store(expected_ptr + rows, run_sim / run_sum, mask=valid)
    tl.store(positive_ptr + rows, positive, mask=valid)


@triton.jit
def _tsp_infonce_backward_kernel(u_ptr, scale_ptr, coef_ptr, lse_ptr, grad_u_ptr, num_rows, half, dim, kappa,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                 BLOCK_DO: tl.constexpr, PRECISION: tl.constexpr):
    # Program (row block, gradient column block; one column block whenever D <= MAX_GRADIENT_COLUMNS): for its
    # BLOCK_M rows i and BLOCK_DO columns d of the gradient, each similarity tile computed once,
    #   grad_u[i, d] = coef * sum_{j != i} scale * ds/dc_ij * (p_ij + p_ji - 2 [j = pos(i)]) * u[j, d]
    # with p_ij = exp(l_ij - lse_i), p_ji = exp(l_ij - lse_j) (l symmetric) and coef = upstream gradient / N.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    out_d = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    positives = (rows + half) % num_rows
    scale = tl.load(scale_ptr)
    lse_rows = tl.load(lse_ptr + rows, mask=rows < num_rows, other=float("inf"))
    grad = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    for col_start in range(0, num_rows, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        cosine = cosine_tile(u_ptr, rows, cols, num_rows, dim, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        logits = scale * _tsp(cosine, kappa)
        lse_cols = tl.load(lse_ptr + cols, mask=cols < num_rows, other=float("inf"))
        keep = (rows[:, None] < num_rows) & (cols[None, :] < num_rows) & (cols[None, :] != rows[:, None])
        target = tl.where(cols[None, :] == positives[:, None], 2.0, 0.0)
        softmax = tl.exp(tl.where(keep, logits - lse_rows[:, None], float("-inf")))
        softmax += tl.exp(tl.where(keep, logits - lse_cols[None, :], float("-inf")))
        weight = tl.where(keep, (softmax - target) * (scale * _tsp_slope(cosine, kappa)), 0.0)
        grad = accumulate_rows(grad, weight, u_ptr, cols, out_d, num_rows, dim, PRECISION)
    grad *= tl.load(coef_ptr)
    tl.store(grad_u_ptr + rows[:, None] * dim + out_d[None, :], grad,
             mask=(rows[:, None] < num_rows) & (out_d[None, :] < dim))


_tuned_forward_kernel = triton.autotune(contrastive_configs(backward=False), key=["num_rows", "dim"])(
    _tsp_infonce_forward_kernel)
_tuned_backward_kernel = triton.autotune(
    contrastive_configs(backward=True), key=["num_rows", "dim"],
    prune_configs_by={"early_config_prune": prune_backward_configs},
)(_tsp_infonce_backward_kernel)


# === Host launchers ===


def block_sizes(num_rows, dim):
    """``(BLOCK_M, BLOCK_N, BLOCK_D)`` of the interpreter's fixed launch (CUDA autotunes): square tiles of up to
    32 rows (at least 16, ``tl.dot``'s minimum) and D streamed through the similarity GEMM in blocks of up to
    32."""
    tile = min(32, max(16, triton.next_power_of_2(num_rows)))
    return tile, tile, min(32, max(16, triton.next_power_of_2(dim)))


def _fixed_blocks(num_rows, dim):
    return dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_D"), block_sizes(num_rows, dim)))


def _forward(u, scale, kappa):
    """u ``(N, D)`` normalised rows, scale 0-d float32 -> lse, expected, positive, each ``(N,)`` float32."""
    num_rows, dim = u.shape
    lse, expected, positive = (torch.empty(num_rows, dtype=torch.float32, device=u.device) for _ in range(3))
    launch(_tsp_infonce_forward_kernel, _tuned_forward_kernel, num_rows, (), _fixed_blocks(num_rows, dim),
           u, scale, lse, expected, positive, num_rows, num_rows // 2, dim, kappa, PRECISION=dot_precision(u))
    return lse, expected, positive


def _backward(u, scale, coef, lse, kappa):
    """Gradient of ``coef * N * loss`` w.r.t. u ``(N, D)``, float32 (coef: 0-d float32 tensor)."""
    num_rows, dim = u.shape
    columns = gradient_columns(dim)
    grad_u = torch.empty(u.shape, dtype=torch.float32, device=u.device)
    launch(_tsp_infonce_backward_kernel, _tuned_backward_kernel, num_rows, (triton.cdiv(dim, columns),),
           _fixed_blocks(num_rows, dim), u, scale, coef, lse, grad_u, num_rows, num_rows // 2, dim, kappa,
           BLOCK_DO=columns, PRECISION=dot_precision(u))
    return grad_u


class TSPInfoNCEFunction(torch.autograd.Function):
    """``loss(u, scale)`` on normalised rows ``u = n([z_1; z_2])`` ``(2B, D)`` (float32, float16 or bfloat16)
    and a 0-d float32 scale."""

    @staticmethod
    def forward(ctx, u, scale, kappa):
        lse, expected, positive = _forward(u, scale, kappa)
        ctx.save_for_backward(u, scale, lse, expected, positive)
        ctx.kappa = kappa
        return torch.mean(lse - scale * positive)

    @staticmethod
    def backward(ctx, grad_output):
        u, scale, lse, expected, positive = ctx.saved_tensors
        grad_u = grad_scale = None
        if ctx.needs_input_grad[0]:
            coef = (grad_output.float() / u.shape[0]).contiguous()
            grad_u = _backward(u, scale, coef, lse, ctx.kappa).to(u.dtype)
        if ctx.needs_input_grad[1]:
            grad_scale = grad_output * torch.mean(expected - positive)
        return grad_u, grad_scale, None


# === Public functions ===


def _validate(z_1, z_2, kappa, scale):
    if not isinstance(z_1, torch.Tensor) or not isinstance(z_2, torch.Tensor):
        raise ValueError(f"Expected torch tensors z_1 and z_2. Received: {type(z_1).__name__}, {type(z_2).__name__}")
    if z_1.ndim != 2 or z_1.shape != z_2.shape or z_1.shape[0] < 1 or z_1.shape[1] < 1:
        raise ValueError(
            f"Expected z_1 and z_2 of the same shape (B, D), B, D >= 1. "
            f"Received: z_1.shape={tuple(z_1.shape)}, z_2.shape={tuple(z_2.shape)}"
        )
    if z_1.device != z_2.device:
        raise ValueError(f"Expected z_1 and z_2 on one device. Received: {z_1.device} and {z_2.device}")
    if not isinstance(kappa, numbers.Real) or not kappa >= 0:
        raise ValueError(f"Expected kappa a number >= 0. Received: kappa={kappa!r}")
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"Expected scale a number or a one-element tensor. Received: shape={tuple(scale.shape)}")
    elif not isinstance(scale, numbers.Real) or not scale > 0:
        raise ValueError(f"Expected scale a number > 0 or a tensor. Received: scale={scale!r}")


def _scale_tensor(scale, device):
    """0-d float32 tensor on ``device`` (a tensor keeps its autograd graph)."""
    if isinstance(scale, torch.Tensor):
        return scale.reshape(()).to(device=device, dtype=torch.float32)
    return torch.tensor(float(scale), dtype=torch.float32, device=device)


def tsp_infonce(z_1, z_2, kappa=16.0, scale=1 / 0.07):
    """Fused T-SP InfoNCE (paper 003, Eqs. 1-2): same value and gradients as ``tsp_infonce_reference``.

    Args:
        z_1, z_2: ``(B, D)`` float32, float16 or bfloat16 (the two partitions' CLS embeddings).
        kappa: T-SP concentration, a number >= 0.
        scale: logit scale, a number > 0 or a one-element tensor (it receives a gradient when it requires one).

    Returns:
        0-d float32 tensor.
    """
    _validate(z_1, z_2, kappa, scale)
    if z_1.dtype != z_2.dtype or z_1.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"Expected z_1 and z_2 both float32, float16 or bfloat16. Received: {z_1.dtype} and {z_2.dtype}"
        )
    u = operand_rows(torch.cat([z_1, z_2])).contiguous()  # (2B, D), the inputs' dtype
    return TSPInfoNCEFunction.apply(u, _scale_tensor(scale, u.device), float(kappa))


def tsp_infonce_reference(z_1, z_2, kappa=16.0, scale=1 / 0.07):
    """Plain-torch T-SP InfoNCE with the ``(2B, 2B)`` logit matrix materialised (float32; autograd gradients)."""
    _validate(z_1, z_2, kappa, scale)
    u = l2_normalize(torch.cat([z_1, z_2]))  # (2B, D)
    num_rows = u.shape[0]
    cosine = u @ u.T  # (2B, 2B)
    logits = _scale_tensor(scale, u.device) * 0.5 * (1 + cosine) / (1 + (1 - cosine) * kappa)  # (2B, 2B)
    rows = torch.arange(num_rows, device=u.device)
    is_self = rows[:, None] == rows[None, :]
    lse = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1)  # (2B,)
    positive = logits[rows, (rows + num_rows // 2) % num_rows]  # (2B,)
    return torch.mean(lse - positive)
