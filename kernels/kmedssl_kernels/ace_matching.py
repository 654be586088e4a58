"""Fused ACE Gaussian-target matching loss (paper 004, Eqs. 3-7; SPEC §3.5) with its gradients.

Inputs per sample b: teacher tokens ``t (N_t, C)``, student tokens ``s (N_s, C)`` whose columns lie on a
row-major ``grid x grid`` lattice (``N_s = grid^2``), and ``paired (N_t,)``, the column each teacher row is
paired with (-1: no pair). With ``n(x) = x / max(||x||, 1e-12)`` and ``r = (kernel_size - 1) / 2``:

    x_ij = exp(logit_scale) * n(t_i) . s_j                                              (logits)
    T_ij = exp(-(dx^2 + dy^2) / (2 sigma^2))  if paired_i >= 0 and |dx|, |dy| <= r, else 0      (Eq. 4)
           with (dy, dx) = grid offset of column j from column paired_i (clipped at the border by the grid)
    w_ij = alpha T_ij + (1 - alpha) (1 - T_ij)
    L    = mean_{b,i,j} w_ij * BCE(x_ij, T_ij),   BCE(x, T) = max(x, 0) - x T + log(1 + exp(-|x|))   (Eqs. 5, 7)

The target is never materialised: each tile rebuilds it from ``paired``. Gradients are computed in the forward
pass and stored (the backward only scales them by ``grad_output``), with ``G_ij = dL/dx_ij =
w_ij (sigmoid(x_ij) - T_ij) / (B N_t N_s)`` and ``e = exp(logit_scale)``:

    dL/ds_j           = e sum_i G_ij n(t_i)
    dL/dn(t_i)        = e sum_j G_ij s_j  =: u_i
    dL/dt_i           = (u_i - n(t_i) (n(t_i) . u_i)) / ||t_i||    (u_i / 1e-12 where ||t_i|| <= 1e-12)
    dL/dlogit_scale   = sum_{ij} G_ij x_ij

Two kernels, both tiled over ``(N_t, N_s)`` blocks of one sample and over C in chunks, so memory stays
O(B N C): ``_rows_kernel`` owns a block of teacher rows (loss, ``dL/dt``, ``dL/dlogit_scale`` partial sums,
inverse norms); ``_columns_kernel`` owns a block of student columns (``dL/ds``), recomputing the logits of its
columns. Each program writes only its own rows or columns, so the result is deterministic (no atomics).
All arithmetic is float32 (fp32/fp16/bf16 inputs; fp32 dots in IEEE precision).
"""

import torch
import triton
import triton.language as tl

# === Triton kernels ===


@triton.jit
def _log1p(u):
    """log(1 + u) accurate for small u >= 0 (Goldberg's trick; libdevice is unavailable in the interpreter)."""
    v = 1.0 + u
    exact = v == 1.0
    return tl.where(exact, u, tl.log(v) * u / tl.where(exact, 1.0, v - 1.0))


