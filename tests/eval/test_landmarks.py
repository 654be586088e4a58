"""Landmark detection fine-tuning (kmedssl.eval.landmarks, ACE §B.2): the heatmap targets against
``gaussian_heatmap``, the masked MSE against hand values (and no gradient into an invisible landmark's map) and
the report's means on every backend; the phantom arrays against the ground truth; and a tiny fine-tuning run on
phantom landmarks (torch only, as tests/eval/test_dense.py: the UperNet itself is tested on every backend)."""

import keras
import numpy as np
import pytest

from kmedssl.backbones import VisionTransformer
from kmedssl.data.phantom import ChestCohort
from kmedssl.eval.dense_metrics import gaussian_heatmap
from kmedssl.eval.intervals import Interval
from kmedssl.eval.landmarks import (
    finetune_landmarks,
    heatmap_loss,
    heatmap_targets,
    landmark_report,
    phantom_landmark_arrays,
)
from tests.helpers import to_numpy, value_and_grad

NAMES = ["carina", "heart_border_left", "costophrenic_angle_right"]


@pytest.fixture(scope="module")
def phantom():
    """16 frontal phantom images at 32 px with three landmarks, and their study ids."""
    cohort = ChestCohort(num_subjects=12, seed=0)
    records = [r for r in cohort.records if r.view in ("PA", "AP")][:16]
    return (cohort, records, *phantom_landmark_arrays(cohort, records, 32, NAMES))


def test_targets_are_gaussian_heatmaps():
    points = np.array([[[3.4, 7.6], [20.0, 0.0], [5.0, 5.0]], [[31.0, 31.0], [10.5, 2.5], [0.0, 0.0]]])
    visible = np.array([[True, True, False], [True, True, True]])
    targets = heatmap_targets(points, visible, 32)
    assert targets.shape == (2, 32, 32, 3) and targets.dtype == np.float32
    for n in range(2):
        expected = gaussian_heatmap(points[n], 32, visible=visible[n])  # (K, H, W)
        np.testing.assert_array_equal(np.moveaxis(targets[n], -1, 0), expected)
    assert targets[0, 8, 3, 0] == 1.0 and targets[1, 3, 11, 1] == 1.0  # the peak on the rounded pixel (row, column)
    assert not targets[0, ..., 2].any()  # invisible: all zero
    assert np.count_nonzero(targets[0, ..., 0]) == 9 * 11  # the 11 x 11 window cut at column 0 (columns -2 .. 8)


def test_heatmap_loss_hand_computed():
    targets = np.zeros((2, 2, 2, 2), "float32")  # (B, H, W, K); landmark 1 invisible (all-zero map) in both
    targets[0, 0, 0, 0] = 1.0
    targets[1, 0, 1, 0] = 0.5
    heatmaps = np.zeros_like(targets)
    heatmaps[..., 1] = 3.0  # far off on the invisible maps: masked out
    # visible maps: image 0 (1 - 0)² / 4 = 1/4, image 1 0.5² / 4 = 1/16; mean over the two visible maps
    assert float(to_numpy(heatmap_loss(targets, heatmaps))) == pytest.approx((0.25 + 0.0625) / 2, rel=1e-6)
    assert float(to_numpy(heatmap_loss(targets, targets))) == pytest.approx(0.0, abs=1e-7)
    assert float(to_numpy(heatmap_loss(np.zeros_like(targets), heatmaps))) == 0.0  # nothing visible
    value, (_, gradient) = value_and_grad(heatmap_loss, targets, heatmaps)
    assert value == pytest.approx(0.15625, rel=1e-6)
    assert not gradient[..., 1].any()  # no gradient into an invisible landmark's map
    np.testing.assert_allclose(gradient[0, 0, 0, 0], 2 * (0 - 1) / 4 / 2, rtol=1e-6)  # d/dh of (h - t)² / 4 / 2


