"""kmedssl.ops.kernels (SPEC §6, §9): the KMEDSSL_KERNELS modes, which tensors may take the Triton path, and
the routing of tsp_infonce / jaccard_supcon to the fused ops (torch backend, on Keras's device: CPU tensors in
Triton's interpreter, TRITON_INTERPRET=1 from tests/conftest.py, or CUDA tensors and compiled kernels with
TRITON_INTERPRET=0 on a GPU machine) compared with KMEDSSL_KERNELS=off."""

import importlib

import keras
import numpy as np
import pytest

from kmedssl.losses import jaccard_supcon, tsp_infonce
from kmedssl.ops import kernels

ON_TORCH = keras.backend.backend() == "torch"
torch_only = pytest.mark.skipif(not ON_TORCH, reason="the Triton path exists on the torch backend only")


def _torch_tensor(array, requires_grad=False, device=None):
    """A float32 leaf tensor on ``device`` (default: Keras's torch device, CUDA on a GPU machine)."""
    import torch

    if device is None:
        return keras.ops.convert_to_tensor(np.asarray(array), "float32").detach().requires_grad_(requires_grad)
    return torch.tensor(np.asarray(array), dtype=torch.float32, device=device, requires_grad=requires_grad)


# === Modes ===


@pytest.mark.parametrize("value, mode", [(None, "auto"), ("", "auto"), ("off", "off"), (" Triton ", "triton")])
def test_kernel_mode_reads_the_environment(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("KMEDSSL_KERNELS", raising=False)
    else:
        monkeypatch.setenv("KMEDSSL_KERNELS", value)
    assert kernels.kernel_mode() == mode


def test_bad_mode_raises(monkeypatch):
    monkeypatch.setenv("KMEDSSL_KERNELS", "cuda")
    with pytest.raises(ValueError, match="KMEDSSL_KERNELS"):
        kernels.kernel_mode()
    with pytest.raises(ValueError, match="KMEDSSL_KERNELS"):
        kernels.use_triton(np.zeros((2, 3), "float32"))


def test_off_never_takes_triton(monkeypatch):
    monkeypatch.setenv("KMEDSSL_KERNELS", "off")
    tensor = _torch_tensor(np.ones((2, 3))) if ON_TORCH else keras.ops.ones((2, 3))
    assert kernels.use_triton(tensor) is False
    assert "KMEDSSL_KERNELS=off" in kernels.describe_kernel_path()


@pytest.mark.skipif(ON_TORCH, reason="checks the tensorflow and jax backends")
def test_other_backends_take_the_reference_and_triton_mode_raises(monkeypatch):
    tensor = keras.ops.ones((2, 3))
    monkeypatch.setenv("KMEDSSL_KERNELS", "auto")
    assert kernels.use_triton(tensor) is False
    assert "torch backend" in kernels.describe_kernel_path()
    monkeypatch.setenv("KMEDSSL_KERNELS", "triton")
    with pytest.raises(RuntimeError, match="not 'torch'"):
        kernels.use_triton(tensor)


# === Torch tensors ===


@torch_only
def test_cpu_tensors_take_triton_only_when_forced_and_interpreted(monkeypatch):
    import torch

    tensor = _torch_tensor(np.ones((2, 3)), device="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as tests/conftest.py sets it on CPU (a GPU run sets 0)
    monkeypatch.setenv("KMEDSSL_KERNELS", "auto")
    assert kernels.use_triton(tensor) is False  # auto: CUDA tensors only, interpreter or not
    monkeypatch.setenv("KMEDSSL_KERNELS", "triton")
    assert kernels.use_triton(tensor, None) is True  # None arguments are ignored
    where = "CUDA tensors" if torch.cuda.is_available() else "TRITON_INTERPRET=1"
    assert where in kernels.describe_kernel_path()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA"):
        kernels.use_triton(tensor)


@torch_only
def test_symbolic_and_non_torch_inputs_take_the_reference_in_every_mode(monkeypatch):
    monkeypatch.setenv("KMEDSSL_KERNELS", "triton")
    concrete = _torch_tensor(np.ones((2, 3)), device="cpu")
    assert kernels.use_triton(concrete, keras.KerasTensor((None, 3))) is False
    assert kernels.use_triton(np.ones((2, 3), "float32")) is False


# === The measured auto rule ===


@pytest.mark.parametrize("op, rows, dim, faster", [
    ("tsp_infonce", 16384, 128, True),
    ("tsp_infonce", 65536, 128, True),
    ("tsp_infonce", 4096, 128, False),
    ("tsp_infonce", 65536, 256, False),  # D >= 256: naive until a GPU measures the tensor-core kernels
    ("jaccard_supcon", 65536, 128, False),
    ("ace_matching", 64, 768, True),
    ("ace_matching", 256, 768, False),
])
def test_measured_faster_follows_the_recorded_benchmark(op, rows, dim, faster):
    assert kernels.measured_faster(op, rows, dim) is faster


def test_measured_faster_names_the_known_ops():
    with pytest.raises(ValueError, match="op="):
        kernels.measured_faster("nt_xent", 16, 16)


@torch_only
@pytest.mark.parametrize("mode, free_gib, expected", [
    ("auto", 80.0, False),  # 34 B x 8192^2 = 2.1 GiB fits: the naive path, measured faster at D = 512
    ("auto", 2.0, True),  # it does not fit in 0.8 x 2 GiB: the fused op
    ("triton", 80.0, True),  # forced
])
def test_auto_takes_the_fused_op_where_measured_faster_or_where_naive_would_not_fit(monkeypatch, mode, free_gib,
                                                                                   expected):
    """The tensor checks pass as for CUDA tensors; the device's free memory is set."""
    import torch

    monkeypatch.setenv("KMEDSSL_KERNELS", mode)
    monkeypatch.setattr(kernels, "_tensor_problem", lambda tensors, mode: None)
    monkeypatch.setattr(kernels, "_triton_import_problem", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free_gib * 2**30), 80 * 2**30))
    tensor = _torch_tensor(np.ones((2, 3)), device="cpu")
    assert kernels.use_triton(tensor, op="tsp_infonce", rows=8192, dim=512) is expected
    assert kernels.use_triton(tensor) is True  # no op named (the partition op): every CUDA call


