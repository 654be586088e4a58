"""ACE losses (paper 004, Eqs. 1-8; SPEC §3.5) against float64 NumPy oracles written from the SPEC."""

import itertools

import numpy as np
import keras
import pytest
from keras import ops

from kmedssl.losses.ace import (
    ace_global_loss,
    ace_matching_loss,
    ace_matching_loss_from_pairs,
    ace_matching_pairs,
    ace_matching_targets,
    ace_matching_targets_from_pairs,
)
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


# === Oracles (float64, straight from SPEC §3.5 / paper Eqs. 1, 4, 5) ===

def overlap_masks_oracle(corner_1, corner_2, g):
    """Masks by brute force over cells: a C1 token (2 x 2 cells) / C2 token (1 cell) is in the overlap when
    all of its cells lie inside the other crop. Corners are in cells; C1 spans 2g cells, C2 spans g."""
    (y1, x1), (y2, x2) = corner_1, corner_2
    in_c1 = lambda y, x: y1 <= y < y1 + 2 * g and x1 <= x < x1 + 2 * g  # noqa: E731
    in_c2 = lambda y, x: y2 <= y < y2 + g and x2 <= x < x2 + g  # noqa: E731
    m1 = np.array([all(in_c2(y1 + 2 * a + i, x1 + 2 * b + j) for i in range(2) for j in range(2))
                   for a in range(g) for b in range(g)], dtype=np.float64)
    m2 = np.array([in_c1(y2 + a, x2 + b) for a in range(g) for b in range(g)], dtype=np.float64)
    return m1, m2


