"""The ``kmedssl`` command: help, errors as one line (SPEC §7), a real pretrain + evaluate on the phantom."""

import json
import zipfile

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kmedssl.cli import main
from kmedssl.data.pipeline import ViewDataset
from kmedssl.eval.intervals import format_interval
from kmedssl.methods.spcl import SPCL
from kmedssl.training import checkpoints, runs
from kmedssl.recipes.registry import make_recipe

TINY_SPCL = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "4", "--image-size", "32",
             "--set", "patch_size=8", "--set", "data_size=40"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, message):
    """A user mistake: exit code 1 or 2, no traceback, the last line starting with ``message``."""
    assert result.exit_code in (1, 2) and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(message), result.output
    assert "Traceback" not in result.output


def fake_run(run_dir):
    """The recipe and environment files of a tiny S-PCL run (``TINY_SPCL``), as written before training."""
    run_dir.mkdir()
    recipe = make_recipe("spcl", "phantom", epochs=1, steps_per_epoch=3, batch_size=4, image_size=32, patch_size=8,
                         data_size=40)
    runs.write_recipe(run_dir, recipe, seed=0)
    runs.write_environment(run_dir, 0, data="phantom", format=None, on_error="raise")
    return run_dir


def test_help_has_examples():
    for command in ([], ["pretrain"], ["evaluate"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "nope"], "Error: Expected a method name in"),
        (["pretrain", "spcl", "--format", "nope"], "Error: Invalid value for '--format'"),
        (["pretrain", "spcl", "--data", "/no/such/path"], "Error: /no/such/path: no such file or directory"),
        (["pretrain", "spcl", "--image-size", "30"], "Error: Expected image_size divisible by patch_size"),
        (["pretrain", "spcl", "--batch-size", "1"], "Error: Expected batch_size >= 2 for spcl"),
        (["pretrain", "spcl", "--set", "kappa=abc"], "Error: Expected kappa to be of type float"),
        (["pretrain", "spcl", "--set", "unknown=1"], "Error: Unknown recipe field(s) ['unknown']"),
        (["pretrain", "spcl", "--set", "on_nonfinite=ignore"], "Error: Expected on_nonfinite in ('stop', 'skip')"),
        (["pretrain", "spcl", "--set", "data=x"], "Error: Invalid value for --set: data has its own option"),
        (["pretrain", "spcl", "--resume"], "Error: Expected output_dir (--output) naming the run to resume"),
        (["evaluate", "/no/such/run"], "Error: Expected a run directory or an ENCODER.keras file"),
        (["evaluate", "/no/such/run", "--task", "landmarks", "--fit-seed", "1"],
         "Error: Invalid value for --fit-seed: applies to --task classification"),
    ],
)
def test_user_mistakes_are_one_line_without_traceback(args, message):
    assert_one_line_error(CliRunner().invoke(main, args), message)


