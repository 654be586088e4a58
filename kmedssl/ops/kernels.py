"""Kernel dispatch (SPEC §6, §9): whether a Triton fused op of ``kmedssl_kernels`` runs for a call.

The Triton path is taken when all of these hold, else the ``keras.ops`` reference runs:

- ``KMEDSSL_KERNELS`` is ``auto`` (default) or ``triton`` (``off`` always takes the reference);
- the Keras backend is torch and every tensor is a concrete ``torch.Tensor`` (symbolic tensors, e.g. while
  Keras traces a model, always take the reference, whatever the mode);
- the tensors are on CUDA; or the mode is ``triton`` and Triton's interpreter is on (``TRITON_INTERPRET=1``:
  how the tests run the kernels on CPU tensors; in ``auto`` CPU tensors always take the reference);
- ``triton`` and ``kmedssl_kernels`` import (Triton is never imported after TensorFlow, SPEC §10).

- in ``auto``, when the caller names the op and its sizes: the recorded GPU benchmark had the fused op faster
  than the plain keras.ops matrices at that size (``measured_faster``), or those matrices would not fit in the
  device's free memory (``naive_fits``).

In ``auto`` a failed condition silently selects the reference; in ``triton`` it raises a RuntimeError
saying which condition failed. Where ``auto`` declines the fused op on CUDA, the contrastive losses take the
plain matrices when they fit (``naive_fits``; the row-blocked path is 15-60x slower on a GPU).
"""

import functools
import importlib
import importlib.util
import os
import sys

import keras

MODES = ("auto", "off", "triton")

# Peak bytes of the naive contrastive loss + gradients per (row, row) entry of its matrices, measured on an H200
# with bf16 inputs (docs/kernels.md): T-SP InfoNCE 135266 MiB at 65536 rows, Jaccard SupCon 8721 MiB at 16384.
NAIVE_BYTES_PER_ENTRY = 34
# The share of the device's free memory the naive matrices may take.
NAIVE_MEMORY_SHARE = 0.8


def kernel_mode():
    """The requested mode from ``KMEDSSL_KERNELS`` (``auto`` when unset)."""
    mode = os.environ.get("KMEDSSL_KERNELS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"Expected KMEDSSL_KERNELS in {MODES}. Received: KMEDSSL_KERNELS={mode!r}")
    return mode


def interpreter_on():
    """True when Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``, set before Triton's import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _triton_import_problem():
    """None when ``triton`` and ``kmedssl_kernels`` import, else why not (checked once per process)."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'kmedssl[cuda]')"
    if "triton" not in sys.modules and "tensorflow" in sys.modules:
        return "TensorFlow was imported before Triton, and importing Triton now would abort the process (SPEC §10)"
    try:
        importlib.import_module("triton")
        importlib.import_module("kmedssl_kernels")
    except ImportError as error:
        return f"importing the Triton kernels failed: {error}"
    return None


def _tensor_problem(tensors, mode):
    """None when the tensors suit the Triton path, else why not; ``"symbolic"`` for symbolic tensors."""
    if keras.backend.backend() != "torch":
        return f"the Keras backend is {keras.backend.backend()!r}, not 'torch'"
    import torch

    tensors = [t for t in tensors if t is not None and not isinstance(t, (int, float))]  # numbers are constants
    if any(not isinstance(t, torch.Tensor) or t.is_meta for t in tensors):  # meta: Keras's symbolic build on torch
        return "symbolic"
    on_cpu_interpreted = mode == "triton" and interpreter_on()
    if not on_cpu_interpreted and any(t.device.type != "cuda" for t in tensors):
        return "the tensors are not on a CUDA device (CPU tensors need KMEDSSL_KERNELS=triton and TRITON_INTERPRET=1)"
    return None


def measured_faster(op, rows, dim):
    """Whether the GPU benchmark recorded in docs/kernels.md (H200, bf16, loss + gradients, 2026-11-26) had the
    fused ``op`` faster than the naive keras.ops path at ``rows`` rows (ACE: the batch) and width ``dim``.

    Those numbers are the float32-GEMM kernels'; the tensor-core kernels since then are not measured yet, so
    D >= 256 stays on the naive path until a GPU measurement says otherwise.
    """
    if op == "tsp_infonce":  # triton / naive at D = 128: 1.13 (4096 rows), 0.86 (16384), 0.91 (65536)
        return dim < 256 and rows >= 16384
    if op == "jaccard_supcon":  # 1.04-1.11 at D = 128, 3.8-5.8 at D = 512
        return False
    if op == "ace_matching":  # C = 768: 0.96 at B = 64, 2.02 at B = 256
        return rows <= 64
    raise ValueError(f"Expected op in ('tsp_infonce', 'jaccard_supcon', 'ace_matching'). Received: op={op!r}")


def naive_fits(rows, device):
    """Whether the naive contrastive matrices of ``rows`` rows (``NAIVE_BYTES_PER_ENTRY`` bytes per entry) fit in
    ``NAIVE_MEMORY_SHARE`` of the free memory of the CUDA ``device``."""
    import torch

    free_bytes, _ = torch.cuda.mem_get_info(device)
    return NAIVE_BYTES_PER_ENTRY * rows * rows <= NAIVE_MEMORY_SHARE * free_bytes


def on_cuda(*tensors):
    """Whether every tensor is a concrete torch tensor on CUDA (the torch backend's eager step on a GPU)."""
    return _tensor_problem(tensors, "auto") is None


def use_triton(*tensors, op=None, rows=None, dim=None):
    """Whether the Triton fused op should run on these tensors (rules in the module docstring); ``op``,
    ``rows`` and ``dim`` select the measured ``auto`` rule (``measured_faster``, ``naive_fits``).

    Raises:
        RuntimeError: ``KMEDSSL_KERNELS=triton`` and a concrete call cannot take the Triton path.
    """
    mode = kernel_mode()
    if mode == "off":
        return False
    problem = _tensor_problem(tensors, mode)
    if problem == "symbolic":
        return False
    problem = problem or _triton_import_problem()
    if problem is None:
        if mode == "auto" and op is not None:
            device = next(t.device for t in tensors if hasattr(t, "device"))
            return measured_faster(op, rows, dim) or not naive_fits(rows, device)
        return True
    if mode == "triton":
        raise RuntimeError(f"KMEDSSL_KERNELS=triton requires the Triton kernels, but {problem}.")
    return False


def fused_op(module, function=None):
    """The fused op ``kmedssl_kernels.<module>.<function>`` (a torch function with autograd; ``function``
    defaults to the module's name)."""
    return getattr(importlib.import_module(f"kmedssl_kernels.{module}"), function or module)


def describe_kernel_path():
    """One line for ``kmedssl info``: which path the losses take on this process's default device."""
    mode = kernel_mode()
    if mode == "off":
        return "keras.ops reference (KMEDSSL_KERNELS=off)"
    if keras.backend.backend() != "torch":
        return f"keras.ops reference (Triton kernels need the torch backend; active: {keras.backend.backend()})"
    import torch

    interpreted = mode == "triton" and interpreter_on()
    if not torch.cuda.is_available() and not interpreted:
        return "keras.ops reference (no CUDA device; Triton kernels run on CUDA tensors)"
    problem = _triton_import_problem()
    if problem is not None:
        return f"keras.ops reference ({problem})"
    where = "CUDA tensors" if torch.cuda.is_available() else "CPU tensors through TRITON_INTERPRET=1"
    return f"Triton fused kernels on {where} (KMEDSSL_KERNELS={mode})"
