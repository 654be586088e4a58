"""Dense-task metrics (kmedssl.eval.dense_metrics) against hand-computed cases: Dice with SIIM's empty-mask
convention, Gaussian heatmap targets, heatmap arg-max, zero-shot correspondence, intervals of a mean."""

import math

import numpy as np
import pytest

from kmedssl.eval.dense_metrics import (
    default_sigma,
    dice_per_image,
    gaussian_heatmap,
    heatmap_argmax,
    landmark_error,
    mean_dice,
    mean_interval,
    nearest_patch,
    paired_mean_difference,
    patch_centres,
    patch_index,
    zero_shot_correspondence,
)
from kmedssl.eval.intervals import bootstrap_indices

pytestmark = pytest.mark.backend_free


# === Dice ===


def test_dice_hand_computed_cases():
    empty = np.zeros((3, 3), bool)
    a = empty.copy()
    a[0, :2] = True  # 2 pixels
    b = empty.copy()
    b[0, 1:] = True  # 2 pixels, overlap 1 with a
    c = empty.copy()
    c[:, :] = True  # 9 pixels, overlap 2 with a
    predictions = np.stack([a, a, a, empty, a, empty])
    targets = np.stack([a, b, c, empty, empty, a])
    # identical 1; 2*1/(2+2) = 0.5; 2*2/(2+9) = 4/11; both empty 1 (SIIM); empty truth 0; empty prediction 0
    np.testing.assert_allclose(dice_per_image(predictions, targets), [1.0, 0.5, 4 / 11, 1.0, 0.0, 0.0])


def test_mean_dice_averages_positive_and_negative_images_per_structure():
    empty = np.zeros((2, 2), bool)
    full = np.ones((2, 2), bool)
    half = np.array([[True, True], [False, False]])
    # structure 0: Dice 1 (both empty), 2*2/(2+4) = 2/3; structure 1: 0 (empty truth), 1
    predictions = np.stack([np.stack([empty, full], -1), np.stack([half, full], -1)])
    targets = np.stack([np.stack([empty, empty], -1), np.stack([full, full], -1)])
    np.testing.assert_allclose(dice_per_image(predictions, targets), [[1.0, 0.0], [2 / 3, 1.0]])
    report = mean_dice(predictions, targets, ["heart", "lung"])
    assert report["per_structure"] == pytest.approx({"heart": 5 / 6, "lung": 0.5})
    assert report["mean"] == pytest.approx((5 / 6 + 0.5) / 2)
    with pytest.raises(ValueError, match="structure names"):
        mean_dice(predictions, targets, ["heart"])
    with pytest.raises(ValueError, match="one shape"):
        dice_per_image(predictions, targets[..., 0])


# === Heatmaps ===


def test_gaussian_heatmap_peak_window_and_values():
    sigma = default_sigma(11)
    assert sigma == pytest.approx(5 / 3)
    heatmap = gaussian_heatmap([[7.4, 6.6]], 20)[0]  # rounds to column 7, row 7
    assert heatmap.shape == (20, 20) and heatmap.dtype == np.float32
    assert heatmap[7, 7] == 1.0 and heatmap.max() == 1.0
    assert heatmap[7, 8] == pytest.approx(math.exp(-1 / (2 * sigma**2)))
    assert heatmap[9, 8] == pytest.approx(math.exp(-(1 + 4) / (2 * sigma**2)))
    assert heatmap[12, 12] == pytest.approx(math.exp(-50 / (2 * sigma**2)))  # the window's corner (±5)
    support = np.argwhere(heatmap > 0)
    assert support.min(0).tolist() == [2, 2] and support.max(0).tolist() == [12, 12]  # exactly 11 x 11


def test_gaussian_heatmap_border_invisible_and_outside():
    maps = gaussian_heatmap([[0, 0], [3, 1], [-1, 2], [2, 2]], (4, 6), kernel=3, sigma=1.0,
                            visible=[True, True, True, False])
    assert maps.shape == (4, 4, 6)
    expected = np.zeros((4, 6))
    expected[:2, :2] = [[1, math.exp(-0.5)], [math.exp(-0.5), math.exp(-1)]]  # clipped at the corner
    np.testing.assert_allclose(maps[0], expected, rtol=1e-6)
    assert maps[1][1, 3] == 1.0 and maps[1][0, 2] == pytest.approx(math.exp(-1))
    assert not maps[2].any() and not maps[3].any()  # outside the image; not visible
    with pytest.raises(ValueError, match="odd"):
        gaussian_heatmap([[1, 1]], 8, kernel=4)


