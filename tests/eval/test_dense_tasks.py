"""Dense evaluations (``evaluate_dense``, ``recipes.evaluate(task=...)``, ``kmedssl evaluate --task``) on tiny
phantom data: finite Dice with intervals and a paired difference to the scratch baseline, reports, and the
command end to end on a phantom written in the JSRT layout.

Fine-tuning a UperNet costs graph traces per model on TensorFlow and JAX (tens of seconds on a busy CI core),
so those backends run one fit (one budget, no baseline: the paired difference is NumPy); torch runs two budgets
with the scratch baseline, landmarks and the command end to end (as ``test_dense.py`` fine-tunes on torch only;
the UperNet is tested on every backend in ``tests/backbones/test_upernet.py``)."""

import importlib.util
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kmedssl import recipes
from kmedssl.backbones.vit import VisionTransformer
from kmedssl.cli import main
from kmedssl.data.phantom.ground_truth import LANDMARKS
from kmedssl.eval.dense_tasks import correspondence_pairs, evaluate_dense, square_mask, square_points

TINY = dict(train_size=4, test_size=3, epochs=1, batch_size=4)
TORCH = keras.backend.backend() == "torch"
BUDGETS = [0.5, None] if TORCH else [None]
BASELINE = "scratch" if TORCH else None
torch_only = pytest.mark.skipif(not TORCH, reason="backend-independent plumbing; costly graph traces elsewhere")


def tiny_encoder():
    return VisionTransformer(image_size=32, patch_size=8, dim=16, depth=4, num_heads=2, seed=0)


def _check_interval(interval, low=-np.inf, high=np.inf):
    assert low <= interval["low"] <= interval["estimate"] <= interval["high"] <= high
    assert interval["n_resamples"] == 1000


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    report = evaluate_dense(tiny_encoder(), "segmentation", labels=BUDGETS, baseline=BASELINE, output_dir=out,
                            **TINY)
    return report, out


def test_segmentation_reports_dice_with_intervals_and_the_paired_difference(segmentation):
    report, out = segmentation
    assert report["items"] == ["heart", "lung_right", "lung_left", "clavicle_right", "clavicle_left",
                               "pneumothorax_visible"]
    assert [entry["labels"] for entry in report["budgets"]] == BUDGETS
    sizes = [entry["n_train_images"] for entry in report["budgets"]]
    assert 0 < sizes[0] and sizes == sorted(set(sizes))
    for entry in report["budgets"]:
        for scores in (entry, entry["baseline"]) if BASELINE else (entry,):
            assert 0.0 <= scores["score"] <= 1.0 and scores["score"] == pytest.approx(scores["score_ci"]["estimate"])
            _check_interval(scores["score_ci"], 0.0, 1.0)
            for name in report["items"]:
                _check_interval(scores["per_item_ci"][name], 0.0, 1.0)
        if not BASELINE:
            continue
        difference = entry["difference"]
        assert difference["estimate"] == pytest.approx(entry["score"] - entry["baseline"]["score"])
        _check_interval(difference, -1.0, 1.0)
        assert 0.0 <= difference["p_value"] <= 1.0
    assert {p.name for p in out.iterdir()} == {"segmentation.json", "segmentation.md", "segmentation_overlays.png"}
    written = json.loads((out / "segmentation.json").read_text())
    assert written["budgets"] == json.loads(json.dumps(report["budgets"]))
    assert "| all |" in (out / "segmentation.md").read_text()


def test_arguments_are_checked_before_any_work():
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="Expected task in"):
        evaluate_dense(encoder, "classification")
    with pytest.raises(ValueError, match="Expected baseline None or one of"):
        evaluate_dense(encoder, "segmentation", baseline="random")
    with pytest.raises(ValueError, match="Expected structures from"):
        evaluate_dense(encoder, "segmentation", structures=["spleen"], **TINY)
    with pytest.raises(ValueError, match="Expected task in"):
        recipes.evaluate(encoder, task="detection")
    with pytest.raises(ValueError, match="with task='segmentation'"):
        recipes.evaluate(encoder, task="segmentation", protocol="linear")


def test_resizing_keeps_masks_and_points_together():
    mask = np.zeros((4, 6), bool)
    mask[1, 2] = True  # inside the centre crop (columns 1..4)
    np.testing.assert_array_equal(square_mask(mask, 8)[2:4, 2:4], True)
    assert square_mask(mask, 8).sum() == 4
    points, visible = square_points([(2.0, 1.0), (0.0, 1.0)], [True, True], (4, 6), 8)
    np.testing.assert_allclose(points[0], (2.5, 2.5))  # the centre of the 2 x 2 block the pixel became
    assert visible.tolist() == [True, False]  # column 0 is cropped away


def test_correspondence_pairs_join_different_subjects_once_each():
    subjects = np.array(["a", "a", "b", "c", "c"])
    pairs = correspondence_pairs(subjects, seed=1)
    assert sorted(pairs[:, 0]) == list(range(5)) and all(subjects[q] != subjects[k] for q, k in pairs)
    np.testing.assert_array_equal(pairs, correspondence_pairs(subjects, seed=1))
    assert correspondence_pairs(np.array(["a", "a"])).shape == (0, 2)


@torch_only
@pytest.mark.skipif(importlib.util.find_spec("kmedssl.eval.landmarks") is None, reason="no landmark fine-tuning yet")
def test_landmarks_report_pixel_errors(tmp_path):
    report = evaluate_dense(tiny_encoder(), "landmarks", output_dir=tmp_path, **TINY)
    assert {p.name for p in tmp_path.iterdir()} == {"landmarks.json", "landmarks.md", "landmarks_overlays.png"}
    entry = report["budgets"][0]
    assert report["higher_is_better"] is False and tuple(report["items"]) == LANDMARKS
    assert entry["score"] >= 0 and entry["score_ci"]["low"] <= entry["score"] <= entry["score_ci"]["high"]


@torch_only
def test_the_command_end_to_end_on_a_jsrt_layout(tmp_path):
    def invoke(*args):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    data, run = tmp_path / "jsrt", tmp_path / "run"
    invoke("data", "phantom", "--out", data, "--layout", "jsrt", "--subjects", 10, "--image-size", 32)
    invoke("pretrain", "spcl", "--data", data, "--epochs", 1, "--steps-per-epoch", 1, "--batch-size", 4,
           "--image-size", 16, "--set", "patch_size=4", "--output", run)
    result = invoke("evaluate", run, "--task", "segmentation", "--data", data, "--labels", "1.0",
                    "--baseline", "scratch", "--epochs", 1)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Segmentation, mean Dice [95 % CI] (higher is better) over 5 structures")
    assert lines[2].split() == ["labels", "images", "pretrained", "scratch", "difference", "(pretrained", "-",
                                "scratch)"]
    report = json.loads((run / "reports" / "segmentation.json").read_text())
    entry = report["budgets"][0]
    assert lines[3].split()[:5] == ["1", str(entry["n_train_images"]), f"{entry['score']:.3f}",
                                    f"[{entry['score_ci']['low']:.3f},", f"{entry['score_ci']['high']:.3f}]"]
    assert [line.split()[0] for line in lines[6:11]] == report["items"] == ["heart", "lung_right", "lung_left",
                                                                            "clavicle_right", "clavicle_left"]
    assert lines[-1].startswith("Verdict: the pretrained encoder ")
    assert (run / "reports" / "segmentation_overlays.png").is_file()
