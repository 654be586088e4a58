"""``kmedssl bench train``: the peak table and MFU arithmetic, the ViT-B/16 sizes, the precision axis, the
plain-PyTorch baseline (``benchmarks/plain_torch``: same losses, encoder and FLOPs as kmedssl; one tiny run of
both workers on CPU) and one-line argument errors."""

import csv
import dataclasses
import pathlib
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kmedssl.bench import train_step
from kmedssl.bench.phantom import STEP_SIZES, prepare_step, step_flops, step_recipe
from kmedssl.cli import main as cli
from kmedssl.training.precision import PRECISIONS

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
on_torch = pytest.mark.skipif(keras.backend.backend() != "torch", reason="plain PyTorch baseline: torch backend")


@pytest.fixture
def plain_torch(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import plain_torch.build

    return plain_torch


# === Peak table and MFU (no backend) ===


@pytest.mark.backend_free
def test_known_peak_matches_gpu_names_and_arithmetic():
    assert train_step.known_peak("NVIDIA H100 80GB HBM3", "bf16") == (989.4, "H100 SXM bf16 dense")
    assert train_step.known_peak("NVIDIA H100 80GB HBM3", "tf32") == (494.7, "H100 SXM tf32 dense")
    assert train_step.known_peak("NVIDIA H100 PCIe", "fp16") == (756.5, "H100 PCIe fp16 dense")
    assert train_step.known_peak("NVIDIA H200", "fp32")[0] == 66.9
    assert train_step.known_peak("NVIDIA A100-SXM4-80GB", "bf16")[0] == 312.0
    assert train_step.known_peak("NVIDIA L40S", "bf16")[1] == "L40S bf16 dense"
    assert train_step.known_peak("NVIDIA L4", "bf16")[1] == "L4 bf16 dense"
    assert train_step.known_peak("NVIDIA A10", "tf32")[1] == "A10 tf32 dense"
    assert train_step.known_peak("NVIDIA GeForce RTX 4090", "bf16") == (
        None, "no peak known for 'NVIDIA GeForce RTX 4090'")
    assert train_step.known_peak("", "fp32") == (None, "no GPU")


@pytest.mark.backend_free
def test_mfu_is_achieved_over_the_peak_of_the_step_arithmetic():
    row = dict(error="", achieved_gflops_per_s=395760.0, gpu="NVIDIA H100 80GB HBM3", matmul="bf16", device="cuda:0")
    train_step.add_efficiency(row)
    assert row["achieved_tflops_per_s"] == 395.76 and row["peak_tflops_per_s"] == 989.4
    assert row["mfu_percent"] == 40.0 and row["peak_source"] == "H100 SXM bf16 dense"
    fp32 = train_step.add_efficiency(dict(row, matmul="fp32", achieved_gflops_per_s=33450.0))
    assert fp32["mfu_percent"] == 50.0  # float32 without TF32: the CUDA cores' 66.9 TFLOP/s
    cpu = train_step.add_efficiency(dict(row, gpu="", device="cpu", achieved_gflops_per_s=20.0))
    assert cpu["achieved_tflops_per_s"] == 0.02 and cpu["mfu_percent"] == "" and cpu["peak_tflops_per_s"] == ""
    given = train_step.add_efficiency(dict(row, gpu="", device="cpu", achieved_gflops_per_s=20.0), peak_tflops=0.1)
    assert given["mfu_percent"] == 20.0 and given["peak_source"] == "--peak-tflops"
    assert train_step.efficiency_notes([cpu, row]) == [
        "MFU n/a on cpu: no GPU (pass --peak-tflops).",
        "MFU on NVIDIA H100 80GB HBM3: achieved / 989.4 TFLOP/s (H100 SXM bf16 dense)."]
    failed = train_step.add_efficiency(dict(error="timed out after 5 s"))
    assert "mfu_percent" not in failed


@pytest.mark.backend_free
def test_rows_print_mfu_and_the_ratio_to_plain_pytorch():
    base = dict(size="vit-b16", backend="torch", jit_compile="auto", precision="bf16", method="spcl", skipped="",
                error="", encoder="ViT base/16, 224 px", batch_size=128, first_step_s=1.0, images_per_s=1000.0,
                peak_mib=2000.0, forward_gflops_per_image=13.9, train_gflops_per_image=41.7,
                achieved_gflops_per_s=41700.0, mfu_percent="")
    plain = dict(base, impl="plain", step_ms=100.0)
    ours = train_step.add_ratio(dict(base, impl="kmedssl", step_ms=112.0), plain)
    assert ours["kmedssl_over_plain"] == 1.12
    assert train_step.format_row(ours).split()[-2:] == ["n/a", "1.12"]
    assert train_step.format_row(plain).split()[-1] == "-"
    assert train_step.add_ratio(dict(ours), dict(plain, error="boom"))["kmedssl_over_plain"] == ""
    assert train_step.add_ratio(dict(ours), None)["kmedssl_over_plain"] == ""
    assert "n/a: no plain" in train_step.format_row(dict(plain, skipped="no plain-PyTorch ace"))
    assert "FAILED: timed out" in train_step.format_row(dict(ours, error="timed out after 5 s"))
    # The paper-003 claims compare kmedssl rows of one precision, never the plain ones.
    rows = [dict(ours, method=m, images_per_s=s, impl=i) for m, s in (("spcl", 9), ("simclr", 2), ("mvmae", 4))
            for i in ("kmedssl", "plain")]
    (line,) = train_step.efficiency_claims(rows)
    assert line.startswith("Paper 003 claims at vit-b16/torch/jit auto/bf16:")


@pytest.mark.backend_free
def test_axes_follow_the_library():
    assert train_step.SIZES == STEP_SIZES
    assert train_step.PRECISIONS == tuple(PRECISIONS)


@pytest.mark.backend_free
@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp64"], "expected --precision from fp32, bf16, fp16"),
    (["--sizes", "vit-h14"], "expected --sizes from phantom, vit-s16, vit-b16, vit-b16-512"),
    (["--jit-compile", "yes"], "expected --jit-compile from auto, true, false"),
    (["--peak-tflops", "0"], "expected --peak-tflops > 0"),
    (["--timeout", "0"], "--timeout > 0"),
])
def test_argument_errors_are_one_line(argv, message):
    with pytest.raises(SystemExit, match=message) as raised:
        train_step.parse_args(argv)
    assert "\n" not in str(raised.value) and str(raised.value).startswith("Error: ")


