"""Checks shared by the tests of the Triton fused ops (``kmedssl_kernels``): a kernel against its plain-torch
reference in value and in every gradient, with one dtype -> tolerance table.

Needs only torch and triton (no keras). On CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``,
set by ``tests/conftest.py`` before Triton's import); with the interpreter off and a GPU present, ``DEVICE`` is
CUDA and the same tests check the compiled kernels.

- ``tolerance(dtype)``: ``{"rtol", "atol"}`` for outputs/gradients of inputs of that dtype (``TOLERANCES``);
  ``gemm_tolerance(dtype)`` for the contrastive ops, whose GEMMs read operands of that dtype.
- ``compare_value_and_grads(fn, reference, inputs, rtol=None, atol=None)``: run both on fresh leaf copies of
  ``inputs``, compare every output and the gradient w.r.t. every input tensor that requires grad (same seeded
  random cotangent for both, so tuple outputs and non-scalar outputs are covered as well as losses).
- ``saved_tensor_sizes(output)``: element counts of the tensors an autograd node saved for backward (to check that
  a fused op keeps O(B·D), never O(B²)).
"""

import os

import numpy as np
import torch

# Kernels compute in float32 whatever the input dtype; gradients come back in the input dtype, so the
# tolerance is that of one rounding to the input dtype on top of float32 reordering.
TOLERANCES = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float16: {"rtol": 2e-3, "atol": 1e-5},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-4},
}

# The contrastive ops (tsp_infonce, jaccard_supcon) run their GEMMs on float16/bfloat16 operands (the rows
# rounded to the input dtype; tensor cores) with float32 accumulation. A cosine then carries about one unit
# roundoff of the input dtype (float16: 2^-11 ~ 4.9e-4; bfloat16: 2^-8 ~ 3.9e-3), which the logit scale
# (1/T ~ 14, or scale * ds/dc) multiplies: against the float32 reference, softmax weights and gradients of size ~1
# differ by up to ~10 roundoffs.
GEMM_TOLERANCES = {
    torch.float32: TOLERANCES[torch.float32],
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
    torch.bfloat16: {"rtol": 4e-2, "atol": 4e-2},
}

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETED else "cpu"
# bfloat16 loads, stores and tl.dot are wrong in Triton's interpreter (SPEC §10): bf16 is checked on a GPU only.
DTYPES = (torch.float32, torch.float16) if DEVICE == "cpu" else (torch.float32, torch.float16, torch.bfloat16)


def tolerance(dtype):
    """``{"rtol": ..., "atol": ...}`` for a floating dtype of ``TOLERANCES``."""
    if dtype not in TOLERANCES:
        raise ValueError(f"Expected a dtype in {sorted(map(str, TOLERANCES))}. Received: {dtype}")
    return dict(TOLERANCES[dtype])


def gemm_tolerance(dtype):
    """``{"rtol": ..., "atol": ...}`` of ``GEMM_TOLERANCES`` for the contrastive ops on inputs of ``dtype``."""
    return dict(GEMM_TOLERANCES[dtype])


def _leaf_copies(inputs):
    """Fresh leaf copies of the tensors in ``inputs`` (keeping requires_grad); other values pass through."""
    return [
        x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x for x in inputs
    ]


def _as_tuple(outputs):
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _default_tolerance(inputs):
    """The tolerance of the least precise floating input tensor (float32 when there is none)."""
    dtypes = [x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.dtype in TOLERANCES]
    return max((tolerance(d) for d in dtypes), key=lambda t: t["rtol"], default=tolerance(torch.float32))


def _assert_close(actual, expected, rtol, atol, what):
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: kernel gives {actual.dtype} {tuple(actual.shape)}, "
            f"reference {expected.dtype} {tuple(expected.shape)}"
        )
    actual_np = actual.detach().cpu().to(torch.float64).numpy() if actual.is_floating_point() else actual.cpu().numpy()
    expected_np = (
        expected.detach().cpu().to(torch.float64).numpy() if expected.is_floating_point() else expected.cpu().numpy()
    )
    if not actual.is_floating_point():
        rtol = atol = 0.0
    np.testing.assert_allclose(actual_np, expected_np, rtol=rtol, atol=atol, err_msg=what)


def compare_value_and_grads(fn, reference, inputs, rtol=None, atol=None, seed=0):
    """Assert that ``fn(*inputs)`` equals ``reference(*inputs)`` in every output and every input gradient.

    Args:
        fn, reference: callables of the same positional arguments returning a tensor or a tuple of tensors.
        inputs: positional arguments; tensors with ``requires_grad`` get their gradients compared (and those of
            ``fn`` must come back in the input's dtype). Integer/bool outputs must match exactly.
        rtol, atol: override the tolerance of the least precise floating input (``TOLERANCES``).
        seed: seed of the random cotangents that weight the differentiable outputs.

    Returns:
        ``(outputs, grads)`` of ``fn``: its outputs and a list with one gradient (or None) per input.
    """
    default = _default_tolerance(inputs)
    rtol = default["rtol"] if rtol is None else rtol
    atol = default["atol"] if atol is None else atol
    runs = []
    for function in (fn, reference):
        args = _leaf_copies(inputs)
        outputs = _as_tuple(function(*args))
        differentiable = [o for o in outputs if o.is_floating_point() and o.requires_grad]
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        generator = torch.Generator().manual_seed(seed)
        cotangents = [torch.randn(o.shape, generator=generator).to(o) for o in differentiable]
        grads = torch.autograd.grad(differentiable, leaves, cotangents, allow_unused=True) if leaves else ()
        grads = iter(grads)
        runs.append((outputs, [next(grads) if isinstance(a, torch.Tensor) and a.requires_grad else None for a in args]))
    (outputs, grads), (ref_outputs, ref_grads) = runs
    if len(outputs) != len(ref_outputs):
        raise AssertionError(f"kernel returns {len(outputs)} outputs, reference {len(ref_outputs)}")
    for index, (actual, expected) in enumerate(zip(outputs, ref_outputs)):
        _assert_close(actual, expected, rtol, atol, f"output {index}")
    for index, (x, actual, expected) in enumerate(zip(inputs, grads, ref_grads)):
        if expected is None:
            continue
        if actual is None:
            raise AssertionError(f"input {index}: the kernel gives no gradient, the reference does")
        if actual.dtype != x.dtype:
            raise AssertionError(f"input {index}: gradient dtype {actual.dtype}, input dtype {x.dtype}")
        _assert_close(actual, expected, rtol, atol, f"gradient of input {index}")
    return outputs, grads


def saved_tensor_sizes(output):
    """Element counts of the tensors that ``output``'s autograd node saved for its backward pass."""
    return [t.numel() for t in output.grad_fn.saved_tensors]
