"""Run directories lose nothing and never crash (issue 13, part A): what ``--overwrite`` may delete, resuming
a run whose directory creation was interrupted, settings checked before a run directory exists, a resume on
another backend, and spreadsheet formulas in CSV reports.

Every refusal is one ``Error:`` line naming the folder or setting, with nothing deleted or changed. Only one
backend is needed: the rules are the same on every backend.
"""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
from PIL import Image

from kmedssl import recipes
from kmedssl.training import runs
from kmedssl.recipes.base import field_limits, numeric_kind
from kmedssl.bench.phantom import BENCHMARK_LAYOUT, phantom_benchmark
from kmedssl.recipes.registry import RECIPES, SIZES, make_recipe
from tests.reliability.harness import assert_one_line_error, assert_unchanged, invoke, snapshot

pytestmark = pytest.mark.backend_free

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--image-size", "32",
        "--set", "patch_size=8", "--set", "data_size=40"]


def fake_run(run_dir):
    """The recipe and environment of a tiny S-PCL run (``TINY``), as ``pretrain`` writes them before training."""
    run_dir.mkdir(parents=True)
    recipe = make_recipe("spcl", "phantom", epochs=1, steps_per_epoch=2, batch_size=4, image_size=32, patch_size=8,
                         data_size=40)
    runs.write_recipe(run_dir, recipe, seed=0)
    runs.write_environment(run_dir, 0, data="phantom", format=None, on_error="raise")
    return run_dir


def user_folder(folder):
    folder.mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    return folder


def half_created(run_dir, leftovers):
    """What a run killed while creating ``run_dir`` leaves: temporary files and maybe ``recipe.toml``."""
    run_dir.mkdir()
    for name in leftovers:
        if name == runs.RECIPE_FILE:
            runs.write_recipe(run_dir, make_recipe("spcl", "phantom", image_size=32, patch_size=8), seed=0)
        else:
            (run_dir / name).write_text("cut short")
    return run_dir


def assert_finished_new_run(exit_code, output, run_dir):
    assert exit_code == 0, output
    assert "Resumed" not in output and f"Run written to {run_dir}" in output
    assert (run_dir / runs.ENCODER_FILE).is_file() and (run_dir / runs.ENVIRONMENT_FILE).is_file()
    assert "resumes" not in json.loads((run_dir / runs.ENVIRONMENT_FILE).read_text())
    assert not [path.name for path in run_dir.iterdir() if runs.temporary_target(path.name)]


# === What --overwrite may delete ===


def test_overwrite_refuses_a_folder_holding_a_user_file(tmp_path):
    plain = user_folder(tmp_path / "u")
    run_and_more = fake_run(tmp_path / "run")
    (run_and_more / "thesis.txt").write_text("kept beside a run")
    before = snapshot(tmp_path)
    for folder in (plain, run_and_more):
        assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--output", folder, "--overwrite"),
                              f"refusing to --overwrite {folder}: it is not a kmedssl run directory (it holds "
                              f"thesis.txt)")
    assert_unchanged(tmp_path, before)


def test_overwrite_refuses_a_recipe_toml_that_kmedssl_did_not_write(tmp_path):
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / runs.RECIPE_FILE).write_text('method = "spcl"\n')
    before = snapshot(tmp_path)
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--output", folder, "--overwrite"),
                          f"refusing to --overwrite {folder}", "it has no recipe.toml written by kmedssl")
    assert_unchanged(tmp_path, before)


def test_overwrite_refuses_the_current_directory_and_its_parents(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "0.png").write_bytes(b"an image")
    (project / "notes.txt").write_text("notes")
    run = fake_run(tmp_path / "run")
    (run / runs.REPORTS_DIR).mkdir()
    before = snapshot(tmp_path)
    monkeypatch.chdir(project)
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--data", "data", "--output", ".", "--overwrite"),
                          "refusing to --overwrite .: it is the current directory")
    monkeypatch.chdir(run)  # a kmedssl run directory, but the shell stands in it
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--output", ".", "--overwrite"),
                          "refusing to --overwrite .: it is the current directory")
    monkeypatch.chdir(run / runs.REPORTS_DIR)
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--output", "..", "--overwrite"),
                          "refusing to --overwrite ..: it holds the current directory")
    assert_unchanged(tmp_path, before)


