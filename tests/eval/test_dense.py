"""Segmentation fine-tuning (kmedssl.eval.dense): the BCE + soft-Dice loss against hand-computed values on every
backend, and a tiny fine-tuning run on phantom heart masks (torch only: the UperNet itself is tested on every
backend in tests/backbones/test_upernet.py)."""

import math

import keras
import numpy as np
import pytest

from kmedssl.backbones import VisionTransformer
from kmedssl.data.phantom import ChestCohort
from kmedssl.eval.dense import finetune_segmentation, segmentation_loss, soft_dice_loss
from kmedssl.eval.intervals import Interval
from tests.helpers import to_numpy


def test_losses_hand_computed():
    targets = np.zeros((2, 2, 2, 1), "float32")
    targets[0, 0, 0, 0] = 1.0  # image 0: one positive pixel of four; image 1 empty
    logits = np.zeros((2, 2, 2, 1), "float32")  # p = 1/2 everywhere
    # image 0: (2 * 0.5 + 1) / (2 + 1 + 1) = 1/2; image 1: (0 + 1) / (2 + 0 + 1) = 1/3
    expected_dice = 1.0 - (0.5 + 1 / 3) / 2
    assert float(to_numpy(soft_dice_loss(targets, logits))) == pytest.approx(expected_dice, rel=1e-6)
    assert float(to_numpy(segmentation_loss(targets, logits))) == pytest.approx(math.log(2) + expected_dice,
                                                                                  rel=1e-6)
    confident = np.where(targets > 0, 30.0, -30.0).astype("float32")  # p = t up to e^-30
    assert float(to_numpy(segmentation_loss(targets, confident))) == pytest.approx(0.0, abs=1e-6)


def _heart_data(n):
    cohort = ChestCohort(num_subjects=12, seed=0)
    records = [r for r in cohort.records if r.view in ("PA", "AP")][:n]
    images = np.stack([cohort.render(r, image_size=64) for r in records])[..., None].astype("float32")
    masks = np.stack([cohort.ground_truth(r, image_size=64).masks["heart"] for r in records])[..., None]
    return images, masks, [r.study_id for r in records]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="one backend suffices for the run (CI time)")
def test_finetune_segmentation_tiny_run():
    images, masks, studies = _heart_data(12)
    encoder = VisionTransformer(image_size=64, patch_size=16, dim=32, depth=4, num_heads=2, seed=0)
    weights = [w.copy() for w in encoder.get_weights()]
    result = finetune_segmentation(encoder, images[:8], masks[:8], images[8:], masks[8:], structure_names=["heart"],
                                   groups=studies[8:], epochs=30, batch_size=4, learning_rate=3e-3, channels=16,
                                   n_resamples=200)
    per_image = result["per_image_dice"]
    assert per_image.shape == (4, 1) and np.all((per_image >= 0) & (per_image <= 1))
    assert result["mean_dice"] == pytest.approx(per_image.mean())
    assert result["per_structure"] == {"heart": pytest.approx(per_image.mean())}
    interval = result["mean_dice_ci"]
    assert isinstance(interval, Interval) and interval.low <= interval.estimate <= interval.high
    assert interval.estimate == pytest.approx(per_image.mean()) and interval.n_groups == len(set(studies[8:]))
    assert result["mean_dice"] > 0.5  # held-out hearts after 60 steps on 8 images (measured 0.71-0.75, seeds 0-2)
    for before, after in zip(weights, encoder.get_weights()):
        np.testing.assert_array_equal(before, after)  # the caller's encoder is untouched
    with pytest.raises(ValueError, match="same N, H, W"):
        finetune_segmentation(encoder, images, masks[:3], images, masks)