@triton.jit
def _weighted_bce_and_grad(x, paired, rows_ok, cols, cols_ok, side, radius, neg_half_inv_var, alpha, inv_count):
    """Per-entry loss ``w BCE(x, T)`` and ``G = dL/dx = w (sigmoid(x) - T) / count`` of a (rows, cols) tile.

    T (Eq. 4) is rebuilt from ``paired``: column j sits at ``(j // side, j % side)`` (side = grid); entries outside the
    valid tile are zero in both outputs.
    """
    pair = tl.maximum(paired, 0)
    dy = (cols // side)[None, :] - (pair // side)[:, None]  # (BT, BS)
    dx = (cols % side)[None, :] - (pair % side)[:, None]
    inside = (paired >= 0)[:, None] & (tl.abs(dy) <= radius) & (tl.abs(dx) <= radius)
    target = tl.where(inside, tl.exp((dx * dx + dy * dy).to(tl.float32) * neg_half_inv_var), 0.0)
    weight = alpha * target + (1.0 - alpha) * (1.0 - target)
    u = tl.exp(-tl.abs(x))
    bce = tl.maximum(x, 0.0) - x * target + _log1p(u)
    sigmoid = tl.where(x >= 0, 1.0 / (1.0 + u), u / (1.0 + u))
    valid = rows_ok[:, None] & cols_ok[None, :]
    loss = tl.where(valid, weight * bce, 0.0)
    grad = tl.where(valid, weight * (sigmoid - target) * inv_count, 0.0)
    return loss, grad


@triton.jit
def _raw_logits(t_base, s_base, rows, rows_ok, cols, cols_ok, C, BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """``t_i . s_j`` over a (rows, cols) tile, accumulated over C in chunks: (BT, BS) float32."""
    acc = tl.zeros((BLOCK_T, BLOCK_S), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        chans = c0 + tl.arange(0, BLOCK_C)
        chans_ok = chans < C
        t = tl.load(t_base + rows[:, None] * C + chans[None, :], mask=rows_ok[:, None] & chans_ok[None, :],
                    other=0.0).to(tl.float32)  # (BT, BC)
        s = tl.load(s_base + cols[:, None] * C + chans[None, :], mask=cols_ok[:, None] & chans_ok[None, :],
                    other=0.0).to(tl.float32)  # (BS, BC)
        acc += tl.dot(t, tl.trans(s), input_precision="ieee")
    return acc


# Rows: one program per (block of BT teacher rows, sample b).
#   loss_part[b, p]   = sum_{i in block, j} w_ij BCE(x_ij, T_ij)
#   scale_part[b, p]  = sum_{i in block, j} G_ij x_ij
#   grad_t[b, i]      = (u_i - n(t_i) (n(t_i) . u_i)) / ||t_i||,  u_i = e sum_j G_ij s_j
#   inv_norm[b, i]    = 1 / max(||t_i||, 1e-12)
@triton.jit
def _rows_kernel(t_ptr, s_ptr, log_scale_ptr, paired_ptr, inv_norm_ptr, grad_t_ptr, loss_part_ptr, scale_part_ptr,
                 NT, NS, C, side, radius, neg_half_inv_var, alpha, inv_count,
                 BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
                 NEED_TEACHER_GRAD: tl.constexpr):
    block = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    num_blocks = tl.num_programs(0)
    rows = block * BLOCK_T + tl.arange(0, BLOCK_T)
    rows_ok = rows < NT
    t_base = t_ptr + b * NT * C
    s_base = s_ptr + b * NS * C
    g_base = grad_t_ptr + b * NT * C
    scale = tl.exp(tl.load(log_scale_ptr).to(tl.float32))

    # Pass 1: inverse norms of the teacher rows.
    squares = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        chans = c0 + tl.arange(0, BLOCK_C)
        t = tl.load(t_base + rows[:, None] * C + chans[None, :], mask=rows_ok[:, None] & (chans < C)[None, :],
                    other=0.0).to(tl.float32)
        squares += tl.sum(t * t, axis=1)
    norm = tl.sqrt(squares)
    inv_norm = 1.0 / tl.maximum(norm, 1e-12)
    tl.store(inv_norm_ptr + b * NT + rows, inv_norm, mask=rows_ok)
    paired = tl.load(paired_ptr + b * NT + rows, mask=rows_ok, other=-1)

    # Pass 2: over column blocks, loss and dL/dx; u_i accumulated in grad_t (each program owns its rows).
    loss_acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    scale_acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for s0 in range(0, NS, BLOCK_S):
        cols = s0 + tl.arange(0, BLOCK_S)
        cols_ok = cols < NS
        x = _raw_logits(t_base, s_base, rows, rows_ok, cols, cols_ok, C, BLOCK_T, BLOCK_S, BLOCK_C)
        x = x * (scale * inv_norm)[:, None]  # (BT, BS)
        loss, grad = _weighted_bce_and_grad(x, paired, rows_ok, cols, cols_ok, side, radius, neg_half_inv_var,
                                            alpha, inv_count)
        loss_acc += tl.sum(loss, axis=1)
        scale_acc += tl.sum(grad * x, axis=1)
        if NEED_TEACHER_GRAD:
            for c0 in range(0, C, BLOCK_C):
                chans = c0 + tl.arange(0, BLOCK_C)
                chans_ok = chans < C
                s = tl.load(s_base + cols[:, None] * C + chans[None, :], mask=cols_ok[:, None] & chans_ok[None, :],
                            other=0.0).to(tl.float32)  # (BS, BC)
                u = scale * tl.dot(grad, s, input_precision="ieee")  # (BT, BC)
                offsets = g_base + rows[:, None] * C + chans[None, :]
                tile_ok = rows_ok[:, None] & chans_ok[None, :]
                if s0 > 0:
                    u += tl.load(offsets, mask=tile_ok, other=0.0)
                tl.store(offsets, u, mask=tile_ok)
            tl.debug_barrier()
    tl.store(loss_part_ptr + b * num_blocks + block, tl.sum(loss_acc, axis=0))
    tl.store(scale_part_ptr + b * num_blocks + block, tl.sum(scale_acc, axis=0))

    # Pass 3: through the normalisation, dL/dt = inv_norm u - t inv_norm^3 (t . u)  (identity / 1e-12 if clamped).
    if NEED_TEACHER_GRAD:
        t_dot_u = tl.zeros((BLOCK_T,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            chans = c0 + tl.arange(0, BLOCK_C)
            tile_ok = rows_ok[:, None] & (chans < C)[None, :]
            t = tl.load(t_base + rows[:, None] * C + chans[None, :], mask=tile_ok, other=0.0).to(tl.float32)
            u = tl.load(g_base + rows[:, None] * C + chans[None, :], mask=tile_ok, other=0.0)
            t_dot_u += tl.sum(t * u, axis=1)
        projection = tl.where(norm > 1e-12, t_dot_u * inv_norm * inv_norm * inv_norm, 0.0)
        for c0 in range(0, C, BLOCK_C):
            chans = c0 + tl.arange(0, BLOCK_C)
            tile_ok = rows_ok[:, None] & (chans < C)[None, :]
            offsets = g_base + rows[:, None] * C + chans[None, :]
            t = tl.load(t_base + rows[:, None] * C + chans[None, :], mask=tile_ok, other=0.0).to(tl.float32)
            u = tl.load(offsets, mask=tile_ok, other=0.0)
            tl.store(offsets, u * inv_norm[:, None] - t * projection[:, None], mask=tile_ok)


# Columns: one program per (block of BS student columns, sample b).
#   grad_s[b, j] = sum_i G_ij e inv_norm_i t_i
@triton.jit
def _columns_kernel(t_ptr, s_ptr, log_scale_ptr, paired_ptr, inv_norm_ptr, grad_s_ptr,
                    NT, NS, C, side, radius, neg_half_inv_var, alpha, inv_count,
                    BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    block = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cols = block * BLOCK_S + tl.arange(0, BLOCK_S)
    cols_ok = cols < NS
    t_base = t_ptr + b * NT * C
    s_base = s_ptr + b * NS * C
    g_base = grad_s_ptr + b * NS * C
    scale = tl.exp(tl.load(log_scale_ptr).to(tl.float32))
    for t0 in range(0, NT, BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        rows_ok = rows < NT
        inv_norm = tl.load(inv_norm_ptr + b * NT + rows, mask=rows_ok, other=0.0)
        paired = tl.load(paired_ptr + b * NT + rows, mask=rows_ok, other=-1)
        x = _raw_logits(t_base, s_base, rows, rows_ok, cols, cols_ok, C, BLOCK_T, BLOCK_S, BLOCK_C)
        x = x * (scale * inv_norm)[:, None]  # (BT, BS)
        _, grad = _weighted_bce_and_grad(x, paired, rows_ok, cols, cols_ok, side, radius, neg_half_inv_var, alpha,
                                         inv_count)
        grad = grad * (scale * inv_norm)[:, None]
        for c0 in range(0, C, BLOCK_C):
            chans = c0 + tl.arange(0, BLOCK_C)
            chans_ok = chans < C
            t = tl.load(t_base + rows[:, None] * C + chans[None, :], mask=rows_ok[:, None] & chans_ok[None, :],
                        other=0.0).to(tl.float32)  # (BT, BC)
            v = tl.dot(tl.trans(grad), t, input_precision="ieee")  # (BS, BC)
            offsets = g_base + cols[:, None] * C + chans[None, :]
            tile_ok = cols_ok[:, None] & chans_ok[None, :]
            if t0 > 0:
                v += tl.load(offsets, mask=tile_ok, other=0.0)
            tl.store(offsets, v, mask=tile_ok)
        tl.debug_barrier()


# === Launcher ===

# Tile sizes: teacher rows, student columns, and the largest channel chunk (C is walked in chunks of
# min(MAX_BLOCK_C, next_power_of_2(C)), at least 16 for tl.dot).
BLOCK_T = 32
BLOCK_S = 64
MAX_BLOCK_C = 64


def _validate(teacher, student, logit_scale, paired, grid, kernel_size, sigma, alpha):
    if teacher.dim() != 3 or student.dim() != 3 or teacher.shape[0] != student.shape[0] \
            or teacher.shape[2] != student.shape[2]:
        raise ValueError("Expected teacher (B, N_t, C) and student (B, N_s, C). "
                         f"Received: teacher.shape={tuple(teacher.shape)}, student.shape={tuple(student.shape)}")
    if not (isinstance(grid, int) and grid >= 1 and grid * grid == student.shape[1]):
        raise ValueError(f"Expected an integer grid with grid * grid = N_s = {student.shape[1]}. Received: grid={grid}")
    if tuple(paired.shape) != tuple(teacher.shape[:2]):
        raise ValueError(f"Expected paired of shape (B, N_t) = {tuple(teacher.shape[:2])}. "
                         f"Received: paired.shape={tuple(paired.shape)}")
    if logit_scale.numel() != 1:
        raise ValueError(f"Expected a scalar logit_scale. Received: logit_scale.shape={tuple(logit_scale.shape)}")
    if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
        raise ValueError(f"Expected an odd positive integer kernel_size. Received: kernel_size={kernel_size}")
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected 0 <= alpha <= 1. Received: alpha={alpha}")


def _launch(teacher, student, logit_scale, paired, grid, kernel_size, sigma, alpha, need_teacher, need_student):
    """Loss (0-d float32) and float32 gradients ``(d teacher or None, d student or None, d logit_scale)``."""
    batch, num_rows, channels = teacher.shape
    num_cols = student.shape[1]
    teacher, student = teacher.contiguous(), student.contiguous()
    paired = paired.to(torch.int32).contiguous()
    log_scale = logit_scale.detach().reshape(()).contiguous()
    block_c = max(16, min(MAX_BLOCK_C, triton.next_power_of_2(channels)))
    row_blocks, col_blocks = triton.cdiv(num_rows, BLOCK_T), triton.cdiv(num_cols, BLOCK_S)
    f32 = dict(device=teacher.device, dtype=torch.float32)
    inv_norm = torch.empty((batch, num_rows), **f32)
    loss_part = torch.empty((batch, row_blocks), **f32)
    scale_part = torch.empty((batch, row_blocks), **f32)
    grad_teacher = torch.empty((batch, num_rows, channels), **f32) if need_teacher else inv_norm
    shape_args = dict(NT=num_rows, NS=num_cols, C=channels, side=grid, radius=(kernel_size - 1) // 2,
                      neg_half_inv_var=-0.5 / (sigma * sigma), alpha=float(alpha),
                      inv_count=1.0 / (batch * num_rows * num_cols))
    blocks = dict(BLOCK_T=BLOCK_T, BLOCK_S=BLOCK_S, BLOCK_C=block_c)
    _rows_kernel[(row_blocks, batch)](teacher, student, log_scale, paired, inv_norm, grad_teacher, loss_part,
                                      scale_part, **shape_args, **blocks, NEED_TEACHER_GRAD=need_teacher)
    grad_student = None
    if need_student:
        grad_student = torch.empty((batch, num_cols, channels), **f32)
        _columns_kernel[(col_blocks, batch)](teacher, student, log_scale, paired, inv_norm, grad_student,
                                             **shape_args, **blocks)
    loss = loss_part.sum() / (batch * num_rows * num_cols)
    return loss, (grad_teacher if need_teacher else None), grad_student, scale_part.sum()


class _ACEMatching(torch.autograd.Function):
    """Forward computes the loss and every needed gradient (none under ``torch.no_grad``); backward scales
    them by ``grad_output``."""

    @staticmethod
    def forward(ctx, teacher, student, logit_scale, paired, grid, kernel_size, sigma, alpha, grad_enabled):
        need_teacher, need_student, need_scale = (grad_enabled and need for need in ctx.needs_input_grad[:3])
        loss, grad_teacher, grad_student, grad_scale = _launch(teacher, student, logit_scale, paired, grid,
                                                               kernel_size, sigma, alpha, need_teacher,
                                                               need_student)
        ctx.save_for_backward(
            grad_teacher.to(teacher.dtype) if need_teacher else None,
            grad_student.to(student.dtype) if need_student else None,
            grad_scale.reshape(logit_scale.shape).to(logit_scale.dtype) if need_scale else None,
        )
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        scaled = tuple(None if g is None else g * grad_output.to(g.dtype) for g in ctx.saved_tensors)
        return (*scaled, None, None, None, None, None, None)


# === Public functions ===


def ace_matching_loss(teacher, student, logit_scale, paired, grid, kernel_size=3, sigma=1.0, alpha=0.9):
    """Fused ACE matching loss (module docstring; SPEC §3.5) on CUDA tensors or under ``TRITON_INTERPRET=1``.

    Args:
        teacher: ``(B, N_t, C)`` teacher tokens (normalised inside), float32, float16 or bfloat16.
        student: ``(B, N_s, C)`` student tokens (not normalised), ``N_s = grid^2`` laid out row-major.
        logit_scale: 0-d tensor, the log of the logit scale.
        paired: ``(B, N_t)`` integer column paired with each teacher row, -1 for none (values in [-1, N_s)
            are not checked on the device; others give a meaningless target but never a bad memory access).
        grid: side of the student column lattice.
        kernel_size: odd Gaussian window (paper 3).
        sigma: Gaussian width in grid cells (paper 1).
        alpha: weight of the positive part (paper: 0.9 composition, 0.99 decomposition).

    Returns:
        0-d float32 loss; differentiable w.r.t. ``teacher``, ``student`` and ``logit_scale``.
    """
    _validate(teacher, student, logit_scale, paired, grid, kernel_size, sigma, alpha)
    # Grad mode is off inside Function.forward, so whether gradients are wanted at all is read here.
    return _ACEMatching.apply(teacher, student, logit_scale, paired, grid, kernel_size, sigma, alpha,
                              torch.is_grad_enabled())


def gaussian_targets_reference(paired, grid, kernel_size=3, sigma=1.0):
    """Dense Eq. 4 targets ``(B, N_t, grid^2)`` float32 from ``paired (B, N_t)`` (plain torch)."""
    cells = torch.arange(grid * grid, device=paired.device)
    pair = paired.long().clamp_min(0)
    dy = (cells // grid)[None, None, :] - (pair // grid)[..., None]  # (B, N_t, N_s)
    dx = (cells % grid)[None, None, :] - (pair % grid)[..., None]
    radius = (kernel_size - 1) // 2
    inside = (paired >= 0)[..., None] & (dy.abs() <= radius) & (dx.abs() <= radius)
    gaussian = torch.exp(-(dx * dx + dy * dy).float() / (2.0 * sigma * sigma))
    return torch.where(inside, gaussian, torch.zeros_like(gaussian))


def ace_matching_loss_reference(teacher, student, logit_scale, paired, grid, kernel_size=3, sigma=1.0, alpha=0.9):
    """Plain-torch ``ace_matching_loss`` (same signature and result), materialising logits and targets."""
    _validate(teacher, student, logit_scale, paired, grid, kernel_size, sigma, alpha)
    teacher, student = teacher.float(), student.float()
    normalised = teacher / teacher.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    logits = logit_scale.float().reshape(()).exp() * normalised @ student.transpose(1, 2)  # (B, N_t, N_s)
    target = gaussian_targets_reference(paired, grid, kernel_size, sigma)
    weight = alpha * target + (1.0 - alpha) * (1.0 - target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weight * bce).mean()
