"""Full fine-tuning (paper 001 Table 3): learns a toy task, leaves the caller's encoder alone, is seeded."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kmedssl.backbones import VisionTransformer
from kmedssl.eval.finetune import FineTuneClassifier, copy_encoder, fit_finetune, step_lr_schedule
from tests.helpers import to_numpy

FIT = {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "step_size": 2}


def toy(n, seed):
    """16x16 images; label 0 = top half brighter, label 1 = left half brighter (independent)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 2)).astype("float32")
    images = rng.normal(0.0, 0.5, size=(n, 16, 16, 1)).astype("float32")
    images[:, :8, :, 0] += labels[:, :1, None]
    images[:, :, :8, 0] += labels[:, 1:, None]
    return images, labels


def tiny_vit():
    return VisionTransformer(image_size=16, patch_size=8, dim=16, depth=1, num_heads=2)


@pytest.fixture(scope="module")
def fitted():
    """One encoder, two fits with seed 0 and one with seed 1, test images and their predictions."""
    keras.utils.set_random_seed(0)
    encoder = tiny_vit()
    before = [w.copy() for w in encoder.get_weights()]
    (train_x, train_y), (test_x, test_y) = toy(64, 0), toy(64, 1)
    predictions = [fit_finetune(encoder, train_x, train_y, seed=s, **FIT)(test_x) for s in (0, 0, 1)]
    return {"encoder": encoder, "before": before, "test_y": test_y, "predictions": predictions}


def test_learns_a_toy_task(fitted):
    scores = fitted["predictions"][0]
    assert scores.shape == (64, 2) and np.all((scores >= 0) & (scores <= 1))
    for k in range(2):
        assert roc_auc_score(fitted["test_y"][:, k], scores[:, k]) > 0.7


def test_callers_encoder_is_unchanged(fitted):
    after = fitted["encoder"].get_weights()
    assert len(after) == len(fitted["before"])
    for old, new in zip(fitted["before"], after):
        np.testing.assert_array_equal(old, new)


def test_reproducible_with_a_seed(fitted):
    first, again, other = fitted["predictions"]
    np.testing.assert_allclose(first, again, rtol=1e-6, atol=1e-7)
    assert np.abs(first - other).max() > 1e-4


def test_step_lr_schedule_decays_at_epoch_step_size():
    steps_per_epoch = 3
    schedule = step_lr_schedule(1e-4, step_size=5, gamma=0.1, epochs=10, steps_per_epoch=steps_per_epoch)
    values = np.asarray([float(to_numpy(schedule(step))) for step in range(10 * steps_per_epoch)])
    epochs = np.arange(10 * steps_per_epoch) // steps_per_epoch  # epoch of every optimizer step
    np.testing.assert_allclose(values[epochs < 5], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(values[epochs >= 5], 1e-5, rtol=1e-6)
    short = step_lr_schedule(1e-4, step_size=5, gamma=0.1, epochs=3, steps_per_epoch=2)
    np.testing.assert_allclose([float(to_numpy(short(s))) for s in range(6)], 1e-4, rtol=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        step_lr_schedule(1e-4, step_size=5, gamma=0.0, epochs=10, steps_per_epoch=3)


def test_softmax_predictions_are_distributions():
    images, labels = toy(16, 2)
    one_hot = np.eye(2, dtype="float32")[labels[:, 0].astype(int)]
    scores = fit_finetune(tiny_vit(), images, one_hot, epochs=1, batch_size=8, multi_label=False)(images[:5])
    assert scores.shape == (5, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_copy_is_trainable_with_equal_weights():
    encoder = tiny_vit()
    encoder.trainable = False
    copy = copy_encoder(encoder)
    assert copy.trainable and copy is not encoder
    for old, new in zip(encoder.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_classifier_config_round_trip():
    model = FineTuneClassifier(tiny_vit(), num_classes=3, seed=4)
    clone = FineTuneClassifier.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    assert clone.num_classes == 3 and clone.seed == 4
    np.testing.assert_allclose(to_numpy(clone(images)), to_numpy(model(images)), rtol=1e-6, atol=1e-6)


def test_rejects_bad_labels():
    images, labels = toy(8, 0)
    with pytest.raises(ValueError, match="labels of shape"):
        fit_finetune(tiny_vit(), images, labels[:4])
    with pytest.raises(ValueError, match="one-hot"):
        fit_finetune(tiny_vit(), images, labels, multi_label=False)