def test_landmark_report_hand_computed():
    errors = np.array([[1.0, np.nan], [3.0, 5.0], [np.nan, np.nan]])
    report = landmark_report(errors, ["a", "b"], groups=[0, 1, 1], n_resamples=50)
    assert report["mean_error"] == pytest.approx(3.0)  # (1 + 3 + 5) / 3 over visible entries
    assert report["per_landmark"] == pytest.approx({"a": 2.0, "b": 5.0})
    assert report["mean_error_ci"].estimate == pytest.approx(2.5)  # images: 1, 4 (the third has none)
    assert report["per_landmark_ci"]["b"].estimate == pytest.approx(5.0)
    with pytest.raises(ValueError, match="2 landmark names"):
        landmark_report(errors, ["a"])


def test_phantom_landmark_arrays(phantom):
    cohort, records, images, points, visible = phantom
    assert images.shape == (16, 32, 32, 1) and images.dtype == np.float32
    assert points.shape == (16, 3, 2) and visible.shape == (16, 3) and visible.dtype == bool
    for n in (0, 5):
        np.testing.assert_array_equal(images[n, ..., 0], cohort.render(records[n], image_size=32))
        truth = cohort.ground_truth(records[n], image_size=32).landmarks
        for k, name in enumerate(NAMES):
            assert tuple(points[n, k]) == (truth[name].x, truth[name].y) and visible[n, k] == truth[name].visible
    everything = phantom_landmark_arrays(cohort, records[:1], 32)
    assert everything[1].shape == (1, 11, 2)  # all of ground_truth.LANDMARKS
    with pytest.raises(ValueError, match="landmark names"):
        phantom_landmark_arrays(cohort, records[:1], 32, ["navel"])


def test_finetune_landmarks_checks_shapes(phantom):
    _, _, images, points, visible = phantom
    encoder = None  # the arrays are checked before the encoder is used
    with pytest.raises(ValueError, match="same N and K"):
        finetune_landmarks(encoder, images, points[:3], visible, images, points, visible)
    with pytest.raises(ValueError, match="same landmarks"):
        finetune_landmarks(encoder, images, points, visible, images, points[:, :2], visible[:, :2])


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="one backend suffices for the run (CI time)")
def test_finetune_landmarks_tiny_run(phantom):
    cohort, records, images, points, visible = phantom
    test_visible = visible[12:].copy()
    test_visible[0, 0] = False  # left out of the error
    encoder = VisionTransformer(image_size=32, patch_size=8, dim=32, depth=4, num_heads=2, seed=0)
    weights = [w.copy() for w in encoder.get_weights()]
    studies = [r.study_id for r in records[12:]]
    result = finetune_landmarks(encoder, images[:12], points[:12], visible[:12], images[12:], points[12:],
                                test_visible, landmark_names=NAMES, groups=studies, epochs=60, batch_size=4,
                                learning_rate=3e-3, channels=16, n_resamples=200)
    errors = result["per_image_error"]
    assert errors.shape == (4, 3) and np.isnan(errors[0, 0]) and np.isfinite(errors[test_visible]).all()
    assert result["mean_error"] == pytest.approx(np.nanmean(errors))
    assert result["per_landmark"]["carina"] == pytest.approx(np.nanmean(errors[:, 0]))
    interval = result["mean_error_ci"]
    assert isinstance(interval, Interval) and interval.low <= interval.estimate <= interval.high
    assert interval.n_groups == len(set(studies))
    # trivial baseline: every landmark at the image centre, 8.4 px off on these test images
    centre = np.nanmean(np.where(test_visible, np.linalg.norm(points[12:] - 15.5, axis=-1), np.nan))
    assert centre > 8
    assert result["mean_error"] < centre / 2  # measured 1.35-1.50 px over seeds 0-2 (120 steps on 12 images)
    assert result["model"].num_classes == 3  # one heatmap per landmark
    for before, after in zip(weights, encoder.get_weights()):
        np.testing.assert_array_equal(before, after)  # the caller's encoder is untouched
