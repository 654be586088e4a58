"""ACE losses (paper 004, Eqs. 1-8; SPEC §3.5): global DINO-style consistency and Gaussian-target matching.

Geometry (SPEC §3.5): crop C1 covers 2g x 2g grid cells and crop C2 covers g x g cells; both are resized to
the same size and give a g x g token grid each, so one C1 token covers 2 x 2 C2 tokens. Composition merges
2 x 2 student C2 tokens into one (g/2 x g/2 grid) and matches them against the teacher C1 tokens;
decomposition splits each student C1 token into 2 x 2 (2g x 2g grid) and matches them against the teacher
C2 tokens.
"""

import numpy as np
from keras import ops


# === Matching targets (data pipeline, NumPy) ===

def ace_matching_targets(mask_1, mask_2, grid=14, comp_kernel=3, decomp_kernel=3, sigma=1.0):
    """Gaussian-smoothed matching targets of composition and decomposition (paper 004, Eq. 4).

    Pairs, in row-major order (SPEC §3.5):
    - composition: the i-th overlap token of C1 with the i-th cell of the 2 x 2-max-pooled C2 mask on the
      g/2 x g/2 grid;
    - decomposition: the i-th overlap token of C2 with the i-th cell of the nearest-upsampled C1 mask on
      the 2g x 2g grid.

    Each paired row gets a kernel x kernel Gaussian centred on its paired cell (Eq. 4)

        T[i, (y + dy) * G + (x + dx)] = exp(-(dx^2 + dy^2) / (2 sigma^2)),  |dx|, |dy| <= (kernel - 1) / 2,

    with peak 1 at the paired cell, clipped at the border of the G x G column grid. Rows of tokens outside
    the overlap are zero.

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
    if not (isinstance(grid, (int, np.integer)) and grid >= 2 and grid % 2 == 0):
        raise ValueError(f"Expected an even grid >= 2. Received: grid={grid}")
    validate_kernel(comp_kernel=comp_kernel, decomp_kernel=decomp_kernel)
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")
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
    t_comp = _stamp_gaussians(np.flatnonzero(m_1), np.argwhere(pooled_2), grid * grid, grid // 2,
                              comp_kernel, sigma)  # (g^2, g^2/4)
    t_decomp = _stamp_gaussians(np.flatnonzero(m_2), np.argwhere(upsampled_1), grid * grid, 2 * grid,
                                decomp_kernel, sigma)  # (g^2, 4g^2)
    return t_comp, t_decomp


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


def _stamp_gaussians(rows, cells, num_rows, side, kernel, sigma):
    """Rows ``rows[i]`` get a Gaussian of peak 1 centred on ``cells[i] = (y, x)`` of a side x side grid."""
    target = np.zeros((num_rows, side * side), dtype=np.float32)
    radius = (kernel - 1) // 2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            y, x = cells[:, 0] + dy, cells[:, 1] + dx
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
