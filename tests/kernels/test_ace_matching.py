"""kmedssl_kernels.ace_matching (paper 004, Eqs. 3-7; SPEC §3.5): the fused Triton op against its plain-torch
reference (value and every gradient), and the reference against a float64 NumPy oracle of SPEC's formula, so
that kernel == reference == paper. The library dispatch is tested in tests/losses/test_ace.py."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kmedssl_kernels import ace_matching as am  # noqa: E402
from tests.helpers import finite_difference_grad  # noqa: E402
from tests.losses import oracles  # noqa: E402
from tests.kernels.kernel_checks import DEVICE, DTYPES, compare_value_and_grads, saved_tensor_sizes  # noqa: E402

pytestmark = pytest.mark.backend_free

# (B, N_t, grid, C, kernel_size): grid 2/4/6 (N_s = 4, 16, 36), N_t != N_s, C in {5, 16, 33}, B in {1, 3};
# the last case spans two row blocks (N_t = 40 > 32), two column blocks (N_s = 81 > 64) and two channel chunks.
CASES = [(1, 7, 2, 5, 3), (3, 10, 4, 16, 5), (3, 36, 6, 33, 3), (1, 9, 6, 16, 5), (1, 40, 9, 80, 5)]


# === Inputs ===

def make_inputs(batch, rows, grid, channels, dtype=torch.float32, seed=0, log_scale=math.log(1 / 0.07)):
    """Teacher, student, logit_scale (all requiring grad) and pairs with unpaired rows (-1) and corner pairs."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, rows, channels, generator=generator)
    student = 0.3 * torch.randn(batch, grid * grid, channels, generator=generator)
    paired = torch.randint(-1, grid * grid, (batch, rows), generator=generator, dtype=torch.int32)
    paired[:, 0] = -1  # an unpaired row in every sample
    paired[:, -1] = 0  # top-left corner: the Gaussian is clipped on two sides
    if rows > 2:
        paired[:, 1] = grid * grid - 1  # bottom-right corner
    tensors = [x.to(device=DEVICE, dtype=dtype).requires_grad_() for x in (teacher, student)]
    scale = torch.tensor(log_scale, device=DEVICE, requires_grad=True)
    return [*tensors, scale, paired.to(DEVICE)]


def _fixed(function, grid, kernel_size, sigma=1.0, alpha=0.9):
    return lambda t, s, scale, paired: function(t, s, scale, paired, grid, kernel_size, sigma, alpha)


# === Kernel vs reference ===


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch, rows, grid, channels, kernel_size", CASES)
def test_kernel_matches_reference(batch, rows, grid, channels, kernel_size, dtype):
    _, grads = compare_value_and_grads(
        _fixed(am.ace_matching_loss, grid, kernel_size),
        _fixed(am.ace_matching_loss_reference, grid, kernel_size),
        make_inputs(batch, rows, grid, channels, dtype),
    )
    assert all(g.abs().max() > 0 for g in grads[:3])


@pytest.mark.parametrize("alpha, sigma", [(0.99, 1.0), (0.0, 0.7), (1.0, 2.0)])
def test_kernel_matches_reference_for_alpha_and_sigma(alpha, sigma):
    compare_value_and_grads(
        _fixed(am.ace_matching_loss, 4, 5, sigma, alpha),
        _fixed(am.ace_matching_loss_reference, 4, 5, sigma, alpha),
        make_inputs(3, 16, 4, 16),
    )


def test_small_tiles_cover_several_blocks_on_every_axis(monkeypatch):
    """With 16 x 16 tiles and 16-channel chunks: 3 row blocks, 3 column blocks and 3 channel chunks."""
    monkeypatch.setattr(am, "BLOCK_T", 16)
    monkeypatch.setattr(am, "BLOCK_S", 16)
    monkeypatch.setattr(am, "MAX_BLOCK_C", 16)
    compare_value_and_grads(
        _fixed(am.ace_matching_loss, 6, 3), _fixed(am.ace_matching_loss_reference, 6, 3), make_inputs(2, 37, 6, 33)
    )


def test_unpaired_rows_have_zero_targets():
    """All rows unpaired: T = 0 everywhere, so L = mean (1 - alpha) softplus(x)."""
    teacher, student, scale, paired = make_inputs(2, 5, 4, 16)
    paired = torch.full_like(paired, -1)
    loss = am.ace_matching_loss(teacher, student, scale, paired, 4, 3, 1.0, 0.9)
    logits = scale.exp() * torch.nn.functional.normalize(teacher, dim=-1) @ student.transpose(1, 2)
    torch.testing.assert_close(loss, 0.1 * torch.nn.functional.softplus(logits).mean(), rtol=1e-5, atol=1e-7)


