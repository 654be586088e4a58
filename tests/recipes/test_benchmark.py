"""The phantom benchmark: budget conversion, and the quick benchmark end to end on the active backend."""

import json
import math

import pytest

from kmedssl.recipes.benchmark import budget_schedule, phantom_benchmark


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
def test_rejects_unknown_methods_and_protocols(tmp_path):
    with pytest.raises(ValueError, match="methods from"):
        phantom_benchmark(methods=("supervised",), output_dir=tmp_path / "a", quick=True)
    with pytest.raises(ValueError, match="protocols from"):
        phantom_benchmark(protocols=("knn",), output_dir=tmp_path / "b", quick=True)


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_csv_and_figures(tmp_path):
    lines = []
    result = phantom_benchmark(output_dir=tmp_path, quick=True, log=lines.append)
    names = [row["method"] for row in result["rows"]]
    assert names == ["scratch (ViT phantom/8, 64 px)", "supervised", "mvcon", "mvmae"]
    assert len(result["columns"]) == 3 * 2 * 1  # views x protocols x budgets
    for row in result["rows"]:
        for view in ("frontal", "lateral", "ensemble"):
            for protocol in ("linear", "finetune"):
                assert math.isfinite(row["auroc"][view][protocol]["20%"]), (row["method"], view, protocol)
                assert 0.0 <= row["auroc"][view][protocol]["20%"] <= 1.0
    written = json.loads((tmp_path / "phantom_benchmark.json").read_text())
    assert written["columns"] == result["columns"] and written["timings"]["total_seconds"] > 0
    markdown = (tmp_path / "phantom_benchmark.md").read_text()
    assert all(f"| {name} |" in markdown for name in names) and markdown in lines
    csv_lines = (tmp_path / "phantom_benchmark.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(names) and "ensemble finetune 20%" in csv_lines[0]
    for protocol in ("linear", "finetune"):
        for view in ("frontal", "lateral", "ensemble"):
            assert (tmp_path / f"auroc_vs_budget_{protocol}_{view}.png").stat().st_size > 0
