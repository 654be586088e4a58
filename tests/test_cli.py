"""The ``kmedssl`` command: help, errors as one line, a real pretrain + evaluate on the phantom."""

import json

import pytest
from click.testing import CliRunner

from kmedssl.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_has_examples():
    for command in ([], ["pretrain"], ["evaluate"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "nope"], "Error: Expected a method name in"),
        (["pretrain", "spcl", "--set", "kappa=abc"], "Error: Expected kappa to be of type float"),
        (["pretrain", "spcl", "--set", "unknown=1"], "Error: Unknown recipe field(s) ['unknown']"),
        (["evaluate", "/no/such/run"], "Error: Expected a run directory or an ENCODER.keras file"),
    ],
)
def test_user_mistakes_are_one_line_without_traceback(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(message), result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_pretrain_then_evaluate_against_random_init(tmp_path):
    run = tmp_path / "run"
    result = invoke("pretrain", "spcl", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16",
                    "--set", "data_size=150", "--output", str(run))
    assert result.exit_code == 0 and f"Run written to {run}" in result.output
    result = invoke("evaluate", str(run), "--baseline", "random", "--views", "frontal,ensemble")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[2:]}
    assert set(rows) == {"frontal", "ensemble"} and all(len(v) == 2 for v in rows.values())
    report = json.loads((run / "reports" / "linear_probe.json").read_text())
    assert 0.0 <= report["macro_auroc"] <= 1.0
    assert float(rows["ensemble"][0]) == pytest.approx(report["macro_auroc"], abs=1e-4)
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