@torch_only
@pytest.mark.parametrize("on_cuda, fits, path", [(True, True, "naive"), (True, False, "blocked"),
                                                 (False, True, "blocked")])
def test_without_a_block_size_cuda_rows_take_the_plain_matrices_when_they_fit(monkeypatch, on_cuda, fits, path):
    """Over ``AUTO_BLOCKED_ROWS`` rows the CPU default is the row-blocked path; on CUDA it is the naive one
    while its matrices fit (the blocked path is 15-60x slower there)."""
    from kmedssl.losses import blocked, contrastive

    monkeypatch.setattr(contrastive, "on_cuda", lambda *tensors: on_cuda)
    monkeypatch.setattr(contrastive, "naive_fits", lambda rows, device: fits)
    rows = _torch_tensor(np.zeros((blocked.AUTO_BLOCKED_ROWS + 1, 2)), device="cpu")
    chosen = contrastive._blocked_or_naive(rows, None, lambda: "naive", lambda block: "blocked")
    assert chosen == path


@torch_only
def test_fused_op_names_a_kmedssl_kernels_function():
    pytest.importorskip("triton")
    assert kernels.fused_op("tsp_infonce") is importlib.import_module("kmedssl_kernels.tsp_infonce").tsp_infonce
    partition = importlib.import_module("kmedssl_kernels.partition")
    assert kernels.fused_op("partition", "mae_masking") is partition.mae_masking


# === Routing of the losses ===


def _spy(monkeypatch, module, function):
    """Count the calls of ``kmedssl_kernels.<module>.<function>`` (what ``fused_op`` returns)."""
    target = importlib.import_module(f"kmedssl_kernels.{module}")
    original, calls = getattr(target, function), []

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, function, counted)
    return calls


def _value_and_grads(fn, arrays):
    import torch

    tensors = [_torch_tensor(a, requires_grad=True) for a in arrays]
    value = fn(*tensors)
    return value.detach().cpu().numpy(), [g.cpu().numpy() for g in torch.autograd.grad(value, tensors)]


def _compare_modes(monkeypatch, fn, arrays):
    """Value and gradients with KMEDSSL_KERNELS=triton equal those with KMEDSSL_KERNELS=off (float32)."""
    monkeypatch.setenv("KMEDSSL_KERNELS", "off")
    expected_value, expected_grads = _value_and_grads(fn, arrays)
    monkeypatch.setenv("KMEDSSL_KERNELS", "triton")
    value, grads = _value_and_grads(fn, arrays)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for grad, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


@torch_only
@pytest.mark.parametrize("batch, dim", [(3, 5), (7, 16)])
def test_tsp_infonce_routes_to_the_fused_op(monkeypatch, rng, batch, dim):
    pytest.importorskip("triton")
    calls = _spy(monkeypatch, "tsp_infonce", "tsp_infonce")
    z_1, z_2 = rng.normal(size=(2, batch, dim)).astype("float32")
    _compare_modes(monkeypatch, lambda a, b, s: tsp_infonce(a, b, kappa=4.0, scale=s), [z_1, z_2, np.float32(8.0)])
    _compare_modes(monkeypatch, lambda a, b: tsp_infonce(a, b, kappa=16.0, scale=1 / 0.07), [z_1, z_2])
    assert len(calls) == 2  # once per KMEDSSL_KERNELS=triton run; the float scale did not block the route


@torch_only
def test_tsp_infonce_with_a_tensor_kappa_takes_the_keras_path(monkeypatch, rng):
    pytest.importorskip("triton")
    calls = _spy(monkeypatch, "tsp_infonce", "tsp_infonce")
    monkeypatch.setenv("KMEDSSL_KERNELS", "triton")
    z_1, z_2 = (_torch_tensor(z) for z in rng.normal(size=(2, 3, 4)))
    tsp_infonce(z_1, z_2, kappa=_torch_tensor(4.0))
    assert calls == []


@torch_only
@pytest.mark.parametrize("batch, views, dim", [(3, 2, 5), (7, 3, 16)])
def test_jaccard_supcon_routes_to_the_fused_op(monkeypatch, rng, batch, views, dim):
    pytest.importorskip("triton")
    calls = _spy(monkeypatch, "jaccard_supcon", "jaccard_supcon")
    features = rng.normal(size=(batch, views, dim)).astype("float32")
    labels = _torch_tensor((rng.random((batch, 4)) < 0.5).astype("float32"))

    def loss(f):
        return jaccard_supcon(f, labels, temperature=0.1, threshold=0.3, base_temperature=0.07)

    _compare_modes(monkeypatch, loss, [features])
    assert len(calls) == 1
