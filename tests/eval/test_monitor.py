"""ProbeMonitor: logs probe_auroc every N epochs into History and CSVLogger, leaves training unchanged."""

import csv
import math

import keras
import numpy as np
import pytest

from kmedssl.backbones import VisionTransformer
from kmedssl.eval.monitor import ProbeMonitor, knn_scores
from kmedssl.methods.supervised import Supervised


def data(rng, count=16):
    """Images whose brightness carries label 0; label 1 is noise (both classes in every split)."""
    labels = np.stack([np.arange(count) % 2, (np.arange(count) // 2) % 2], axis=1).astype("float32")
    images = rng.random((count, 16, 16, 1)).astype("float32") * 0.5 + labels[:, :1, None, None] * 0.5
    return images, labels


def fitted(images, labels, callbacks, epochs=2):
    keras.utils.set_random_seed(0)
    encoder = VisionTransformer(image_size=16, patch_size=8, dim=16, depth=1, num_heads=2, seed=0)
    model = Supervised(encoder, num_classes=2)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit({"image": images}, labels, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=callbacks)
    return model, history.history


def test_logs_probe_auroc_every_n_epochs_and_leaves_training_unchanged(rng, tmp_path):
    images, labels = data(rng)
    monitor = ProbeMonitor(images, labels, every_n_epochs=2, probe="knn", k=5)
    log_file = tmp_path / "log.csv"
    model, history = fitted(images, labels, [monitor, keras.callbacks.CSVLogger(str(log_file))])
    first, second = history["probe_auroc"]
    assert math.isnan(first) and 0.0 <= second <= 1.0
    rows = list(csv.DictReader(log_file.open()))
    assert [row["probe_auroc"] for row in rows] == ["nan", str(second)]

    reference, _ = fitted(images, labels, [])
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_linear_probe_every_epoch(rng):
    images, labels = data(rng)
    _, history = fitted(images, labels, [ProbeMonitor(images, labels, probe="linear")], epochs=1)
    assert len(history["probe_auroc"]) == 1 and 0.0 <= history["probe_auroc"][0] <= 1.0


@pytest.mark.backend_free
def test_knn_scores_match_a_brute_force_vote(rng):
    bank, bank_labels = rng.normal(size=(12, 5)), rng.integers(0, 2, (12, 3)).astype(float)
    queries = rng.normal(size=(4, 5))
    k, temperature = 4, 0.1
    expected = np.zeros((4, 3))
    for q in range(4):
        cos = [bank[j] @ queries[q] / np.linalg.norm(bank[j]) / np.linalg.norm(queries[q]) for j in range(12)]
        top = sorted(range(12), key=lambda j: -cos[j])[:k]
        weights = np.asarray([math.exp(cos[j] / temperature) for j in top])
        expected[q] = (weights[:, None] * bank_labels[top]).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(knn_scores(bank, bank_labels, queries, k, temperature), expected, rtol=1e-10)
    # k larger than the bank uses the whole bank; a query equal to a bank row with T -> 0 copies its labels.
    assert knn_scores(bank, bank_labels, queries, k=50).shape == (4, 3)
    np.testing.assert_allclose(knn_scores(bank, bank_labels, bank[:3], k=3, temperature=1e-4), bank_labels[:3])


@pytest.mark.backend_free
def test_bad_arguments_raise(rng):
    images, labels = data(rng)
    with pytest.raises(ValueError, match="same N"):
        ProbeMonitor(images, labels[:5])
    with pytest.raises(ValueError, match="probe in"):
        ProbeMonitor(images, labels, probe="svm")
    with pytest.raises(ValueError, match="both classes"):
        ProbeMonitor(images, np.zeros_like(labels))
    with pytest.raises(ValueError, match="k >= 1"):
        knn_scores(images[:2, 0, 0], labels[:2], images[:2, 0, 0], k=0)
