"""``kmedssl data check`` and ``kmedssl data phantom`` through click's runner (no Keras involved)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from kmedssl.cli.data import data
from kmedssl.data.formats import read_dataset
from tests.data.test_health import plant_defects, write_clean_mimic

pytestmark = pytest.mark.backend_free


def invoke(*args):
    return CliRunner().invoke(data, [str(a) for a in args])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_clean_mimic(tmp_path_factory.mktemp("cli") / "clean")


@pytest.fixture
def corrupt(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "corrupt")
    return root, plant_defects(root)


def test_help_has_examples():
    for command in ([], ["check"], ["phantom"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output and "kmedssl data" in result.output


def test_check_corrupt_folder_exits_1_and_lists_every_defect(corrupt, tmp_path):
    root, planted = corrupt
    report_file = tmp_path / "health.json"
    result = invoke("check", root, "--format", "mimic-cxr", "--json", report_file)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert f"Result: NOT OK ({len(planted) - 1} errors" in result.stdout
    for category, file, text in planted.values():
        shown, text = (s.replace(f"{root}/", "") for s in (file, text))  # paths are shown relative to the root
        assert any(f"{shown}: " in line and text in line for line in lines), (category, shown)
        assert f"\n{category}:\n" in result.stdout
    document = json.loads(report_file.read_text())
    assert document["ok"] is False and document["format"] == "mimic-cxr"
    found = {(f["category"], f["file"]) for f in document["findings"]}
    assert {(category, file) for category, file, _ in planted.values()} <= found


def test_check_clean_folder_exits_0(clean, tmp_path):
    result = invoke("check", clean, "--json", tmp_path / "clean.json")
    assert result.exit_code == 0, result.output
    assert "Result: OK (0 errors" in result.stdout and "format mimic-cxr" in result.stdout
    assert json.loads((tmp_path / "clean.json").read_text())["ok"] is True


@pytest.mark.parametrize("args, message", [
    (["check", "/no/such/data"], "Error: /no/such/data: no such file or directory"),
    (["check", "{clean}", "--format", "png"], "Error: Expected format in"),
    (["check", "{clean}", "--min-side", "0"], "Error: Expected min_side to be a positive integer"),
    (["phantom", "--out", "{tmp}/x", "--subjects", "0"], "Error: Expected num_subjects to be a positive integer"),
    (["phantom", "--out", "{tmp}/x", "--image-size", "4"], "Error: Expected image_size to be an integer >= 8"),
    (["phantom", "--out", "{clean}", "--layout", "radimagenet"], "Error: "),  # not an empty folder
])
def test_user_mistakes_are_one_line(clean, tmp_path, args, message):
    result = invoke(*[a.format(clean=clean, tmp=tmp_path) for a in args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(message) and "Traceback" not in result.output, result.output


def test_phantom_mimic_layout_is_read_back(tmp_path):
    out = tmp_path / "mimic"
    result = invoke("phantom", "--out", out, "--layout", "mimic-cxr", "--subjects", 4, "--image-size", 32)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("Wrote the mimic-cxr phantom (") and str(out) in result.output
    assert "Writing images" in result.output  # the progress bar (stderr)
    dataset = read_dataset(out)  # format inferred from the files written
    assert dataset.format == "mimic-cxr" and dataset.skipped == [] and len({r.subject_id for r in dataset.records}) == 4
    assert invoke("check", out).exit_code == 0


def test_phantom_radimagenet_layout_is_read_back(tmp_path):
    out = tmp_path / "rin"
    result = invoke("phantom", "--out", out, "--layout", "radimagenet", "--subjects", 12, "--image-size", 32)
    assert result.exit_code == 0, result.output
    dataset = read_dataset(out, "radimagenet")
    assert len(dataset.records) == 12 and dataset.skipped == []
