"""jaccard_supcon / JaccardSupCon (paper 001, Eq. 3; SPEC §3.3) against the float64 oracle."""

import math

import keras
import numpy as np
import pytest

from kmedssl.losses import JaccardSupCon, jaccard_supcon
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


def _batch(rng, batch, views, dim, classes):
    features = rng.normal(size=(batch, views, dim)).astype("float32")
    labels = (rng.random((batch, classes)) < 0.4).astype("float32")
    labels[0] = 0.0  # at least one empty label row
    return features, labels


def _compiled(fn):
    """fn under the backend's compiler (tf.function with a dynamic batch, jax.jit); eager on torch."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, input_signature=[tf.TensorSpec((None, 2, 4)), tf.TensorSpec((None, 3))])
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


@pytest.mark.parametrize(
    "batch, views, dim, temperature, threshold, base_temperature",
    [(6, 2, 8, 0.07, 0.3, 0.07), (5, 3, 4, 0.2, 0.5, 0.07), (8, 1, 3, 0.1, 0.0, 0.1)],
)
def test_matches_oracle(rng, batch, views, dim, temperature, threshold, base_temperature):
    features, labels = _batch(rng, batch, views, dim, 4)
    args = (temperature, threshold, base_temperature)
    assert_close(jaccard_supcon(features, labels, *args), oracles.jaccard_supcon(features, labels, *args))


def test_gradient_matches_finite_differences(rng):
    features, labels = _batch(rng, 3, 2, 4, 3)
    labels[1] = labels[2] = [1, 1, 0]
    _, (grad,) = value_and_grad(lambda f: jaccard_supcon(f, labels, 0.2, 0.3, 0.1), features)
    (expected,) = finite_difference_grad(lambda f: oracles.jaccard_supcon(f, labels, 0.2, 0.3, 0.1), [features])
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_invariances(rng):
    features, labels = _batch(rng, 6, 2, 5, 4)
    loss = to_numpy(jaccard_supcon(features, labels))
    perm = rng.permutation(6)
    np.testing.assert_allclose(to_numpy(jaccard_supcon(features[perm], labels[perm])), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(jaccard_supcon(features[:, ::-1], labels)), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(jaccard_supcon(features, labels[:, ::-1])), loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(jaccard_supcon(2.5 * features, labels)), loss, rtol=1e-5)


def test_all_empty_label_rows_give_zero_not_nan(rng):
    features = rng.normal(size=(4, 2, 3)).astype("float32")
    empty = np.zeros((4, 5), dtype="float32")
    assert_close(jaccard_supcon(features, empty), 0.0)
    # threshold 0: every other row is a positive of weight J = 0, still no NaN.
    assert_close(jaccard_supcon(features, empty, threshold=0.0), 0.0)


def test_closed_form_identical_features_and_labels():
    batch, views, temperature, base_temperature = 3, 2, 0.1, 0.07
    features = np.ones((batch, views, 4), dtype="float32")
    labels = np.ones((batch, 2), dtype="float32")
    # Every J = 1 and every log-softmax value is -log(VB - 1).
    expected = temperature / base_temperature * math.log(batch * views - 1)
    assert_close(jaccard_supcon(features, labels, temperature, 0.3, base_temperature), expected)


def test_normaliser_is_the_positive_count():
    features = np.ones((3, 1, 4), dtype="float32")  # every log-softmax value is -log 2
    labels = np.array([[1, 1], [1, 0], [1, 1]], dtype="float32")  # J01 = J12 = 1/2, J02 = 1
    # Per anchor: log 2 * mean of its positives' J = log 2 * (3/4, 1/2, 3/4).
    assert_close(jaccard_supcon(features, labels, 0.07, 0.3, 0.07), math.log(2) * 2 / 3)


def test_anchor_without_positives_counts_in_the_mean():
    features = np.ones((3, 2, 4), dtype="float32")  # every log-softmax value is -log 5
    # Image 2 matches only its own other view (J = 1): all 6 anchors give log 5.
    labels = np.array([[1, 0], [1, 0], [0, 1]], dtype="float32")
    assert_close(jaccard_supcon(features, labels), math.log(5))
    # Image 2 has no labels (J = 0 even with itself): its 2 anchors give 0 but still count in the mean.
    labels[2] = 0.0
    assert_close(jaccard_supcon(features, labels), 4 / 6 * math.log(5))


def test_compiled(rng):
    features, labels = _batch(rng, 5, 2, 4, 3)
    loss = _compiled(lambda f, y: jaccard_supcon(f, y, 0.1, 0.3, 0.1))(features, labels)
    assert_close(loss, oracles.jaccard_supcon(features, labels, 0.1, 0.3, 0.1))


def test_bfloat16_gives_float32_scalar(rng):
    features, labels = _batch(rng, 4, 2, 8, 3)
    f16 = keras.ops.cast(features, "bfloat16")
    loss = jaccard_supcon(f16, labels)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    assert_close(loss, oracles.jaccard_supcon(to_numpy(keras.ops.cast(f16, "float32")), labels))
    assert_close(loss, oracles.jaccard_supcon(features, labels), rtol=5e-2)


def test_loss_class_and_config(rng):
    features, labels = _batch(rng, 4, 2, 8, 3)
    loss = JaccardSupCon(temperature=0.1, threshold=0.5, base_temperature=0.2)
    assert_close(loss(labels, features), oracles.jaccard_supcon(features, labels, 0.1, 0.5, 0.2))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, JaccardSupCon) and restored.get_config() == loss.get_config()


def test_invalid_arguments(rng):
    features, labels = _batch(rng, 4, 2, 8, 3)
    with pytest.raises(ValueError, match="threshold"):
        jaccard_supcon(features, labels, threshold=1.5)
    with pytest.raises(ValueError, match="base_temperature"):
        jaccard_supcon(features, labels, base_temperature=0.0)
    with pytest.raises(ValueError, match="same B"):
        jaccard_supcon(features, labels[:3])
    with pytest.raises(ValueError, match="same B"):
        jaccard_supcon(features[:, 0], labels)
    with pytest.raises(ValueError, match="at least 2 rows"):
        jaccard_supcon(features[:1, :1], labels[:1])
