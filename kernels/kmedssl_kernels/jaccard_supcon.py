"""Jaccard-weighted multi-label SupCon (paper 001, Eq. 3; SPEC §3.3) as a fused Triton op with O(B·D) memory.

Features ``(B, V, D)`` are stacked view-major into N = VB anchors (row a = v B + b holds image b = a mod B),
``u_a = n(z_a)``, ``l_aj = u_a . u_j / T`` and ``y_a`` the multi-hot label row of image ``a mod B``:

    J_aj   = |y_a and y_j| / |y_a or y_j|          (0 when both rows are empty)
    P(a)   = {j != a : J_aj >= threshold},   w_aj = J_aj [j in P(a)],   W_a = sum_j w_aj,   n_a = |P(a)|
    lse_a  = log sum_{j != a} exp(l_aj)
    loss_a = -(T / T_base) / max(n_a, 1) * sum_j w_aj (l_aj - lse_a)                         (Eq. 3)
    loss   = 1/N sum_a loss_a

The (N, N) matrices are never stored: the forward kernel streams tiles of the cosine GEMM (over D) and of the
label intersections (a GEMM of label tiles over K) through an online log-sum-exp and keeps five numbers per
row (m_a, 1 / S_a, n_a, W_a, loss_a). The backward kernel recomputes each tile once per row block: a program owns
its rows' gradient over all D columns (up to ``MAX_GRADIENT_COLUMNS``). ``l`` and ``w`` are symmetric,
so the gradient of row a collects its anchor terms and its column terms in one deterministic pass (no atomics):

    dL/dc_aj + dL/dc_ja = r_a (W_a p_aj - w_aj) + r_j (W_j p_ja - w_aj),   r_a = 1 / (N T_base max(n_a, 1))
    p_aj                = exp(l_aj - m_a) / S_a,   m_a = max_{j != a} l_aj,   S_a = sum_{j != a} exp(l_aj - m_a)
    dL/du_a             = sum_{j != a} (dL/dc_aj + dL/dc_ja) u_j

Both kernels form ``l_aj - m`` as one explicit fused multiply-add of the cosine (``fma(c, 1/T, -m)``, rounded
once), so the compiler cannot round it differently in the two kernels, and ``p`` is exact to a few ulps of ``p``
itself (``exp(l - lse)`` would carry the rounding of ``lse`` at the logit scale 1/T). An anchor with a single
candidate (B·V = 2) gets ``exp(l - m) == S`` bit for bit, p = 1 up to the rounding of 1/S, and (the loss being
constant) a zero gradient: measured exactly 0 on an H200. With ``exp(l - lse)``, and the GPU compiler
contracting ``c / T - shift`` into an fma (the interpreter never does), that gradient was up to 2e-6 there,
and 0 with ``TRITON_DEFAULT_FP_FUSION=0``.

The row normalisation ``n(x) = x / max(||x||, 1e-12)`` runs as torch ops on the (N, D) rows in float32 (autograd
gives its gradient), rounded back to the input dtype: the GEMMs read float16/bfloat16 rows on the tensor cores
(TF32 or exact float32 for float32 rows, ``_common.dot_precision``) and accumulate in float32; the log-sum-exp and
every reduction are float32; the gradient returns in the input dtype.
"""

import numbers

import torch
import triton
import triton.language as tl

from kmedssl_kernels._common import (
    accumulate_rows, contrastive_configs, cosine_tile, dot_precision, gradient_columns, l2_normalize, launch,
    prune_backward_configs,
)

# === Kernels ===


@triton.jit
def _jaccard_weight_tile(y_ptr, size_ptr, rows, cols, keep, batch, num_labels, threshold, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    # y: (batch, num_labels) multi-hot 0/1 in the rows' dtype (exact; counts accumulate exactly in float32); anchor a uses label row a mod batch; size[b] = sum_k y[b, k].
    #   I_aj = sum_k y_a[k] y_j[k]         (tiled GEMM over K)
    #   J_aj = I_aj / (size_a + size_j - I_aj), 0 when the union is empty
    #   returns (positive_aj = keep_aj and J_aj >= threshold, w_aj = J_aj if positive_aj else 0)
    images_r = rows % batch
    images_c = cols % batch
    intersection = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, num_labels, BLOCK_K):
        k = k_start + tl.arange(0, BLOCK_K)
        in_labels = k[None, :] < num_labels
        y_rows = tl.load(y_ptr + images_r[:, None] * num_labels + k[None, :], mask=in_labels, other=0.0)
        y_cols = tl.load(y_ptr + images_c[:, None] * num_labels + k[None, :], mask=in_labels, other=0.0)
        intersection = tl.dot(y_rows, tl.trans(y_cols), intersection, input_precision=PRECISION)
    union = tl.load(size_ptr + images_r)[:, None] + tl.load(size_ptr + images_c)[None, :] - intersection
    nonempty = union > 0.0
    jaccard = tl.where(nonempty, tl.math.div_rn(intersection, tl.where(nonempty, union, 1.0)), 0.0)
    positive = keep & (jaccard >= threshold)
    return positive, tl.where(positive, jaccard, 0.0)