def test_overwrite_refuses_a_folder_holding_the_data(tmp_path):
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    (project / "data" / "0.png").write_bytes(b"an image")
    run = fake_run(tmp_path / "run")  # data kept in a run's reports/: only the data rule protects it
    (run / runs.REPORTS_DIR / "images").mkdir(parents=True)
    (run / runs.REPORTS_DIR / "images" / "0.png").write_bytes(b"an image")
    before = snapshot(tmp_path)
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--data", project / "data", "--output", project,
                                  "--overwrite"),
                          f"refusing to --overwrite {project}: it holds the data (--data {project / 'data'})")
    data = run / runs.REPORTS_DIR / "images"
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--data", data, "--format", "folder", "--output", run,
                                  "--overwrite"),
                          f"refusing to --overwrite {run}: it holds the data (--data {data})")
    with pytest.raises(FileExistsError, match="it holds the data"):
        recipes.pretrain("spcl", data=str(data), output_dir=run, overwrite=True, verbose=0)
    assert_unchanged(tmp_path, before)


def test_overwrite_replaces_a_run_directory(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / runs.CHECKPOINT_DIR).mkdir()
    (run / runs.CHECKPOINT_DIR / "step-00000009.npz").write_bytes(b"an old checkpoint")
    (run / runs.REPORTS_DIR).mkdir()
    (run / runs.REPORTS_DIR / "linear_probe.json").write_text("{}")
    (run / runs.LOG_FILE).write_text("epoch,step,loss\n1,9,0.5\n")
    (run / ".training_log.csv.tmp-77").write_text("torn")
    exit_code, output = invoke("pretrain", "spcl", *TINY, "--seed", "1", "--output", run, "--overwrite")
    assert_finished_new_run(exit_code, output, run)
    assert "seed = 1" in (run / runs.RECIPE_FILE).read_text()
    assert sorted(path.name for path in (run / runs.CHECKPOINT_DIR).iterdir()) == ["step-00000002.npz"]
    assert sorted(path.name for path in (run / runs.REPORTS_DIR).iterdir()) == ["training_curves.png"]
    assert not (run / ".training_log.csv.tmp-77").exists()


@pytest.mark.parametrize("leftovers", [[".recipe.toml.tmp-123"], [runs.RECIPE_FILE, ".environment.json.tmp-9"]])
def test_overwrite_replaces_a_half_created_run_directory(leftovers, tmp_path):
    run = half_created(tmp_path / "run", leftovers)
    assert_finished_new_run(*invoke("pretrain", "spcl", *TINY, "--output", run, "--overwrite"), run)


def test_benchmark_overwrite_deletes_only_a_benchmark_output(tmp_path):
    folder = user_folder(tmp_path / "u")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=f"refusing to --overwrite {folder}: it is not a kmedssl benchmark "
                                              f"directory \\(it holds thesis.txt\\)"):
        phantom_benchmark(output_dir=folder, quick=True, overwrite=True)
    assert_unchanged(tmp_path, before)

    bench = tmp_path / "bench"
    (bench / "pretrain" / "mvcon").mkdir(parents=True)
    (bench / "evaluations").mkdir()
    runs.atomic_write(bench / BENCHMARK_LAYOUT.marker, BENCHMARK_LAYOUT.header + "\n")
    for name in ("phantom_benchmark.json", "auroc_vs_budget_linear_frontal.png"):
        (bench / name).write_text("x")
    assert len(runs.check_overwrite(bench, layout=BENCHMARK_LAYOUT)) == 5
    with pytest.raises(FileExistsError, match="it is not a kmedssl run directory"):
        runs.check_overwrite(bench)  # a benchmark output is not a run directory
    with pytest.raises(FileExistsError, match="it has no kmedssl-benchmark.txt written by kmedssl"):
        runs.check_overwrite(bench / "evaluations", layout=BENCHMARK_LAYOUT)


# === A run interrupted while its directory is created ===


@pytest.mark.parametrize("leftovers", [[".recipe.toml.tmp-123"], [runs.RECIPE_FILE],
                                       [runs.RECIPE_FILE, ".environment.json.tmp-9"]])
def test_resume_restarts_a_run_whose_directory_creation_was_interrupted(leftovers, tmp_path):
    run = half_created(tmp_path / "run", leftovers)
    assert_finished_new_run(*invoke("pretrain", "spcl", *TINY, "--output", run, "--resume"), run)
    assert "epochs = 1" in (run / runs.RECIPE_FILE).read_text()  # this command's recipe, not the leftover's


def test_an_interrupted_creation_counts_as_an_empty_folder(tmp_path):
    run = half_created(tmp_path / "run", [runs.RECIPE_FILE, ".environment.json.tmp-9"])
    assert_finished_new_run(*invoke("pretrain", "spcl", *TINY, "--output", run), run)


def test_resume_still_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = user_folder(tmp_path / "u")
    (folder / ".recipe.toml.tmp-123").write_text("cut short")
    before = snapshot(tmp_path)
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--output", folder, "--resume"),
                          f"{folder} is not a kmedssl run directory, so there is nothing to resume")
    assert_unchanged(tmp_path, before)


# === Settings checked before a run directory exists ===

