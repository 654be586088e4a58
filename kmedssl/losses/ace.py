"""ACE losses (paper 004, Eqs. 1-8; SPEC §3.5): global DINO-style consistency and Gaussian-target matching.

Geometry (SPEC §3.5): crop C1 covers 2g x 2g grid cells and crop C2 covers g x g cells; both are resized to
the same size and give a g x g token grid each, so one C1 token covers 2 x 2 C2 tokens. Composition merges
2 x 2 student C2 tokens into one (g/2 x g/2 grid) and matches them against the teacher C1 tokens;
decomposition splits each student C1 token into 2 x 2 (2g x 2g grid) and matches them against the teacher
C2 tokens.

The matching pairs of two overlap masks and the dense NumPy targets they define (``ace_matching_pairs``,
``ace_matching_targets``) are data-pipeline code in ``kmedssl.views.ace``; they are imported here because
``kmedssl.losses`` exports them (SPEC §3.5).
"""

import numpy as np
from keras import ops

from kmedssl.losses.common import l2_normalize
from kmedssl.ops.kernels import fused_op, use_triton
from kmedssl.views.ace import ace_matching_pairs, ace_matching_targets, validate_kernel  # noqa: F401


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
    if use_triton(teacher, student, logit_scale, paired, op="ace_matching", rows=t_shape[0], dim=t_shape[2]):
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
