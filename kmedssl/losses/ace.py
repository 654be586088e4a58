"""ACE losses (paper 004, Eqs. 1-8; SPEC §3.5): global DINO-style consistency and Gaussian-target matching.

Geometry (SPEC §3.5): crop C1 covers 2g x 2g grid cells and crop C2 covers g x g cells; both are resized to
the same size and give a g x g token grid each, so one C1 token covers 2 x 2 C2 tokens. Composition merges
2 x 2 student C2 tokens into one (g/2 x g/2 grid) and matches them against the teacher C1 tokens;
decomposition splits each student C1 token into 2 x 2 (2g x 2g grid) and matches them against the teacher
C2 tokens.
"""

import numpy as np
from keras import ops

from kmedssl.losses.common import l2_normalize
from kmedssl.ops.kernels import fused_op, use_triton


# === Matching pairs and targets (data pipeline, NumPy) ===

def ace_matching_pairs(mask_1, mask_2, grid=14):
    """The student column paired with each teacher row, for composition and decomposition (SPEC §3.5).

    Pairs, in row-major order:
    - composition: the i-th overlap token of C1 (teacher row) with the i-th cell of the 2 x 2-max-pooled C2
      mask on the g/2 x g/2 grid (composed student column);
    - decomposition: the i-th overlap token of C2 (teacher row) with the i-th cell of the nearest-upsampled
      C1 mask on the 2g x 2g grid (decomposed student column).

    These indices are all the matching targets need: ``ace_matching_loss_from_pairs`` (or the fused kernel)
    stamps the Gaussians of Eq. 4 on the device, and ``ace_matching_targets`` builds the dense matrices.

    Args:
        mask_1: ``(g^2,)`` 0/1 (or bool) overlap mask of C1's token grid, row-major.
        mask_2: ``(g^2,)`` 0/1 (or bool) overlap mask of C2's token grid, row-major.
        grid: g, the token grid side of each crop (even; paper 14).

    Returns:
        ``(paired_comp, paired_decomp)``: int32 arrays of shape ``(g^2,)``; entry i is the row-major column
        (in ``[0, g^2 / 4)`` and ``[0, 4 g^2)``) paired with teacher row i, or -1 outside the overlap.

    Raises:
        ValueError: on bad arguments, or masks whose overlaps are not whole C1 tokens of equal area.
    """
    if not (isinstance(grid, (int, np.integer)) and grid >= 2 and grid % 2 == 0):
        raise ValueError(f"Expected an even grid >= 2. Received: grid={grid}")
    m_1 = _as_grid_mask(mask_1, grid, "mask_1")  # (g, g)
    m_2 = _as_grid_mask(mask_2, grid, "mask_2")  # (g, g)
    pooled_2 = m_2.reshape(grid // 2, 2, grid // 2, 2).max(axis=(1, 3))  # (g/2, g/2)
    upsampled_1 = m_1.repeat(2, axis=0).repeat(2, axis=1)  # (2g, 2g)
    if not (np.array_equal(m_2, pooled_2.repeat(2, axis=0).repeat(2, axis=1))
            and pooled_2.sum() == m_1.sum()):
        raise ValueError(
            "Expected overlap masks made of whole C1 tokens (each C1 overlap token covering a 2 x 2 block of "
            f"C2 overlap tokens). Received: mask_1 with {int(m_1.sum())} overlap tokens, mask_2 with "
            f"{int(m_2.sum())} overlap tokens ({int(pooled_2.sum())} whole 2 x 2 blocks)"
        )
    paired_comp = np.full(grid * grid, -1, dtype=np.int32)
    paired_comp[np.flatnonzero(m_1)] = np.flatnonzero(pooled_2)
    paired_decomp = np.full(grid * grid, -1, dtype=np.int32)
    paired_decomp[np.flatnonzero(m_2)] = np.flatnonzero(upsampled_1)
    return paired_comp, paired_decomp


def ace_matching_targets(mask_1, mask_2, grid=14, comp_kernel=3, decomp_kernel=3, sigma=1.0):
    """Dense Gaussian-smoothed matching targets of composition and decomposition (paper 004, Eq. 4).

    Each row paired by ``ace_matching_pairs`` gets a kernel x kernel Gaussian centred on its paired cell

        T[i, (y + dy) * G + (x + dx)] = exp(-(dx^2 + dy^2) / (2 sigma^2)),  |dx|, |dy| <= (kernel - 1) / 2,

    with peak 1 at the paired cell, clipped at the border of the G x G column grid. Rows of tokens outside
    the overlap are zero. (Training uses the pairs directly, see ``ace_matching_loss_from_pairs``.)

    Args:
        mask_1: ``(g^2,)`` 0/1 (or bool) overlap mask of C1's token grid, row-major.
        mask_2: ``(g^2,)`` 0/1 (or bool) overlap mask of C2's token grid, row-major.
        grid: g, the token grid side of each crop (even; paper 14).
        comp_kernel: odd Gaussian kernel size of composition (paper 3).
        decomp_kernel: odd Gaussian kernel size of decomposition (paper 3; the authors' code uses 5).
        sigma: Gaussian width in grid cells (paper 1).

    Returns:
        ``(T_comp, T_decomp)``: float32 arrays of shapes ``(g^2, g^2 / 4)`` (rows: teacher C1 tokens,
        columns: composed student C2 tokens) and ``(g^2, 4 g^2)`` (rows: teacher C2 tokens, columns:
        decomposed student C1 tokens).

    Raises:
        ValueError: on bad arguments, or masks whose overlaps are not whole C1 tokens of equal area.
    """
    validate_kernel(comp_kernel=comp_kernel, decomp_kernel=decomp_kernel)
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")
    paired_comp, paired_decomp = ace_matching_pairs(mask_1, mask_2, grid=grid)
    return (_stamp_gaussians(paired_comp, grid // 2, comp_kernel, sigma),  # (g^2, g^2/4)
            _stamp_gaussians(paired_decomp, 2 * grid, decomp_kernel, sigma))  # (g^2, 4g^2)


def validate_kernel(**kernels):
    """Raise ValueError unless every keyword value is an odd positive integer."""
    for name, value in kernels.items():
        if not (isinstance(value, (int, np.integer)) and value >= 1 and value % 2 == 1):
            raise ValueError(f"Expected an odd positive integer {name}. Received: {name}={value}")


def _as_grid_mask(mask, grid, name):
    mask = np.asarray(mask)
    if mask.shape != (grid * grid,):
        raise ValueError(f"Expected {name} of shape ({grid * grid},). Received: {name}.shape={mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"Expected {name} to hold only 0 and 1. Received: values {np.unique(mask)[:5]}")
    return mask.astype(bool).reshape(grid, grid)


def _stamp_gaussians(paired, side, kernel, sigma):
    """``(N_t,)`` pairs -> ``(N_t, side^2)``: row i gets a Gaussian of peak 1 centred on cell ``paired[i]``."""
    target = np.zeros((len(paired), side * side), dtype=np.float32)
    rows = np.flatnonzero(paired >= 0)
    cell_y, cell_x = np.divmod(paired[rows], side)
    radius = (kernel - 1) // 2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            y, x = cell_y + dy, cell_x + dx
            inside = (y >= 0) & (y < side) & (x >= 0) & (x < side)
            target[rows[inside], y[inside] * side + x[inside]] = np.exp(-(dx * dx + dy * dy) / (2 * sigma**2))
    return target


# === Losses (keras.ops) ===

def ace_matching_loss(logits, target, alpha):
    """Alpha-balanced sigmoid cross-entropy of a matching matrix (paper 004, Eqs. 3, 5 and 7).

        L = mean_{b,i,j} w_bij * BCE(logits_bij, T_bij),   w = alpha * T + (1 - alpha) * (1 - T),
        BCE(x, t) = max(x, 0) - x t + log(1 + exp(-|x|))        (sigmoid cross-entropy from logits)

    i.e. the authors' focal loss with gamma = 0. ``logits`` are
    ``exp(logit_scale) * n(teacher_tokens) @ student_tokens^T``, built by the caller.

    Args:
        logits: ``(B, N_t, N_s)`` matching logits, float32 or bfloat16.
        target: ``(B, N_t, N_s)`` Gaussian targets in [0, 1] from ``ace_matching_targets``.
        alpha: weight of the positive part in [0, 1] (paper: 0.9 composition, 0.99 decomposition).

    Returns:
        float32 scalar, the mean over all entries.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected 0 <= alpha <= 1. Received: alpha={alpha}")
    if tuple(logits.shape) != tuple(target.shape):
        raise ValueError(
            "Expected logits and target of the same shape. "
            f"Received: logits.shape={tuple(logits.shape)}, target.shape={tuple(target.shape)}"
        )
    logits = ops.cast(logits, "float32")
    target = ops.cast(target, "float32")
    bce = ops.maximum(logits, 0.0) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))
    weight = alpha * target + (1.0 - alpha) * (1.0 - target)
    return ops.mean(weight * bce)


def ace_matching_targets_from_pairs(paired, grid, kernel_size=3, sigma=1.0):
    """Dense Eq. 4 targets built on the device from pairs: ``(B, N_t) -> (B, N_t, grid^2)`` float32.

        T[b, i, j] = exp(-(dx^2 + dy^2) / (2 sigma^2))   if paired[b, i] >= 0 and |dx|, |dy| <= (k - 1) / 2
                   = 0                                    otherwise,

    with ``(dy, dx)`` the offset of column j from column ``paired[b, i]`` on the row-major grid x grid
    lattice (so the Gaussian is clipped at the border). Equal to the rows of ``ace_matching_targets``.
    """
    _validate_lattice(grid, kernel_size, sigma)
    paired = ops.cast(paired, "int32")  # (B, N_t)
    cells = ops.arange(grid * grid, dtype="int32")  # (N_s,)
    pair = ops.maximum(paired, 0)[..., None]  # (B, N_t, 1)
    dy = ops.floor_divide(cells, grid) - ops.floor_divide(pair, grid)  # (B, N_t, N_s)
    dx = ops.mod(cells, grid) - ops.mod(pair, grid)
    radius = (kernel_size - 1) // 2
    inside = ops.logical_and(ops.logical_and(paired[..., None] >= 0, ops.abs(dy) <= radius), ops.abs(dx) <= radius)
    gaussian = ops.exp(ops.cast(dy * dy + dx * dx, "float32") * (-0.5 / sigma**2))
    return ops.where(inside, gaussian, 0.0)


def ace_matching_loss_from_pairs(teacher, student, logit_scale, paired, grid, kernel_size=3, sigma=1.0, alpha=0.9):
    """ACE matching loss from tokens and pairs (paper 004, Eqs. 3-7; SPEC §3.5), targets built on the device.

        logits[b, i, j] = exp(logit_scale) * n(teacher[b, i]) . student[b, j]
        L = ace_matching_loss(logits, ace_matching_targets_from_pairs(paired, grid, kernel_size, sigma), alpha)

    On the torch backend with CUDA tensors (``kmedssl.ops.kernels.use_triton``) the fused Triton kernel
    ``kmedssl_kernels.ace_matching`` computes the same value and gradients without materialising the
    ``(B, N_t, N_s)`` logits or targets; elsewhere this ``keras.ops`` reference runs.

    Args:
        teacher: ``(B, N_t, C)`` teacher tokens (normalised here), float32 or bfloat16.
        student: ``(B, N_s, C)`` composed / decomposed student tokens (not normalised), ``N_s = grid^2``,
            row-major on the grid x grid lattice.
        logit_scale: scalar tensor or variable, the log of the logit scale (trainable; init log(1/0.07)).
        paired: ``(B, N_t)`` integer column paired with each teacher row, -1 for none (``ace_matching_pairs``).
        grid: side of the student lattice (g/2 for composition, 2g for decomposition).
        kernel_size: odd Gaussian window (paper 3; the authors' code uses 5 for decomposition).
        sigma: Gaussian width in grid cells (paper 1).
        alpha: weight of the positive part in [0, 1] (paper: 0.9 composition, 0.99 decomposition).

    Returns:
        float32 scalar, the mean over all ``B N_t N_s`` entries.
    """
    _validate_lattice(grid, kernel_size, sigma)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected 0 <= alpha <= 1. Received: alpha={alpha}")
    t_shape, s_shape, p_shape = tuple(teacher.shape), tuple(student.shape), tuple(paired.shape)
    if (len(t_shape) != 3 or len(s_shape) != 3 or len(p_shape) != 2 or t_shape[2] != s_shape[2]
            or s_shape[1] not in (None, grid * grid) or p_shape[1] not in (None, t_shape[1])):
        raise ValueError(
            f"Expected teacher (B, N_t, C), student (B, grid^2 = {grid * grid}, C) and paired (B, N_t). Received: "
            f"teacher.shape={t_shape}, student.shape={s_shape}, paired.shape={p_shape}"
        )
    grid, kernel_size, sigma, alpha = int(grid), int(kernel_size), float(sigma), float(alpha)
    teacher, student, logit_scale, paired = (ops.convert_to_tensor(x) for x in (teacher, student, logit_scale, paired))
    if use_triton(teacher, student, logit_scale, paired):
        return fused_op("ace_matching", "ace_matching_loss")(teacher, student, logit_scale, paired, grid,
                                                             kernel_size, sigma, alpha)
    scale = ops.exp(ops.cast(logit_scale, "float32"))
    student = ops.cast(student, "float32")
    logits = scale * ops.matmul(l2_normalize(teacher), ops.transpose(student, (0, 2, 1)))  # (B, N_t, N_s)
    target = ace_matching_targets_from_pairs(paired, grid, kernel_size, sigma)  # (B, N_t, N_s)
    return ace_matching_loss(logits, target, alpha)


def _validate_lattice(grid, kernel_size, sigma):
    if not (isinstance(grid, (int, np.integer)) and grid >= 1):
        raise ValueError(f"Expected an integer grid >= 1. Received: grid={grid}")
    validate_kernel(kernel_size=kernel_size)
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")


def ace_global_loss(student_1, student_2, teacher_1, teacher_2, center, student_temperature=0.1,
                    teacher_temperature=0.04):
    """Crossed DINO cross-entropy of the overlap-pooled head outputs (paper 004, Eq. 1).

        P_t(t) = softmax((t - c) / tau_t),   log P_s(s) = log_softmax(s / tau_s)
        L = 0.5 * mean_b [ CE(P_t(t_2), log P_s(s_1)) + CE(P_t(t_1), log P_s(s_2)) ],  CE(p, q) = -sum_k p_k q_k

    Teacher rows are crossed with the other crop's student rows, as in the authors' code. Gradients flow
    into every argument: wrap teacher outputs in ``stop_gradient`` before calling (the ACE model does). The
    centre is updated by the caller after the loss: ``c <- m c + (1 - m) mean(teacher rows)``.

    Args:
        student_1, student_2: ``(B, K)`` student head outputs of crops C1 and C2.
        teacher_1, teacher_2: ``(B, K)`` teacher head outputs of crops C1 and C2.
        center: ``(K,)`` or ``(1, K)`` running centre of the teacher outputs.
        student_temperature: tau_s > 0 (paper 0.1).
        teacher_temperature: tau_t > 0 (paper 0.04).

    Returns:
        float32 scalar.
    """
    for name, value in (("student_temperature", student_temperature),
                        ("teacher_temperature", teacher_temperature)):
        if not value > 0:
            raise ValueError(f"Expected {name} > 0. Received: {name}={value}")
    shapes = {name: tuple(x.shape) for name, x in (("student_1", student_1), ("student_2", student_2),
                                                   ("teacher_1", teacher_1), ("teacher_2", teacher_2))}
    if len(set(shapes.values())) != 1 or len(shapes["student_1"]) != 2:
        raise ValueError(f"Expected four (B, K) head outputs of one shape. Received: {shapes}")
    if tuple(center.shape)[-1:] != shapes["student_1"][-1:] or len(center.shape) > 2:
        raise ValueError(
            f"Expected center of shape (K,) or (1, K) with K={shapes['student_1'][-1]}. "
            f"Received: center.shape={tuple(center.shape)}"
        )
    student_1, student_2, teacher_1, teacher_2, center = (
        ops.cast(x, "float32") for x in (student_1, student_2, teacher_1, teacher_2, center)
    )

    def cross_entropy(teacher, student):  # (B, K), (B, K) -> (B,)
        p_teacher = ops.softmax((teacher - center) / teacher_temperature, axis=-1)
        return -ops.sum(p_teacher * ops.log_softmax(student / student_temperature, axis=-1), axis=-1)

    return 0.5 * (ops.mean(cross_entropy(teacher_2, student_1)) + ops.mean(cross_entropy(teacher_1, student_2)))