def test_heatmap_argmax_hand_built():
    h = np.zeros((2, 5, 6))
    h[0, 3, 1] = 2.0  # row 3, column 1
    h[0, 3, 2] = 1.0  # right neighbour higher than the left one
    h[0, 2, 1] = 0.5  # upper neighbour higher than the lower one
    h[1, 1, 4] = h[1, 2, 0] = 1.0  # tie: the first in row-major order
    np.testing.assert_array_equal(heatmap_argmax(h), [[1, 3], [4, 1]])
    np.testing.assert_allclose(heatmap_argmax(h, refine=True), [[1.25, 2.75], [4.0, 1.0]])
    border = np.zeros((1, 3, 3))
    border[0, 0, 2], border[0, 0, 1] = 1.0, 0.5  # corner: no shift along either axis
    np.testing.assert_array_equal(heatmap_argmax(border, refine=True), [[2, 0]])


def test_heatmap_roundtrip_and_landmark_error():
    points = np.array([[3.0, 10.0], [15.0, 0.0], [8.2, 8.7]])
    decoded = heatmap_argmax(gaussian_heatmap(points, 16))
    np.testing.assert_array_equal(decoded, [[3, 10], [15, 0], [8, 9]])
    errors = landmark_error(decoded, points, visible=[True, True, False])
    np.testing.assert_allclose(errors[:2], [0.0, 0.0])
    assert math.isnan(errors[2])
    assert landmark_error([[0.0, 0.0]], [[3.0, 4.0]])[0] == 5.0


# === Zero-shot correspondence ===


def test_patch_geometry():
    np.testing.assert_array_equal(patch_index([[0, 0], [7.4, 0], [7.6, 8.0], [100, -5]], 8, 3), [0, 0, 4, 2])
    np.testing.assert_allclose(patch_centres(2, 4), [[1.5, 1.5], [5.5, 1.5], [1.5, 5.5], [5.5, 5.5]])


def test_nearest_patch_on_a_3x3_grid():
    keys = np.eye(9)  # key patch k is the unit vector e_k
    queries = np.array([[0, 0, 0, 0, 0.1, 0, 0, 0.9, 0],  # nearest e_7
                        [0.5, 0.5, 0, 0, 0, 0, 0, 0, 0]])  # equidistant to e_0 and e_1: the first
    np.testing.assert_array_equal(nearest_patch(queries, keys), [7, 0])


def test_zero_shot_correspondence_hand_computed():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(9, 4))  # 3 x 3 grid of 8-pixel patches on a 24-pixel image
    shift = [2, 1, 0, 5, 4, 3, 8, 7, 6]  # the key image is the query's grid mirrored left-right
    key = query[shift]
    result = zero_shot_correspondence(query, key, [[2.0, 3.0], [20.0, 12.0]], [[21.0, 4.0], [0.0, 12.0]], 8)
    # query patch 0 (column 0, row 0) -> key patch 2 (column 2, row 0), centre (19.5, 3.5);
    # query patch 5 (column 2, row 1) -> key patch 3 (column 0, row 1), centre (3.5, 11.5)
    np.testing.assert_array_equal(result["key_patch"], [2, 3])
    np.testing.assert_allclose(result["predicted"], [[19.5, 3.5], [3.5, 11.5]])
    np.testing.assert_allclose(result["error"], [math.hypot(1.5, 0.5), math.hypot(3.5, 0.5)])


# === Intervals ===


def test_mean_interval_matches_explicit_resamples():
    values = np.array([1.0, 0.0, 0.5, 0.25, np.nan, 0.75])
    groups = np.array([0, 0, 1, 2, 2, 3])
    interval = mean_interval(values, groups, n_resamples=200, seed=3)
    assert interval.estimate == pytest.approx(np.nanmean(values))
    means = [np.nanmean(values[rows]) for rows in bootstrap_indices(groups, 200, seed=3)]
    low, high = np.percentile(means, [2.5, 97.5])
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.n_groups == 4 and interval.p_value is None


def test_paired_mean_difference():
    a = np.array([0.9, 0.8, 0.7, 0.95, 0.85])
    same = paired_mean_difference(a, a, n_resamples=100)
    assert same.estimate == 0.0 and same.p_value == 1.0
    better = paired_mean_difference(a, a - 0.1, n_resamples=100)
    assert better.estimate == pytest.approx(0.1) and better.low == pytest.approx(0.1)
    assert better.p_value == pytest.approx(2 / 101)