BAD_SETTINGS = [
    ("learning_rate=nan", "Expected learning_rate to be a finite number > 0. Received: learning_rate=nan"),
    ("learning_rate=inf", "Expected learning_rate to be a finite number > 0. Received: learning_rate=inf"),
    ("learning_rate=-1", "Expected learning_rate to be a finite number > 0. Received: learning_rate=-1.0"),
    ("weight_decay=nan", "Expected weight_decay to be a finite number >= 0. Received: weight_decay=nan"),
    ("scale_init=nan", "Expected scale_init to be a finite number > 0. Received: scale_init=nan"),
    ("gradient_clip=-1", "Expected gradient_clip to be a finite number >= 0. Received: gradient_clip=-1.0"),
    ("warmup_epochs=-5", "Expected warmup_epochs to be an integer >= 0. Received: warmup_epochs=-5"),
    ("workers=-1", "Expected workers to be an integer >= 1. Received: workers=-1"),
    ("mask_ratio=1", "Expected mask_ratio to be a finite number in [0, 1). Received: mask_ratio=1.0"),
    ("kappa=-inf", "Expected kappa to be a finite number > 0. Received: kappa=-inf"),
]


@pytest.mark.parametrize("setting, message", BAD_SETTINGS)
def test_bad_settings_are_refused_before_the_run_directory_exists(setting, message, tmp_path):
    run = tmp_path / "run"
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--set", setting, "--output", run), message)
    assert not run.exists()


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_every_numeric_field_has_a_range_that_is_checked_and_the_defaults_pass(method):
    for size in SIZES:
        make_recipe(method, size)
    kinds = {field.name: numeric_kind(field.type)[0] for field in dataclasses.fields(RECIPES[method])}
    numeric = {name: kind for name, kind in kinds.items() if kind is not None}
    assert set(numeric) <= set(field_limits(RECIPES[method])), "a numeric field without a declared range"
    for name, kind in numeric.items():
        bad = {int: -1, float: math.nan, tuple: (math.nan, 1.0)}[kind]
        with pytest.raises(ValueError, match=f"Expected {name} to be .*Received: {name}="):
            make_recipe(method, **{name: bad})


# === Resume on another backend ===


def test_resume_with_another_backend_is_refused(tmp_path):
    run = fake_run(tmp_path / "run")
    environment = json.loads((run / runs.ENVIRONMENT_FILE).read_text())
    other = "jax" if keras.backend.backend() != "jax" else "torch"
    environment["backend"] = other
    (run / runs.ENVIRONMENT_FILE).write_text(json.dumps(environment))
    before = snapshot(tmp_path)
    assert_one_line_error(*invoke("pretrain", "spcl", *TINY, "--output", run, "--resume"),
                          f"Expected the settings of the run being resumed in {run}. Received: "
                          f"backend='{keras.backend.backend()}' (the run has '{other}')")
    assert_unchanged(tmp_path, before)


# === Spreadsheet formulas in CSV reports ===


def test_spreadsheet_safe_quotes_formulas_and_keeps_numbers():
    for text in ("=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "=HYPERLINK(\"x\")", "-", "+"):
        assert runs.spreadsheet_safe(text) == "'" + text
    for cell in ("a.png", "", "-0.5", "-1", "+2", "-inf", "nan", "1e-05", -0.5, 3, math.nan, None, "data/=1.png"):
        assert runs.spreadsheet_safe(cell) is cell
    assert runs.spreadsheet_safe(" -1") == " -1" and runs.spreadsheet_safe("-1 ") == "'-1 "


def test_log_numbers_stay_numbers_and_text_is_quoted(tmp_path):
    runs.write_log(tmp_path, [{"epoch": 1, "step": 2, "loss": -0.5, "=cmd": "@x"}])
    assert (tmp_path / runs.LOG_FILE).read_text() == "epoch,step,'=cmd,loss\n1,2,'@x,-0.5\n"


def test_a_formula_file_name_is_quoted_in_data_skipped(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    rows = ["path,split,label_a"]
    for i in range(3):
        Image.fromarray(np.full((32, 32), 60 * i, np.uint8)).save(data / f"{i}.png")
        rows.append(f"{i}.png,train,{i % 2}")
    (data / "=1+1.png").write_bytes(b"not an image")  # corrupt: skipped when the batch is loaded
    rows.append("=1+1.png,train,1")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(data)  # so that the skipped file is named "=1+1.png"
    run = tmp_path / "run"
    exit_code, output = invoke("pretrain", "spcl", "--data", "labels.csv", "--format", "folder", "--on-error",
                               "skip", "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--set",
                               "patch_size=8", "--output", run)
    assert exit_code == 0, output
    lines = (run / runs.SKIPPED_FILE).read_text().splitlines()
    assert lines[0] == "file,problem" and len(lines) == 2
    assert lines[1].startswith("'=1+1.png,'=1+1.png: ")