@triton.jit
def _jaccard_supcon_forward_kernel(u_ptr, y_ptr, size_ptr, max_ptr, inv_sum_ptr, count_ptr, total_ptr, loss_ptr,
                                   num_rows, batch, dim, num_labels, inv_temperature, threshold, loss_factor,
                                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                   BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    # One program per block of BLOCK_M anchors a, streaming every column block j (online log-sum-exp):
    #   m_a = max_{j != a} l_aj,  S_a = sum_{j != a} exp(l_aj - m_a),  lse_a = m_a + log S_a,
    #   n_a = |P(a)|,  W_a = sum_j w_aj,
    #   loss_a = -loss_factor / max(n_a, 1) * (sum_j w_aj l_aj - W_a lse_a),   loss_factor = T / T_base
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < num_rows
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum exp(l - run_max)
    count = tl.zeros((BLOCK_M,), dtype=tl.float32)
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    weighted = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum_j w_aj l_aj
    for col_start in range(0, num_rows, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        cosine = cosine_tile(u_ptr, rows, cols, num_rows, dim, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        logits = cosine * inv_temperature
        keep = valid[:, None] & (cols[None, :] < num_rows) & (cols[None, :] != rows[:, None])
        positive, weight = _jaccard_weight_tile(y_ptr, size_ptr, rows, cols, keep, batch, num_labels, threshold,
                                                BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        count += tl.sum(positive.to(tl.float32), axis=1)
        total += tl.sum(weight, axis=1)
        weighted += tl.sum(weight * logits, axis=1)
        new_max = tl.maximum(run_max, tl.max(tl.where(keep, logits, float("-inf")), axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # a row with nothing kept yet
        # exp(l - shift) with l - shift = fma(c, 1/T, -shift), as the backward kernel recomputes it
        shifted = tl.where(keep, tl.fma(cosine, inv_temperature, -shift[:, None]), float("-inf"))
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(shifted), axis=1)
        run_max = new_max
    run_sum = tl.where(valid, run_sum, 1.0)
    lse = tl.where(valid, run_max + tl.log(run_sum), 0.0)
    loss = -loss_factor * (weighted - total * lse) / tl.maximum(count, 1.0)
    tl.store(max_ptr + rows, run_max, mask=valid)
    tl.store(inv_sum_ptr + rows, tl.math.div_rn(tl.full((BLOCK_M,), 1.0, tl.float32), run_sum), mask=valid)
    tl.store(count_ptr + rows, count, mask=valid)
    tl.store(total_ptr + rows, total, mask=valid)
    tl.store(loss_ptr + rows, loss, mask=valid)


@triton.jit
def _jaccard_supcon_backward_kernel(u_ptr, y_ptr, size_ptr, max_ptr, inv_sum_ptr, total_ptr, coef_ptr, grad_u_ptr,
                                    num_rows, batch, dim, num_labels, inv_temperature, threshold,
                                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                    BLOCK_K: tl.constexpr, BLOCK_DO: tl.constexpr, PRECISION: tl.constexpr):
    # Program (row block, gradient column block; one column block whenever D <= MAX_GRADIENT_COLUMNS): for its
    # BLOCK_M rows a and BLOCK_DO columns d of the gradient, each tile computed once,
    #   grad_u[a, d] = sum_{j != a} [r_a (W_a p_aj - w_aj) + r_j (W_j p_ja - w_aj)] u[j, d]
    # with p_aj = exp(l_aj - m_a) / S_a, p_ja = exp(l_aj - m_j) / S_j (l symmetric), W = total and r = coef
    # (per row: upstream gradient / (N T_base max(n, 1))); m and 1 / S come from the forward kernel.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    out_d = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    valid_rows = rows < num_rows
    max_rows = tl.load(max_ptr + rows, mask=valid_rows, other=0.0)
    inv_sum_rows = tl.load(inv_sum_ptr + rows, mask=valid_rows, other=0.0)
    total_rows = tl.load(total_ptr + rows, mask=valid_rows, other=0.0)
    coef_rows = tl.load(coef_ptr + rows, mask=valid_rows, other=0.0)
    grad = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    for col_start in range(0, num_rows, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        valid_cols = cols < num_rows
        cosine = cosine_tile(u_ptr, rows, cols, num_rows, dim, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        keep = valid_rows[:, None] & valid_cols[None, :] & (cols[None, :] != rows[:, None])
        _, weight = _jaccard_weight_tile(y_ptr, size_ptr, rows, cols, keep, batch, num_labels, threshold,
                                         BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        max_cols = tl.load(max_ptr + cols, mask=valid_cols, other=0.0)
        inv_sum_cols = tl.load(inv_sum_ptr + cols, mask=valid_cols, other=0.0)
        total_cols = tl.load(total_ptr + cols, mask=valid_cols, other=0.0)
        coef_cols = tl.load(coef_ptr + cols, mask=valid_cols, other=0.0)
        # exp(l - m) formed exactly as in the forward kernel (one fma), then divided by S (times 1 / S)
        p_rows = tl.exp(tl.where(keep, tl.fma(cosine, inv_temperature, -max_rows[:, None]), float("-inf")))
        p_rows *= inv_sum_rows[:, None]
        p_cols = tl.exp(tl.where(keep, tl.fma(cosine, inv_temperature, -max_cols[None, :]), float("-inf")))
        p_cols *= inv_sum_cols[None, :]
        tile = coef_rows[:, None] * (total_rows[:, None] * p_rows - weight)
        tile += coef_cols[None, :] * (total_cols[None, :] * p_cols - weight)
        grad = accumulate_rows(grad, tl.where(keep, tile, 0.0), u_ptr, cols, out_d, num_rows, dim, PRECISION)
    tl.store(grad_u_ptr + rows[:, None] * dim + out_d[None, :], grad,
             mask=valid_rows[:, None] & (out_d[None, :] < dim))


_tuned_forward_kernel = triton.autotune(contrastive_configs(backward=False), key=["num_rows", "dim", "num_labels"])(
    _jaccard_supcon_forward_kernel)
_tuned_backward_kernel = triton.autotune(
    contrastive_configs(backward=True), key=["num_rows", "dim", "num_labels"],
    prune_configs_by={"early_config_prune": prune_backward_configs},
)(_jaccard_supcon_backward_kernel)


# === Host launchers ===


def block_sizes(num_rows, dim, num_labels):
    """``(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)``: the interpreter's fixed tiles (CUDA autotunes the first three)
    of up to 32 rows (at least 16, ``tl.dot``'s minimum), D streamed through the similarity GEMM in blocks of
    up to 32, and labels streamed through the intersection GEMM in blocks of up to 32 (also on CUDA)."""
    tile = min(32, max(16, triton.next_power_of_2(num_rows)))
    block_k = min(32, max(16, triton.next_power_of_2(num_labels)))
    return tile, tile, min(32, max(16, triton.next_power_of_2(dim))), block_k


def _launch(kernel, tuned_kernel, u, y, extra_grid, *args, **constexprs):
    num_rows, dim = u.shape
    block_m, block_n, block_d, block_k = block_sizes(num_rows, dim, y.shape[1])
    launch(kernel, tuned_kernel, num_rows, extra_grid, {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d},
           *args, BLOCK_K=block_k, PRECISION=dot_precision(u), **constexprs)


def _forward(u, y, sizes, batch, temperature, threshold, loss_factor):
    """u ``(N, D)`` normalised rows, y ``(B, K)`` in u's dtype, sizes ``(B,)`` float32 -> max logit, 1 / sum of
    exp(logit - max), count, total, loss per row, each ``(N,)`` float32."""
    num_rows, dim = u.shape
    row_max, inv_sum, count, total, loss = (torch.empty(num_rows, dtype=torch.float32, device=u.device)
                                            for _ in range(5))
    _launch(_jaccard_supcon_forward_kernel, _tuned_forward_kernel, u, y, (),
            u, y, sizes, row_max, inv_sum, count, total, loss, num_rows, batch, dim, y.shape[1], 1.0 / temperature,
            threshold, loss_factor)
    return row_max, inv_sum, count, total, loss


def _backward(u, y, sizes, row_max, inv_sum, total, coef, batch, temperature, threshold):
    """Gradient w.r.t. u ``(N, D)``, float32, given the per-row coefficients ``coef`` ``(N,)`` (see the kernel)."""
    num_rows, dim = u.shape
    columns = gradient_columns(dim)
    grad_u = torch.empty(u.shape, dtype=torch.float32, device=u.device)
    _launch(_jaccard_supcon_backward_kernel, _tuned_backward_kernel, u, y, (triton.cdiv(dim, columns),),
            u, y, sizes, row_max, inv_sum, total, coef, grad_u, num_rows, batch, dim, y.shape[1], 1.0 / temperature,
            threshold, BLOCK_DO=columns)
    return grad_u


class JaccardSupConFunction(torch.autograd.Function):
    """``loss(u)`` on view-major normalised rows u ``(VB, D)`` with labels y ``(B, K)`` (both float32, float16 or
    bfloat16)."""

    @staticmethod
    def forward(ctx, u, y, temperature, threshold, base_temperature):
        sizes = torch.sum(y, dim=1, dtype=torch.float32)  # (B,)
        row_max, inv_sum, count, total, loss = _forward(u, y, sizes, y.shape[0], temperature, threshold,
                                                        temperature / base_temperature)
        ctx.save_for_backward(u, y, sizes, row_max, inv_sum, count, total)
        ctx.hyper = (temperature, threshold, base_temperature)
        return torch.mean(loss)

    @staticmethod
    def backward(ctx, grad_output):
        u, y, sizes, row_max, inv_sum, count, total = ctx.saved_tensors
        temperature, threshold, base_temperature = ctx.hyper
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        coef = grad_output.float() / (u.shape[0] * base_temperature * torch.clamp(count, min=1.0))  # (N,)
        grad_u = _backward(u, y, sizes, row_max, inv_sum, total, coef.contiguous(), y.shape[0], temperature,
                           threshold).to(u.dtype)
        return grad_u, None, None, None, None


# === Public functions ===


def _validate(features, labels, temperature, threshold, base_temperature):
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(
            f"Expected torch tensors features and labels. Received: {type(features).__name__}, "
            f"{type(labels).__name__}"
        )
    if features.ndim != 3 or labels.ndim != 2 or features.shape[0] != labels.shape[0] or features.shape[2] < 1:
        raise ValueError(
            "Expected features (B, V, D) and labels (B, K) with the same B, D >= 1. "
            f"Received: features.shape={tuple(features.shape)}, labels.shape={tuple(labels.shape)}"
        )
    if features.shape[0] * features.shape[1] < 2:
        raise ValueError(f"Expected at least 2 rows (B * V >= 2). Received: features.shape={tuple(features.shape)}")
    for name, value in (("temperature", temperature), ("base_temperature", base_temperature)):
        if not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"Expected {name} a number > 0. Received: {name}={value!r}")
    if not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
        raise ValueError(f"Expected threshold a number in [0, 1]. Received: threshold={threshold!r}")


def _view_major_rows(features):
    """``(B, V, D)`` -> normalised float32 rows ``(VB, D)``, all of view 0, then view 1, ..."""
    batch, views, dim = features.shape
    return l2_normalize(features).transpose(0, 1).reshape(views * batch, dim)


def jaccard_supcon(features, labels, temperature=0.07, threshold=0.3, base_temperature=0.07):
    """Fused Jaccard-weighted SupCon (paper 001, Eq. 3): same value and gradient as ``jaccard_supcon_reference``.

    Args:
        features: ``(B, V, D)`` float32, float16 or bfloat16; VB >= 2.
        labels: ``(B, K)`` multi-hot 0/1 labels, any numeric or bool dtype.
        temperature, threshold, base_temperature: numbers; T > 0, threshold in [0, 1], T_base > 0.

    Returns:
        0-d float32 tensor.
    """
    _validate(features, labels, temperature, threshold, base_temperature)
    if features.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"Expected float32, float16 or bfloat16 features. Received: dtype={features.dtype}")
    u = _view_major_rows(features).to(features.dtype).contiguous()  # (VB, D), the features' dtype
    y = labels.to(device=u.device, dtype=u.dtype).contiguous()  # (B, K), 0/1 exact in any float dtype
    return JaccardSupConFunction.apply(u, y, float(temperature), float(threshold), float(base_temperature))


def jaccard_supcon_reference(features, labels, temperature=0.07, threshold=0.3, base_temperature=0.07):
    """Plain-torch Jaccard SupCon with the ``(VB, VB)`` matrices materialised (float32; autograd gradient)."""
    _validate(features, labels, temperature, threshold, base_temperature)
    u = _view_major_rows(features)  # (VB, D)
    y = labels.to(device=u.device, dtype=torch.float32).repeat(features.shape[1], 1)  # (VB, K)
    intersection = y @ y.T  # (VB, VB)
    sizes = torch.sum(y, dim=1)  # (VB,)
    union = sizes[:, None] + sizes[None, :] - intersection  # (VB, VB)
    jaccard = torch.where(union > 0, intersection / torch.where(union > 0, union, 1.0), 0.0)  # (VB, VB)
    rows = torch.arange(u.shape[0], device=u.device)
    is_self = rows[:, None] == rows[None, :]  # (VB, VB)
    is_positive = (jaccard >= threshold) & ~is_self  # (VB, VB)
    weights = torch.where(is_positive, jaccard, 0.0)  # (VB, VB)
    num_positives = torch.sum(is_positive.float(), dim=1)  # (VB,)
    logits = (u @ u.T) / temperature  # (VB, VB)
    log_prob = logits - torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
    weighted = torch.sum(weights * log_prob, dim=1) / torch.clamp(num_positives, min=1.0)  # (VB,)
    return -(temperature / base_temperature) * torch.mean(weighted)