@pytest.mark.backend_free
def test_plain_torch_is_found_by_the_import_system_of_a_source_checkout(monkeypatch):
    for name in [n for n in sys.modules if n == "plain_torch" or n.startswith("plain_torch.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(SystemExit, match="^Error: --plain-torch needs the plain_torch package, which is not "
                                         "installed with kmedssl") as raised:
        train_step.parse_args(["--plain-torch"])
    assert "\n" not in str(raised.value)
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as benchmarks/train_step.py runs
    assert train_step.plain_torch_folder() == BENCHMARKS


@pytest.mark.backend_free
def test_vit_b16_sizes_use_the_papers_method_settings():
    spcl = step_recipe("spcl", "vit-b16")
    assert (spcl.encoder_size, spcl.image_size, spcl.patch_size, spcl.batch_size) == ("base", 224, 16, 128)
    assert spcl.crop_scale == (1.0, 1.0) and spcl.jitter == 0.0
    mvmae = step_recipe("mvmae", "vit-b16", batch_size=64)
    assert (mvmae.mask_ratio, mvmae.alignment, mvmae.decoder_size, mvmae.batch_size) == (0.75, "tokens", "base", 64)
    large = step_recipe("spcl", "vit-b16-512")
    assert (large.encoder_size, large.image_size, large.batch_size) == ("base", 512, 64)
    assert step_recipe("ace", "vit-b16").head_dim == 65536


def test_bench_train_help_lists_the_new_options():
    result = CliRunner().invoke(cli, ["bench", "train", "--help"])
    assert result.exit_code == 0
    for option in ("--precision", "--plain-torch", "--peak-tflops", "--timeout", "vit-b16-512"):
        assert option in result.output


# === The plain-PyTorch baseline (torch backend) ===


@on_torch
def test_plain_losses_equal_kmedssl_losses(plain_torch, rng):
    import torch

    from kmedssl.losses import latent_alignment, mae_reconstruction, nt_xent, tsp_infonce
    from plain_torch import methods

    def same(plain, ours):
        np.testing.assert_allclose(float(plain), float(keras.ops.convert_to_numpy(ours)), rtol=1e-5, atol=1e-6)

    z_1, z_2 = (rng.normal(size=(6, 16)).astype("float32") for _ in range(2))
    t_1, t_2 = torch.from_numpy(z_1), torch.from_numpy(z_2)
    same(methods.tsp_infonce(t_1, t_2, 16.0, torch.tensor(7.0)), tsp_infonce(z_1, z_2, kappa=16.0, scale=7.0))
    same(methods.nt_xent(t_1, t_2, 0.1), nt_xent(z_1, z_2, 0.1))
    target, pred = (rng.normal(size=(3, 5, 12)).astype("float32") for _ in range(2))
    mask = (rng.random((3, 5)) < 0.5).astype("float32")
    for norm_pix in (False, True):
        same(methods.mae_reconstruction(*map(torch.from_numpy, (target, pred, mask)), norm_pix=norm_pix),
             mae_reconstruction(target, pred, mask, norm_pix=norm_pix))
    tokens_f, tokens_l = (rng.normal(size=(3, 5, 8)).astype("float32") for _ in range(2))
    for mode in ("tokens", "pooled"):
        same(methods.latent_alignment(torch.from_numpy(tokens_f), torch.from_numpy(tokens_l), mode),
             latent_alignment(tokens_f, tokens_l, mode=mode))


@on_torch
def test_plain_encoder_and_decoder_compute_kmedssl_s(plain_torch, rng):
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from torch_overhead import plain_decoder, plain_encoder
    finally:
        sys.path.remove(str(BENCHMARKS))
    from kmedssl.backbones import mae_decoder, vision_transformer

    vit = vision_transformer("phantom", image_size=16, patch_size=4, dim=8, depth=1, num_heads=2)
    images = rng.uniform(size=(2, 16, 16, 1)).astype("float32")
    ids = np.stack([rng.permutation(16)[:5] for _ in range(2)]).astype("int64")
    plain = plain_encoder(vit)
    with torch.no_grad():
        np.testing.assert_allclose(plain(torch.from_numpy(images), torch.from_numpy(ids)).numpy(),
                                   keras.ops.convert_to_numpy(vit(images, token_indices=ids)), atol=1e-5)
    decoder = mae_decoder("phantom", 16, vit.patch_dim, vit.dim, dim=4, depth=1, num_heads=1)
    tokens = rng.normal(size=(2, 6, 8)).astype("float32")
    restore = np.stack([rng.permutation(16) for _ in range(2)])
    with torch.no_grad():
        np.testing.assert_allclose(
            plain_decoder(decoder)(torch.from_numpy(tokens), torch.from_numpy(restore)).numpy(),
            keras.ops.convert_to_numpy(decoder(tokens, restore.astype("int32"))), atol=1e-5)


@on_torch
def test_plain_models_count_kmedssl_s_flops_and_train_in_each_precision(plain_torch):
    from kmedssl.backbones import vision_transformer
    from kmedssl.methods.simclr import SimCLR
    from kmedssl.recipes.registry import make_recipe

    build = plain_torch.build
    assert build.METHODS == train_step.PLAIN_METHODS
    for name in ("spcl", "mvmae"):
        recipe = dataclasses.replace(step_recipe(name, "phantom", batch_size=2), data_size=8)
        model, _, _, _ = prepare_step(recipe, seed=0)
        assert build.step_flops(recipe) == step_flops(recipe, model), name
    simclr = make_recipe("simclr", "phantom", encoder_size="phantom", image_size=16, patch_size=4)
    vit = vision_transformer("phantom", image_size=16, patch_size=4)
    assert build.step_flops(simclr) == step_flops(simclr, SimCLR(vit))
    assert build.unsupported("simclr", "phantom", step_recipe("simclr")).startswith("no plain-PyTorch simclr")
    assert build.unsupported("ace", "vit-b16") and build.unsupported("simclr", "vit-s16") is None

    batch = {"image": np.random.default_rng(0).uniform(size=(2, 16, 16, 1)).astype("float32")}
    for precision in ("fp32", "bf16"):
        trainer = build.trainer(simclr, "cpu", precision=precision)
        before = [p.detach().clone() for p in trainer.parameters]
        losses = [float(trainer.train_step(batch)) for _ in range(2)]
        assert np.isfinite(losses).all() and trainer.iterations == 2
        assert any(not np.array_equal(a.numpy(), b.detach().numpy()) for a, b in zip(before, trainer.parameters))


@on_torch
def test_step_batch_is_prepare_step_s_batch():
    recipe = dataclasses.replace(step_recipe("mvmae", "phantom", batch_size=2), data_size=8)
    _, x, _, _ = prepare_step(recipe, seed=0)
    batch = train_step.step_batch(recipe, seed=0)
    assert set(batch) == set(x) and all(np.array_equal(batch[k], x[k]) for k in x)


@on_torch
def test_bench_train_runs_kmedssl_and_plain_pytorch_in_bf16(plain_torch, tmp_path, capsys):
    path = tmp_path / "train.csv"
    train_step.main(["--methods", "spcl", "--sizes", "phantom", "--backends", "torch", "--precision", "bf16",
                     "--batch-size", "4", "--steps", "1", "--warmup", "1", "--threads", "1", "--plain-torch",
                     "--timeout", "300", "--csv", str(path)])
    plain, ours = list(csv.DictReader(path.open()))
    assert (plain["impl"], ours["impl"]) == ("plain", "kmedssl")
    for row in (plain, ours):
        assert row["precision"] == "bf16" and row["matmul"] == "bf16" and row["error"] == ""
        assert float(row["step_ms"]) > 0 and row["mfu_percent"] == "" and row["encoder"] == "ViT phantom/4, 64 px"
        assert float(row["achieved_tflops_per_s"]) > 0
    assert plain["train_gflops_per_image"] == ours["train_gflops_per_image"]
    assert float(ours["kmedssl_over_plain"]) == pytest.approx(float(ours["step_ms"]) / float(plain["step_ms"]),
                                                              rel=1e-2)
    assert "MFU n/a on cpu" in capsys.readouterr().out