def targets_oracle(mask_1, mask_2, g, comp_kernel, decomp_kernel, sigma):
    """T[i, j] = exp(-(dx^2 + dy^2) / 2 sigma^2) when the i-th overlap row is paired with a cell within
    (k - 1) / 2 of column j (per axis), else 0 (Eq. 4), with the pairing of SPEC §3.5."""
    m1, m2 = mask_1.reshape(g, g), mask_2.reshape(g, g)
    pooled = np.array([[m2[2 * i:2 * i + 2, 2 * j:2 * j + 2].max() for j in range(g // 2)]
                       for i in range(g // 2)])
    upsampled = np.array([[m1[i // 2, j // 2] for j in range(2 * g)] for i in range(2 * g)])

    def build(rows_mask, cols_mask, kernel):
        side = cols_mask.shape[0]
        rows = [r for r in range(g * g) if rows_mask.reshape(-1)[r]]
        cells = [(y, x) for y in range(side) for x in range(side) if cols_mask[y, x]]
        target = np.zeros((g * g, side * side))
        for r, (cy, cx) in zip(rows, cells, strict=True):
            for y, x in itertools.product(range(side), range(side)):
                dy, dx = y - cy, x - cx
                if max(abs(dy), abs(dx)) <= (kernel - 1) // 2:
                    target[r, y * side + x] = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
        return target

    return build(m1, pooled, comp_kernel), build(m2, upsampled, decomp_kernel)


def pairs_oracle(mask_1, mask_2, g):
    """Teacher row -> paired student column (SPEC §3.5): the k-th overlap row (row-major) is paired with the
    k-th overlap cell of the pooled C2 mask (composition) / of the upsampled C1 mask (decomposition)."""
    m1, m2 = mask_1.reshape(g, g), mask_2.reshape(g, g)
    pooled = [m2[2 * i:2 * i + 2, 2 * j:2 * j + 2].max() for i in range(g // 2) for j in range(g // 2)]
    upsampled = [m1[i // 2, j // 2] for i in range(2 * g) for j in range(2 * g)]

    def pair(rows_mask, cols_mask):
        cols = iter([c for c, m in enumerate(cols_mask) if m])
        return np.array([next(cols) if m else -1 for m in rows_mask])

    return pair(mask_1, pooled), pair(mask_2, upsampled)


def global_loss_oracle(s1, s2, t1, t2, c, tau_s=0.1, tau_t=0.04):
    def softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def ce(t, s):
        p_t = softmax((np.asarray(t, np.float64) - np.asarray(c, np.float64)) / tau_t)
        p_s = softmax(np.asarray(s, np.float64) / tau_s)
        return -(p_t * np.log(p_s)).sum(axis=-1).mean()

    return float(0.5 * (ce(t2, s1) + ce(t1, s2)))


# Corners (cells) of C1 (2g x 2g) and C2 (g x g) with even offsets, g = 4: C2 inside C1, partial overlaps
# at corners and edges, C2 in a corner of C1, and no overlap.
GEOMETRIES = [((0, 0), (2, 2)), ((2, 0), (0, 6)), ((0, 2), (6, 0)), ((2, 2), (8, 4)), ((1, 3), (5, 7)),
              ((4, 4), (0, 2))]


# === Matching targets ===

@pytest.mark.backend_free
@pytest.mark.parametrize("corners", GEOMETRIES)
@pytest.mark.parametrize("kernels,sigma", [((3, 3), 1.0), ((3, 5), 1.0), ((1, 5), 0.7)])
def test_matching_targets_match_oracle(corners, kernels, sigma):
    g = 4
    m1, m2 = overlap_masks_oracle(*corners, g)
    t_comp, t_decomp = ace_matching_targets(m1, m2, grid=g, comp_kernel=kernels[0], decomp_kernel=kernels[1],
                                            sigma=sigma)
    o_comp, o_decomp = targets_oracle(m1, m2, g, kernels[0], kernels[1], sigma)
    assert t_comp.shape == (g * g, g * g // 4) and t_decomp.shape == (g * g, 4 * g * g)
    assert t_comp.dtype == np.float32 and t_decomp.dtype == np.float32
    np.testing.assert_allclose(t_comp, o_comp, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t_decomp, o_decomp, rtol=1e-6, atol=1e-7)


@pytest.mark.backend_free
@pytest.mark.parametrize("corners", GEOMETRIES)
def test_matching_targets_peak_on_the_same_cells(corners):
    """Each teacher row peaks (value 1) at the student column that covers exactly the same image cells."""
    g = 4
    (y1, x1), (y2, x2) = corners
    m1, m2 = overlap_masks_oracle(*corners, g)
    t_comp, t_decomp = ace_matching_targets(m1, m2, grid=g)
    for row in range(g * g):
        a, b = divmod(row, g)
        # composition: C1 token (a, b) covers cells from (y1 + 2a, x1 + 2b); composed C2 column (I, J)
        # covers cells from (y2 + 2I, x2 + 2J).
        if m1[row]:
            col = np.argmax(t_comp[row])
            ci, cj = divmod(col, g // 2)
            assert (y2 + 2 * ci, x2 + 2 * cj) == (y1 + 2 * a, x1 + 2 * b)
            assert t_comp[row, col] == 1.0 and np.sum(t_comp[row] == 1.0) == 1
        else:
            assert not t_comp[row].any()
        # decomposition: C2 token (a, b) is cell (y2 + a, x2 + b); decomposed C1 column (I, J) on the
        # 2g x 2g grid is cell (y1 + I, x1 + J).
        if m2[row]:
            col = np.argmax(t_decomp[row])
            di, dj = divmod(col, 2 * g)
            assert (y1 + di, x1 + dj) == (y2 + a, x2 + b)
            assert t_decomp[row, col] == 1.0 and np.sum(t_decomp[row] == 1.0) == 1
        else:
            assert not t_decomp[row].any()


@pytest.mark.backend_free
def test_matching_targets_empty_overlap_is_zero():
    t_comp, t_decomp = ace_matching_targets(np.zeros(16), np.zeros(16), grid=4)
    assert not t_comp.any() and not t_decomp.any()


@pytest.mark.backend_free
def test_matching_targets_validate_arguments():
    m1, m2 = overlap_masks_oracle((2, 0), (0, 6), 4)
    with pytest.raises(ValueError, match="whole C1 tokens"):
        ace_matching_targets(m1, np.roll(m2, 1), grid=4)  # C2 overlap no longer whole 2 x 2 blocks
    with pytest.raises(ValueError, match="whole C1 tokens"):
        ace_matching_targets(np.zeros_like(m1), m2, grid=4)  # areas disagree
    with pytest.raises(ValueError, match="even grid"):
        ace_matching_targets(np.zeros(9), np.zeros(9), grid=3)
    with pytest.raises(ValueError, match="odd positive integer comp_kernel"):
        ace_matching_targets(m1, m2, grid=4, comp_kernel=2)
    with pytest.raises(ValueError, match="shape"):
        ace_matching_targets(m1[:-1], m2, grid=4)
    with pytest.raises(ValueError, match="only 0 and 1"):
        ace_matching_targets(m1 * 0.5, m2, grid=4)


# === Matching loss ===

def _matching_inputs(rng, shape=(2, 4, 3)):
    logits = rng.normal(scale=3.0, size=shape).astype(np.float32)
    target = rng.uniform(size=shape).astype(np.float32)
    target[rng.uniform(size=shape) < 0.5] = 0.0
    return logits, target


@pytest.mark.parametrize("alpha", [0.9, 0.99, 0.0, 1.0])
@pytest.mark.parametrize("shape", [(2, 4, 3), (3, 16, 4), (1, 16, 64)])
def test_matching_loss_matches_oracle(rng, alpha, shape):
    logits, target = _matching_inputs(rng, shape)
    loss = ace_matching_loss(ops.convert_to_tensor(logits), ops.convert_to_tensor(target), alpha)
    assert to_numpy(loss).shape == () and keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert_close(loss, oracles.ace_matching_loss(logits, target, alpha), rtol=1e-5)


def test_matching_loss_is_stable_for_large_logits():
    logits = np.array([[[80.0, -80.0, 0.0]]], np.float32)
    target = np.array([[[0.0, 1.0, 1.0]]], np.float32)
    expected = np.mean([0.1 * 80.0, 0.9 * 80.0, 0.9 * np.log(2.0)])
    assert_close(ace_matching_loss(ops.convert_to_tensor(logits), ops.convert_to_tensor(target), 0.9), expected)


def test_matching_loss_gradient_matches_finite_differences(rng):
    logits, target = _matching_inputs(rng, (2, 3, 2))
    _, grads = value_and_grad(lambda l, t: ace_matching_loss(l, t, 0.9), logits, target)
    expected = finite_difference_grad(lambda l, t: oracles.ace_matching_loss(l, t, 0.9), [logits, target])
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_matching_loss_accepts_bfloat16(rng):
    logits, target = _matching_inputs(rng)
    loss = ace_matching_loss(ops.cast(logits, "bfloat16"), ops.cast(target, "bfloat16"), 0.9)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert_close(loss, oracles.ace_matching_loss(logits, target, 0.9), rtol=3e-2, atol=1e-3)


def test_matching_loss_validates_arguments(rng):
    logits, target = _matching_inputs(rng)
    with pytest.raises(ValueError, match="alpha"):
        ace_matching_loss(ops.convert_to_tensor(logits), ops.convert_to_tensor(target), 1.5)
    with pytest.raises(ValueError, match="same shape"):
        ace_matching_loss(ops.convert_to_tensor(logits), ops.convert_to_tensor(target[:, :2]), 0.9)


# === Matching pairs and the loss from pairs (targets stamped on the device) ===

@pytest.mark.backend_free
@pytest.mark.parametrize("corners", GEOMETRIES)
def test_matching_pairs_match_oracle(corners):
    g = 4
    m1, m2 = overlap_masks_oracle(*corners, g)
    paired_comp, paired_decomp = ace_matching_pairs(m1, m2, grid=g)
    expected_comp, expected_decomp = pairs_oracle(m1, m2, g)
    assert paired_comp.dtype == paired_decomp.dtype == np.int32
    np.testing.assert_array_equal(paired_comp, expected_comp)
    np.testing.assert_array_equal(paired_decomp, expected_decomp)


@pytest.mark.backend_free
def test_matching_pairs_validate_arguments():
    m1, m2 = overlap_masks_oracle((2, 0), (0, 6), 4)
    with pytest.raises(ValueError, match="whole C1 tokens"):
        ace_matching_pairs(m1, np.roll(m2, 1), grid=4)
    with pytest.raises(ValueError, match="even grid"):
        ace_matching_pairs(np.zeros(9), np.zeros(9), grid=3)


@pytest.mark.parametrize("corners, kernels, sigma", [(GEOMETRIES[0], (3, 3), 1.0), (GEOMETRIES[1], (3, 5), 1.0),
                                                     (GEOMETRIES[3], (1, 5), 0.7), (GEOMETRIES[5], (3, 3), 1.0)])
def test_targets_from_pairs_equal_the_dense_targets(corners, kernels, sigma):
    """On every backend the device-built targets equal ``ace_matching_targets`` (the former dense path)."""
    g = 4
    m1, m2 = overlap_masks_oracle(*corners, g)
    paired_comp, paired_decomp = ace_matching_pairs(m1, m2, grid=g)
    dense_comp, dense_decomp = ace_matching_targets(m1, m2, grid=g, comp_kernel=kernels[0],
                                                    decomp_kernel=kernels[1], sigma=sigma)
    t_comp = ace_matching_targets_from_pairs(paired_comp[None], g // 2, kernels[0], sigma)
    t_decomp = ace_matching_targets_from_pairs(paired_decomp[None], 2 * g, kernels[1], sigma)
    assert keras.backend.standardize_dtype(t_comp.dtype) == "float32"
    assert_close(t_comp, dense_comp[None], rtol=1e-6, atol=1e-7)
    assert_close(t_decomp, dense_decomp[None], rtol=1e-6, atol=1e-7)


def _pairs_inputs(rng, batch, rows, grid, channels):
    """Tokens, a log scale and pairs with an unpaired row and the two corner cells (border clipping)."""
    teacher = rng.normal(size=(batch, rows, channels)).astype(np.float32)
    student = (0.3 * rng.normal(size=(batch, grid * grid, channels))).astype(np.float32)
    paired = rng.integers(-1, grid * grid, size=(batch, rows)).astype(np.int32)
    paired[:, 0], paired[:, -1] = -1, 0
    if rows > 2:
        paired[:, 1] = grid * grid - 1
    return teacher, student, np.float32(np.log(1 / 0.07)), paired


# (B, N_t, grid, C, kernel_size, alpha, sigma): N_t != N_s, grids of composition (g/2) and decomposition (2g)
# sizes (few shapes: each new shape costs JAX's eager mode a compilation of every op).
PAIRS_CASES = [(1, 7, 2, 5, 3, 0.9, 1.0), (2, 16, 8, 8, 5, 0.99, 0.7), (3, 10, 4, 16, 5, 0.99, 0.7)]


@pytest.mark.parametrize("batch, rows, grid, channels, kernel, alpha, sigma", PAIRS_CASES[:2])
def test_matching_loss_from_pairs_matches_oracle(rng, batch, rows, grid, channels, kernel, alpha, sigma):
    teacher, student, log_scale, paired = _pairs_inputs(rng, batch, rows, grid, channels)
    loss = ace_matching_loss_from_pairs(teacher, student, ops.convert_to_tensor(log_scale), paired, grid,
                                        kernel_size=kernel, sigma=sigma, alpha=alpha)
    assert to_numpy(loss).shape == () and keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = oracles.ace_loss_from_pairs(teacher, student, log_scale, paired, grid, kernel, sigma, alpha)
    assert_close(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("corners", GEOMETRIES[1:3])
def test_matching_loss_from_pairs_equals_the_dense_path(rng, corners):
    """Composition and decomposition from view masks: the pairs path gives the loss of the dense targets."""
    g, channels = 4, 6
    m1, m2 = overlap_masks_oracle(*corners, g)
    pairs = ace_matching_pairs(m1, m2, grid=g)
    dense = ace_matching_targets(m1, m2, grid=g, comp_kernel=3, decomp_kernel=5)
    for paired, target, side, kernel in zip(pairs, dense, (g // 2, 2 * g), (3, 5)):
        teacher = rng.normal(size=(1, g * g, channels)).astype(np.float32)
        student = rng.normal(size=(1, side * side, channels)).astype(np.float32)
        normalized = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
        logits = ops.matmul(ops.convert_to_tensor(normalized), ops.transpose(student, (0, 2, 1))) * 2.0
        expected = ace_matching_loss(logits, target[None], 0.9)
        loss = ace_matching_loss_from_pairs(teacher, student, np.float32(np.log(2.0)), paired[None], side,
                                            kernel_size=kernel, alpha=0.9)
        assert_close(loss, to_numpy(expected), rtol=1e-5)


def test_matching_loss_from_pairs_gradient_matches_finite_differences(rng):
    teacher, student, _, paired = _pairs_inputs(rng, 1, 3, 2, 3)
    log_scale = np.float32(1.0)  # moderate logits, so that central differences stay accurate

    def loss(t, s, ls):
        return ace_matching_loss_from_pairs(t, s, ls, paired, 2, kernel_size=3, alpha=0.9)

    _, grads = value_and_grad(loss, teacher, student, log_scale)
    expected = finite_difference_grad(
        lambda t, s, ls: oracles.ace_loss_from_pairs(t, s, ls, paired, 2, 3, 1.0, 0.9), [teacher, student, log_scale])
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_matching_loss_from_pairs_accepts_bfloat16(rng):
    teacher, student, log_scale, paired = _pairs_inputs(rng, 2, 16, 8, 8)
    loss = ace_matching_loss_from_pairs(ops.cast(teacher, "bfloat16"), ops.cast(student, "bfloat16"),
                                        ops.cast(log_scale, "bfloat16"), paired, 8)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = oracles.ace_loss_from_pairs(teacher, student, log_scale, paired, 8, 3, 1.0, 0.9)
    assert_close(loss, expected, rtol=5e-2)


@pytest.mark.parametrize(
    "change, message",
    [(dict(grid=3), "grid"), (dict(kernel_size=2), "kernel_size"), (dict(sigma=0.0), "sigma"),
     (dict(alpha=-0.1), "alpha"), (dict(paired=np.zeros((2, 3), np.int32)), "paired"),
     (dict(student=np.ones((2, 16, 4), np.float32)), "student")],
)
def test_matching_loss_from_pairs_validates_arguments(change, message):
    arguments = dict(teacher=np.ones((2, 5, 3), np.float32), student=np.ones((2, 16, 3), np.float32),
                     logit_scale=np.float32(1.0), paired=np.zeros((2, 5), np.int32), grid=4)
    with pytest.raises(ValueError, match=message):
        ace_matching_loss_from_pairs(**{**arguments, **change})


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the Triton kernels run on the torch backend only")
@pytest.mark.parametrize("batch, rows, grid, channels, kernel, alpha, sigma", PAIRS_CASES[1:])
def test_matching_loss_from_pairs_dispatches_to_the_kernel(rng, monkeypatch, batch, rows, grid, channels, kernel,
                                                           alpha, sigma):
    """KMEDSSL_KERNELS=triton routes to kmedssl_kernels.ace_matching (Triton's interpreter on CPU) and gives the
    keras.ops reference's value and gradients (KMEDSSL_KERNELS=off); auto keeps CPU tensors on the reference."""
    pytest.importorskip("triton")
    import torch
    from kmedssl_kernels import ace_matching

    calls = []
    kernel_loss = ace_matching.ace_matching_loss
    monkeypatch.setattr(ace_matching, "ace_matching_loss", lambda *a: calls.append(1) or kernel_loss(*a))
    arrays = _pairs_inputs(rng, batch, rows, grid, channels)
    paired = torch.from_numpy(arrays[3])
    results = {}
    for mode in ("off", "auto", "triton"):
        monkeypatch.setenv("KMEDSSL_KERNELS", mode)
        leaves = [torch.tensor(a, requires_grad=True) for a in arrays[:3]]
        loss = ace_matching_loss_from_pairs(*leaves, paired, grid, kernel_size=kernel, sigma=sigma, alpha=alpha)
        results[mode] = [loss, *torch.autograd.grad(loss, leaves)]
        assert len(calls) == (mode == "triton")
    for got, want in zip(results["triton"], results["off"]):
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-7)


# === Global loss ===

def _global_inputs(rng, batch=3, k=5):
    s1, s2, t1, t2 = (rng.normal(size=(batch, k)).astype(np.float32) for _ in range(4))
    center = (0.1 * rng.normal(size=(k,))).astype(np.float32)
    return s1, s2, t1, t2, center


@pytest.mark.parametrize("batch,k", [(1, 3), (3, 5), (8, 16)])
@pytest.mark.parametrize("tau_s,tau_t", [(0.1, 0.04), (0.5, 0.2)])
def test_global_loss_matches_oracle(rng, batch, k, tau_s, tau_t):
    args = _global_inputs(rng, batch, k)
    loss = ace_global_loss(*(ops.convert_to_tensor(a) for a in args), student_temperature=tau_s,
                           teacher_temperature=tau_t)
    assert to_numpy(loss).shape == () and keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert_close(loss, global_loss_oracle(*args, tau_s=tau_s, tau_t=tau_t), rtol=1e-5)


def test_global_loss_invariances(rng):
    s1, s2, t1, t2, c = _global_inputs(rng, 4, 6)
    base = to_numpy(ace_global_loss(s1, s2, t1, t2, c))
    perm = rng.permutation(4)
    assert_close(ace_global_loss(s1[perm], s2[perm], t1[perm], t2[perm], c), base)  # batch permutation
    assert_close(ace_global_loss(s2, s1, t2, t1, c), base)  # crop swap
    assert_close(ace_global_loss(s1 + 2.0, s2 - 1.0, t1 + 0.5, t2, c[None] + 0.3), base, rtol=1e-4)  # shifts


def test_global_loss_closed_form_uniform():
    """Uniform teacher and student distributions give CE = log K."""
    k = 7
    zeros = np.zeros((2, k), np.float32)
    assert_close(ace_global_loss(zeros, zeros, zeros, zeros, np.zeros(k, np.float32)), np.log(k))


def test_global_loss_gradient_matches_finite_differences(rng):
    args = _global_inputs(rng, 2, 3)
    _, grads = value_and_grad(lambda *xs: ace_global_loss(*xs, student_temperature=0.5,
                                                          teacher_temperature=0.3), *args)
    expected = finite_difference_grad(lambda *xs: global_loss_oracle(*xs, tau_s=0.5, tau_t=0.3), list(args))
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_global_loss_accepts_bfloat16(rng):
    args = _global_inputs(rng, 3, 5)
    loss = ace_global_loss(*(ops.cast(a, "bfloat16") for a in args), student_temperature=0.5,
                           teacher_temperature=0.3)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert_close(loss, global_loss_oracle(*args, tau_s=0.5, tau_t=0.3), rtol=5e-2)


def test_global_loss_validates_arguments(rng):
    s1, s2, t1, t2, c = _global_inputs(rng)
    with pytest.raises(ValueError, match="teacher_temperature"):
        ace_global_loss(s1, s2, t1, t2, c, teacher_temperature=0.0)
    with pytest.raises(ValueError, match="one shape"):
        ace_global_loss(s1, s2[:2], t1, t2, c)
    with pytest.raises(ValueError, match="center"):
        ace_global_loss(s1, s2, t1, t2, c[:-1])