class _Recorder:
    """Stands in for a Triton kernel: records each launch, then launches the kernel."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        self.launches.append(grid)
        return self.kernel[grid]


def test_only_the_requested_gradients_are_computed(monkeypatch):
    """As the ACE model calls it: the teacher tokens carry no gradient; and under no_grad only the value."""
    teacher, student, scale, paired = make_inputs(3, 10, 4, 16)
    teacher = teacher.detach()
    _, grads = compare_value_and_grads(
        _fixed(am.ace_matching_loss, 4, 3), _fixed(am.ace_matching_loss_reference, 4, 3),
        [teacher, student, scale, paired],
    )
    assert grads[0] is None and grads[1] is not None and grads[2] is not None
    launched = []
    monkeypatch.setattr(am, "_columns_kernel", _Recorder(am._columns_kernel, launched))
    with torch.no_grad():
        loss = am.ace_matching_loss(teacher, student, scale, paired, 4, 3)
        torch.testing.assert_close(loss, am.ace_matching_loss_reference(teacher, student, scale, paired, 4, 3))
    assert loss.grad_fn is None and not launched  # no student-gradient pass without grad mode


def test_memory_saved_for_backward_is_linear_in_tokens():
    """Only the O(B N C) gradients are kept between forward and backward, never the (B, N_t, N_s) logits."""
    batch, rows, grid, channels = 2, 36, 6, 5
    loss = am.ace_matching_loss(*make_inputs(batch, rows, grid, channels), grid)
    assert max(saved_tensor_sizes(loss)) <= batch * grid * grid * channels < batch * rows * grid * grid


def test_batch_permutation_and_teacher_scale_leave_the_loss_unchanged():
    teacher, student, scale, paired = (x.detach() for x in make_inputs(3, 10, 4, 16))
    loss = am.ace_matching_loss(teacher, student, scale, paired, 4)
    order = torch.tensor([2, 0, 1], device=DEVICE)
    torch.testing.assert_close(am.ace_matching_loss(teacher[order], student[order], scale, paired[order], 4), loss)
    torch.testing.assert_close(am.ace_matching_loss(3.0 * teacher, student, scale, paired, 4), loss)  # n(t)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(grid=5), "grid"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(sigma=0.0), "sigma"),
        (dict(alpha=1.5), "alpha"),
        (dict(paired=torch.zeros(2, 3, dtype=torch.int32)), "paired"),
        (dict(student=torch.ones(2, 16, 4)), "student"),
        (dict(logit_scale=torch.ones(2)), "logit_scale"),
    ],
)
def test_invalid_arguments_raise(change, message):
    arguments = dict(teacher=torch.ones(2, 5, 3), student=torch.ones(2, 16, 3), logit_scale=torch.tensor(1.0),
                     paired=torch.zeros(2, 5, dtype=torch.int32), grid=4)
    with pytest.raises(ValueError, match=message):
        am.ace_matching_loss(**{**arguments, **change})


# === Reference vs the float64 oracle of SPEC §3.5 ===


@pytest.mark.parametrize("alpha, sigma", [(0.9, 1.0), (0.99, 0.7)])
@pytest.mark.parametrize("batch, rows, grid, channels, kernel_size", CASES[:4])
def test_reference_matches_oracle(batch, rows, grid, channels, kernel_size, alpha, sigma):
    teacher, student, scale, paired = (x.detach().cpu() for x in make_inputs(batch, rows, grid, channels))
    loss = am.ace_matching_loss_reference(teacher, student, scale, paired, grid, kernel_size, sigma, alpha)
    expected = oracles.ace_loss_from_pairs(teacher.numpy(), student.numpy(), scale.item(), paired.numpy(), grid, kernel_size,
                           sigma, alpha)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-7)


def test_reference_targets_match_oracle_targets():
    """The dense targets: one peak of 1 per paired row, Gaussian values around it, clipped at the border."""
    paired = torch.tensor([[0, 5, -1, 15]], dtype=torch.int32)
    target = am.gaussian_targets_reference(paired, 4, kernel_size=3, sigma=1.0)[0].numpy()
    e1, e2 = math.exp(-0.5), math.exp(-1.0)
    expected = np.zeros((4, 16))
    expected[0, [0, 1, 4, 5]] = [1.0, e1, e1, e2]  # corner: only 4 of the 9 cells exist
    expected[1, [0, 1, 2, 4, 5, 6, 8, 9, 10]] = [e2, e1, e2, e1, 1.0, e1, e2, e1, e2]
    expected[3, [10, 11, 14, 15]] = [e2, e1, e1, 1.0]
    np.testing.assert_allclose(target, expected, rtol=1e-6, atol=0.0)


def test_reference_gradients_match_finite_differences_of_the_oracle():
    teacher, student, scale, paired = (x.detach().cpu() for x in make_inputs(1, 3, 2, 3, log_scale=1.0))
    leaves = [x.requires_grad_() for x in (teacher, student, scale)]
    grads = torch.autograd.grad(am.ace_matching_loss_reference(*leaves, paired, 2, 3, 1.0, 0.9), leaves)
    args = [teacher.detach().numpy(), student.detach().numpy(), np.float64(1.0)]
    expected = finite_difference_grad(lambda t, s, ls: oracles.ace_loss_from_pairs(t, s, ls, paired.numpy(), 2, 3, 1.0, 0.9), args)
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad.numpy(), reference, rtol=1e-4, atol=1e-6)