def test_debug_shows_the_traceback():
    result = CliRunner().invoke(main, ["pretrain", "nope", "--debug"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_labels_that_do_not_match_the_images(tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "img" / "0.png")
    (data / "labels.csv").write_text("path,label_a\nimg/0.png,1\nimg/1.png,0\n")
    result = CliRunner().invoke(main, ["pretrain", "spcl", "--data", str(data), "--format", "folder",
                                       "--output", str(tmp_path / "run")])
    assert_one_line_error(result, f"Error: {data / 'labels.csv'}")
    assert "img/1.png" in result.output and not (tmp_path / "run").exists()


def test_run_directory_mistakes(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["pretrain", "spcl", "--output", str(occupied)])
    assert_one_line_error(result, f"Error: Run directory {occupied} already exists and is not empty. Continue it "
                                  f"with --resume")
    assert (occupied / "notes.txt").read_text() == "keep me"
    run = fake_run(tmp_path / "run")
    result = CliRunner().invoke(main, ["pretrain", "spcl", *TINY_SPCL, "--output", str(run), "--resume",
                                       "--overwrite"])
    assert_one_line_error(result, "Error: Expected at most one of --resume (resume=True) and --overwrite")
    result = CliRunner().invoke(main, ["pretrain", "spcl", *TINY_SPCL, "--epochs", "2", "--output", str(run),
                                       "--resume"])
    assert_one_line_error(result, f"Error: Expected the settings of the run being resumed in {run}. Received: "
                                  f"epochs=2 (the run has 1)")


def test_a_truncated_checkpoint_stops_resume_with_one_line(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step-00000002.npz").write_bytes(b"PK\x03\x04 cut short")
    result = CliRunner().invoke(main, ["pretrain", "spcl", *TINY_SPCL, "--output", str(run), "--resume"])
    assert_one_line_error(result, f"Error: {run / 'checkpoints' / 'step-00000002.npz'}: unreadable checkpoint")


def test_damaged_encoders_are_refused_with_one_line(tmp_path):
    run = fake_run(tmp_path / "run")
    inputs = keras.Input((4,))
    runs.save_model_file(keras.Model(inputs, keras.layers.Dense(2)(inputs)), tmp_path / "good.keras")
    content = (tmp_path / "good.keras").read_bytes()
    (run / runs.ENCODER_FILE).write_bytes(content[: len(content) // 2])
    assert_one_line_error(CliRunner().invoke(main, ["evaluate", str(run)]), "Error: ")
    assert runs.ENCODER_FILE in CliRunner().invoke(main, ["evaluate", str(run)]).output

    with zipfile.ZipFile(tmp_path / "good.keras") as source, zipfile.ZipFile(run / runs.ENCODER_FILE, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = config["config"]["layers"][-1]
                layer.update(class_name="Lambda", module="keras.layers", registered_name=None, config={
                    "name": layer["config"]["name"],
                    "function": {"class_name": "__lambda__", "config": {"code": "print", "defaults": None,
                                                                         "closure": None}}})
                data = json.dumps(config).encode()
            target.writestr(item, data)
    result = CliRunner().invoke(main, ["evaluate", str(run)])
    assert_one_line_error(result, "Error: ")
    assert "lambda" in result.output


def test_out_of_memory_in_the_first_step_is_one_line_with_advice(tmp_path, monkeypatch):
    def exhausted(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(SPCL, "compute_loss", exhausted)
    result = CliRunner().invoke(main, ["pretrain", "spcl", *TINY_SPCL, "--output", str(tmp_path / "run")])
    assert_one_line_error(result, "Error: Out of memory in training step 1 (epoch 1) with batch_size=4")
    assert "Lower --batch-size (e.g. --batch-size 2)" in result.output


def test_a_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = ViewDataset.batch

    def poisoned(self, epoch, index, part=(0, 1)):
        batch = original(self, epoch, index, part)
        return {key: value * np.nan for key, value in batch.items()} if (epoch, index) == (0, 1) else batch

    monkeypatch.setattr(ViewDataset, "batch", poisoned)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["pretrain", "spcl", *TINY_SPCL, "--checkpoint-every", "1", "--output", str(run)])
    assert_one_line_error(result, "Error: Non-finite loss at epoch 1, step 2 of the epoch: loss=nan, tsp_loss=nan. "
                                  "Training stopped; the last good checkpoint is kept.")
    assert [step for step, _ in checkpoints.list_checkpoints(run)] == [1]
    assert not (run / runs.ENCODER_FILE).exists()


@pytest.mark.slow
def test_pretrain_then_evaluate_against_random_init(tmp_path, monkeypatch):
    monkeypatch.setenv("KMEDSSL_CACHE", str(tmp_path / "cache"))  # the phantom test cohort's images
    run = tmp_path / "run"
    result = invoke("pretrain", "spcl", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16",
                    "--set", "data_size=150", "--output", str(run))
    assert result.exit_code == 0 and f"Run written to {run}" in result.output
    result = invoke("evaluate", str(run), "--baseline", "random", "--views", "frontal,ensemble", "--test-size", "60")
    assert result.exit_code == 0, result.output
    # "view  pretrained  random init  difference" rows: 0.712 [0.688, 0.735]  ...  +0.031 [+0.012, +0.050], p = 0.002
    lines = result.stdout.splitlines()
    assert lines[2].split()[:3] == ["view", "pretrained", "random"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:-1]}
    assert lines[-1].startswith("Verdict: the pretrained encoder ")  # with a baseline, one verdict line ends it
    assert set(rows) == {"frontal", "ensemble"} and all(len(v) == 12 for v in rows.values())
    report = json.loads((run / "reports" / "linear_probe.json").read_text())
    assert 0.0 <= report["macro_auroc"] <= 1.0 and report["test_cohort"]["n_studies"] == 60
    ci, difference = report["macro_auroc_ci"], report["baseline"]["difference"]
    assert rows["ensemble"][:3] == [f"{ci['estimate']:.3f}", f"[{ci['low']:.3f},", f"{ci['high']:.3f}]"]
    difference = {key: difference[key] for key in ("estimate", "low", "high", "p_value")}
    assert " ".join(rows["ensemble"][6:]) == format_interval(difference)
    assert "] done" in result.stderr and "bootstrap" in result.stderr  # progress, one line per step (no terminal)
    assert (run / "reports" / "linear_probe.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("method, layout, count", [("mvmae", "mimic-cxr", "24"), ("mulsupcon", "radimagenet", "48")])
def test_pretrain_on_a_phantom_written_in_a_real_layout(method, layout, count, tmp_path):
    data = tmp_path / "data"
    result = invoke("data", "phantom", "--out", str(data), "--layout", layout, "--subjects", count, "--image-size", "64")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = invoke("pretrain", method, "--data", str(data), "--format", layout, "--epochs", "1",
                    "--steps-per-epoch", "2", "--batch-size", "8", "--output", str(run))
    assert result.exit_code == 0, result.output
    assert (run / "encoder.keras").is_file()
    assert '"format": "' + layout + '"' in (run / "environment.json").read_text()


def test_info_names_backend_kernels_and_data_parallel_engine():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"backend {keras.backend.backend()}" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["device", "kernels", "data parallel"]
    engine = {"jax": "keras.distribution.DataParallel", "tensorflow": "tf.distribute.MirroredStrategy",
              "torch": "torchrun"}[keras.backend.backend()]
    assert engine in lines[3]


def _report(differences, budgets=None):
    """A minimal evaluate report with a scratch baseline: ``{view: (low, high)}`` paired differences."""
    views = {view: {"difference": {"estimate": None if low is None else (low + high) / 2, "low": low, "high": high}}
             for view, (low, high) in differences.items()}
    report = {"baseline": {"name": "scratch", "views": views}}
    if budgets is not None:
        report["budgets"] = [{"labels": b, "baseline_difference": {"low": low, "high": high}}
                             for b, (low, high) in budgets.items()]
    return report


def test_the_verdict_counts_comparisons_whose_paired_interval_is_above_zero():
    from kmedssl.cli.evaluate import verdict

    both_above = [("Fine-tuning", _report({"frontal": (0.01, 0.05)})),
                  ("Linear probe", _report({"frontal": (0.002, 0.03)}))]
    assert verdict(both_above) == ("Verdict: the pretrained encoder beats the scratch baseline in 2 of 2 comparisons "
                                   "(paired 95 % CI above 0).")
    one_straddles = [("Fine-tuning", _report({"frontal": (0.01, 0.05)})),
                     ("Linear probe", _report({"frontal": (-0.001, 0.03), "lateral": (None, None)}))]
    assert verdict(one_straddles) == ("Verdict: the pretrained encoder does not beat the scratch baseline everywhere: "
                                      "the paired 95 % CI is above 0 in 1 of 3 comparisons (fine-tuning frontal).")
    per_budget = [("Linear probe", _report({"frontal": (0.01, 0.02)},
                                           budgets={0.1: (0.01, 0.02), None: (-0.02, 0.0)}))]
    assert "in 1 of 2 comparisons (linear probe 0.1)" in verdict(per_budget)


def test_evaluate_refuses_an_unknown_protocol(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--protocol", "linear,probe"])
    assert result.exit_code == 2 and "expected linear, finetune or a comma list of them" in result.output
