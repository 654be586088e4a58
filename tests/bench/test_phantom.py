"""The phantom benchmark (budget conversion, each protocol's cells and the verdict, the quick benchmark end to
end on the active backend, the command's options) and the training-step measurement of ``kmedssl bench train``
(recipes, analytic FLOPs per method, timed steps)."""

import csv
import json
import math
import pathlib
import re
import tomllib

import keras
import pytest
from click.testing import CliRunner

from kmedssl.backbones import mae_decoder, vision_transformer
from kmedssl.backbones.flops import decoder_flops, encoder_flops
from kmedssl.methods.ace import ACE
from kmedssl.methods.mvcon import MVCon
from kmedssl.methods.mvmae import MVMAE
from kmedssl.methods.simclr import SimCLR
from kmedssl.methods.spcl import SPCL
from kmedssl.bench.phantom import (
    CSV_COLUMNS,
    above_scratch,
    budget_schedule,
    column_name,
    evaluation_plan,
    phantom_benchmark,
    plan_cells,
    prepare_step,
    run_steps,
    step_flops,
    step_recipe,
    verdict_header,
)
from kmedssl.bench.train_step import efficiency_claims
from kmedssl.cli import main
from kmedssl.eval.evaluate import VIEWS
from kmedssl.recipes.registry import make_recipe


@pytest.mark.backend_free
def test_budget_schedule_spends_the_budget_in_whole_epochs():
    assert budget_schedule(0.5, 60.0, 40) == (3, 40)  # 120 steps of one 40-step pass
    assert budget_schedule(0.5, 60.0, 500) == (1, 120)  # less than a pass: one shorter epoch
    assert budget_schedule(2.0, 1.0, 10) == (1, 1)  # at least one step
    epochs, steps = budget_schedule(0.3, 120.0, 37)
    assert abs(epochs * steps - 400) <= steps / 2
    with pytest.raises(ValueError, match="step_seconds > 0"):
        budget_schedule(0.0, 60.0, 10)


@pytest.mark.backend_free
def test_rejects_unknown_methods_protocols_budgets_and_views(tmp_path):
    with pytest.raises(ValueError, match="methods from"):
        phantom_benchmark(methods=("supervised",), output_dir=tmp_path / "a", quick=True)
    with pytest.raises(ValueError, match="protocols from"):
        phantom_benchmark(protocols=("knn",), output_dir=tmp_path / "b", quick=True)
    with pytest.raises(ValueError, match="positive finetune label budgets"):
        phantom_benchmark(finetune_budgets=(), output_dir=tmp_path / "c", quick=True)
    with pytest.raises(ValueError, match="finetune views from"):
        phantom_benchmark(finetune_views=("axial",), output_dir=tmp_path / "d", quick=True)


@pytest.mark.backend_free
def test_each_protocol_has_its_own_cells_and_the_verdict_judges_the_frontal_ones():
    plan = evaluation_plan(("linear", "finetune"), (0.1, 1.0), (0.1,), ("frontal",))
    assert plan == {"linear": ((0.1, 1.0), VIEWS), "finetune": ((0.1,), ("frontal",))}
    cells = plan_cells(plan)
    assert [column_name(*cell) for cell in cells] == [
        "frontal linear 10%", "frontal linear 100%", "frontal finetune 10%", "lateral linear 10%",
        "lateral linear 100%", "ensemble linear 10%", "ensemble linear 100%"]
    assert verdict_header(cells) == "above scratch (CI > 0; frontal: linear 10%, 100%; finetune 10%)"
    assert evaluation_plan(("linear",), (0.2,), (), ()) == {"linear": ((0.2,), VIEWS)}  # finetune unused

    def row(*lows):
        cell = lambda low: {"10%": {"low": low}}
        return {"kind": "ssl", "difference": {"frontal": {"finetune": cell(lows[0]), "linear": cell(lows[1])}}}

    cells = plan_cells(evaluation_plan(("linear", "finetune"), (0.1,), (0.1,), ("frontal", "lateral")))
    assert above_scratch(row(0.01, 0.002), cells) == "yes: 2/2 cells with the paired 95 % CI above 0"
    assert above_scratch(row(0.01, -0.001), cells) == "no: 1/2 cells with the paired 95 % CI above 0"
    assert above_scratch(row(None, 0.0), cells) == "no: 0/2 cells with the paired 95 % CI above 0"
    assert above_scratch({"kind": "scratch"}, cells) == ""


@pytest.mark.backend_free
def test_bench_phantom_help_lists_the_per_protocol_options():
    result = CliRunner().invoke(main, ["bench", "phantom", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--linear-labels", "--finetune-labels", "--finetune-views", "--test-size", "--protocols",
                   "--budget-minutes", "--quick"):
        assert option in result.output
    assert "--labels " not in result.output
    invalid = CliRunner().invoke(main, ["bench", "phantom", "--test-size", "0"])
    assert invalid.exit_code == 2 and "--test-size" in invalid.output


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick benchmark for the module: ``(result, output directory, log lines, progress calls)``."""
    out = tmp_path_factory.mktemp("bench")
    lines, calls = [], []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KMEDSSL_CACHE", str(out / "cache"))  # the phantom test cohort's images
        result = phantom_benchmark(output_dir=out / "out", quick=True, data_seed=3, log=lines.append,
                                   progress=lambda *call: calls.append(call))
    return result, out / "out", lines, calls


@pytest.mark.slow
def test_quick_benchmark_evaluates_each_protocol_in_its_own_cells(quick_run):
    result, _, lines, calls = quick_run
    names = [row["method"] for row in result["rows"]]
    assert names == ["scratch (ViT phantom/8, 64 px)", "supervised", "mvcon", "mvmae"]
    assert result["columns"] == ["frontal linear 20%", "frontal finetune 20%", "lateral linear 20%",
                                 "ensemble linear 20%"]
    assert result["config"]["evaluations"] == {"linear": {"label_budgets": [0.2], "views": list(VIEWS)},
                                               "finetune": {"label_budgets": [0.2], "views": ["frontal"]}}
    assert result["config"]["test_size"] == 100 and result["config"]["test_cohort"]["n_studies"] == 100
    for row in result["rows"]:
        assert {view: list(per_protocol) for view, per_protocol in row["auroc"].items()} == {
            "frontal": ["linear", "finetune"], "lateral": ["linear"], "ensemble": ["linear"]}
        assert list(row["auroc"]["frontal"]["finetune"]) == ["20%"]
        for column in result["columns"]:
            view, protocol, _ = column.split()
            auroc, ci = row["auroc"][view][protocol]["20%"], row["auroc_ci"][view][protocol]["20%"]
            assert math.isfinite(auroc), (row["method"], column)
            assert 0.0 <= ci["low"] <= ci["high"] <= 1.0
            assert ci["estimate"] == pytest.approx(auroc)
            if row["kind"] != "scratch":  # paired with the scratch row of its encoder
                difference = row["difference"][view][protocol]["20%"]
                scratch = result["rows"][0]["auroc"][view][protocol]["20%"]
                assert difference["estimate"] == pytest.approx(auroc - scratch)
                assert difference["low"] <= difference["high"]
                assert 0.0 < difference["p_value"] <= 1.0
        if row["kind"] != "scratch":
            assert set(row["difference"]) == set(row["auroc"]) and "finetune" not in row["difference"]["lateral"]
    assert re.fullmatch(r"(yes|no): [0-2]/2 cells with the paired 95 % CI above 0", result["rows"][2]["above_scratch"])
    assert result["rows"][0]["above_scratch"] == ""
    assert result["config"]["data_seed"] == 3
    for row in result["rows"]:  # every run, scratch included, on the phantom cohort of data_seed
        assert tomllib.loads((pathlib.Path(row["run_dir"]) / "recipe.toml").read_text())["data_seed"] == 3, row
    assert any(line.startswith("[mvcon] epoch 1/1: ") and "loss" in line for line in lines)
    total = calls[0][1]  # 3 pretrainings + 4 rows x 2 evaluate calls, then evaluate's own steps in between
    assert total == 3 + 4 * 2 and all(t == total for _, t, _ in calls) and calls[-1] == (total, total, "done")
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)
    assert any(what.startswith("[mvmae] finetune 20% (frontal) ") for _, _, what in calls)


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_csv_and_figures(quick_run):
    result, out, lines, _ = quick_run
    names = [row["method"] for row in result["rows"]]
    written = json.loads((out / "phantom_benchmark.json").read_text())
    assert written["columns"] == result["columns"] and written["timings"]["total_seconds"] > 0
    markdown = (out / "phantom_benchmark.md").read_text()
    assert all(f"| {name} |" in markdown for name in names) and markdown in lines
    assert "| above scratch (CI > 0; frontal: linear 20%; finetune 20%) |" in markdown
    assert "## Paired difference with scratch" in markdown and "], p = " in markdown
    assert "finetune at 20% (frontal)" in markdown
    rows = list(csv.DictReader((out / "phantom_benchmark.csv").read_text().splitlines()))
    assert len(rows) == len(names) * 4 and list(rows[0]) == list(CSV_COLUMNS)
    assert {(r["view"], r["protocol"]) for r in rows if r["protocol"] == "finetune"} == {("frontal", "finetune")}
    mvcon = next(r for r in rows if (r["method"], r["view"], r["protocol"]) == ("mvcon", "frontal", "finetune"))
    assert mvcon["labels"] == "20%" and mvcon["baseline"] == names[0]
    assert float(mvcon["low"]) <= float(mvcon["macro_auroc"]) <= float(mvcon["high"])
    assert float(mvcon["difference_low"]) <= float(mvcon["difference"]) <= float(mvcon["difference_high"])
    assert 0 < float(mvcon["p_value"]) <= 1 and rows[0]["p_value"] == ""  # the scratch row has no difference
    figures = sorted(path.name for path in out.glob("auroc_vs_budget_*.png"))
    assert figures == ["auroc_vs_budget_finetune_frontal.png", "auroc_vs_budget_linear_ensemble.png",
                       "auroc_vs_budget_linear_frontal.png", "auroc_vs_budget_linear_lateral.png"]
    assert all((out / name).stat().st_size > 0 for name in figures)


# === Training-step measurement (kmedssl bench train) ===


def _tiny_vit():  # 16 x 16 px, 4 px patches: 16 patches
    return vision_transformer("phantom", image_size=16, patch_size=4, dim=8, depth=1, num_heads=2)


@pytest.mark.backend_free
def test_step_recipe_sizes():
    mvmae = step_recipe("mvmae", "vit-s16")
    assert (mvmae.encoder_size, mvmae.image_size, mvmae.patch_size, mvmae.batch_size) == ("small", 224, 16, 16)
    assert mvmae.decoder_size == "base" and step_recipe("ace", "vit-s16").head_dim == 65536
    assert step_recipe("simclr", "vit-s16", batch_size=32).batch_size == 32
    assert step_recipe("spcl", "phantom", batch_size=8) == make_recipe("spcl", "phantom", batch_size=8)
    assert step_recipe("mvcon").method_class.images_per_sample == 2
    assert step_recipe("spcl").method_class.images_per_sample == 1
    with pytest.raises(ValueError, match="size in"):
        step_recipe("spcl", "vit-h14")


def test_step_flops_count_the_encoder_work_of_each_method():
    vit = _tiny_vit()
    one = encoder_flops(vit)  # the whole image, 16 patches
    # S-PCL, mask 0.6: int(16 * 0.6) = 9 masked, 7 visible -> parts of 3 and 4 patches.
    spcl = step_flops(make_recipe("spcl"), SPCL(vit, mask_ratio=0.6))
    part = encoder_flops(vit, 3) + encoder_flops(vit, 4)
    assert spcl == (part, 3 * part)
    # MVMAE, mask 0.75: 4 kept patches per view, then the decoder.
    decoder = mae_decoder("phantom", 16, vit.patch_dim, vit.dim, dim=4, depth=1, num_heads=1)
    mae = encoder_flops(vit, 4) + decoder_flops(decoder, 4)
    assert step_flops(make_recipe("mvmae"), MVMAE(vit, decoder, mask_ratio=0.75)) == (mae, 3 * mae)
    # ACE: student and EMA teacher on both crops; only the student trains.
    ace = ACE(vit, total_steps=2, head_dim=8, head_hidden_dim=8, head_bottleneck_dim=4)
    assert step_flops(make_recipe("ace"), ace) == (4 * one, 6 * one + 2 * one)
    # SimCLR: two crops through the encoder; MVCon: one whole image per view.
    assert step_flops(make_recipe("simclr"), SimCLR(vit)) == (2 * one, 6 * one)
    assert step_flops(make_recipe("mvcon"), MVCon(vit)) == (one, 3 * one)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.utils.flop_counter needs the torch backend")
def test_step_flops_match_torch_flop_counter_of_the_forward(rng):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    def counted(model, inputs):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(inputs, training=True)
        return counter.get_total_flops()

    vit, batch = _tiny_vit(), 3
    image = rng.uniform(size=(batch, 16, 16, 1)).astype("float32")
    pair = {"frontal": image, "lateral": image[::-1].copy()}
    decoder = mae_decoder("phantom", 16, vit.patch_dim, vit.dim, dim=4, depth=1, num_heads=1)
    for name, model, inputs in (("spcl", SPCL(vit), {"image": image}), ("mvcon", MVCon(vit), pair),
                                ("mvmae", MVMAE(vit, decoder), pair)):
        recipe = make_recipe(name)
        forward, _ = step_flops(recipe, model)
        assert counted(model, inputs) == batch * model.images_per_sample * forward, name


def test_prepare_and_run_steps_on_a_real_batch():
    recipe = make_recipe("spcl", batch_size=2, data_size=8, image_size=16, patch_size=4)
    jit = keras.backend.backend() == "jax"  # explicit, and fast on each backend (eager JAX is slow)
    model, x, y, steps_per_pass = prepare_step(recipe, seed=0, encoder=_tiny_vit(), jit_compile=jit)
    assert y is None and tuple(x["image"].shape) == (2, 16, 16, 1) and steps_per_pass >= 1
    assert model.jit_compile is jit
    times = run_steps(model, x, y, 2)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2


@pytest.mark.backend_free
def test_step_benchmark_reports_paper_003_claims_and_by_how_much_they_fail():
    row = dict(size="vit-s16", backend="torch", jit_compile="auto", error="")
    rows = [dict(row, method="spcl", images_per_s=8.0, forward_gflops_per_image=3.5),
            dict(row, method="simclr", images_per_s=2.0, forward_gflops_per_image=18.2),
            dict(row, method="mvmae", images_per_s=4.0, forward_gflops_per_image=12.8)]
    (line,) = efficiency_claims(rows)
    assert "spcl 8.00 vs simclr 2.00 img/s: holds" in line
    assert "FAILS (simclr at 0.50x of mvmae)" in line
    assert "is the lowest" in line
    rows[0]["forward_gflops_per_image"] = 25.6
    assert "NOT the lowest (mvmae: 12.800, 2.00x)" in efficiency_claims(rows)[0]
    assert efficiency_claims(rows[:2]) == []
