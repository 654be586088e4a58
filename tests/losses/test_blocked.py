"""The row-blocked path of the contrastive losses (kmedssl.losses.blocked): same value and gradients as the
float64 oracles (paper formulas, SPEC §3) and as the naive path, with small forced tiles over odd sizes."""

import keras
import numpy as np
import pytest

from kmedssl.losses import (
    JaccardSupCon,
    NTXent,
    TSPInfoNCE,
    jaccard_supcon,
    multiview_infonce,
    nt_xent,
    tsp_infonce,
)
from kmedssl.losses import blocked
from tests.helpers import assert_close, finite_difference_grad, to_numpy, value_and_grad
from tests.losses import oracles


def _pair(rng, batch, dim):
    return rng.normal(size=(2, batch, dim)).astype("float32")


def _labelled(rng, batch, views, dim, classes):
    features = rng.normal(size=(batch, views, dim)).astype("float32")
    labels = (rng.random((batch, classes)) < 0.5).astype("float32")
    labels[0] = 0.0  # an empty label row
    labels[-1] = labels[-2]  # a sure positive pair
    return features, labels


def _value_and_grad(fn, *args):
    """``tests.helpers.value_and_grad``, under jax.jit on jax (one compilation instead of eager dispatch)."""
    if keras.backend.backend() != "jax":
        return value_and_grad(fn, *args)
    import jax

    value, grads = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))(*args)
    return float(value), [np.asarray(g, dtype=np.float64) for g in grads]


def _check_against_oracle_and_naive(fn, oracle, args, block_size):
    """Value and gradients of ``fn(*args, block_size)`` vs the oracle (finite differences) and the naive path."""
    value, grads = _value_and_grad(lambda *xs: fn(*xs, block_size), *args)
    naive_value, naive_grads = _value_and_grad(lambda *xs: fn(*xs, 0), *args)
    expected = finite_difference_grad(oracle, list(args))
    np.testing.assert_allclose(value, oracle(*args), rtol=1e-5)
    np.testing.assert_allclose(value, naive_value, rtol=1e-5)
    for grad, naive_grad, reference in zip(grads, naive_grads, expected):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad, naive_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("batch, dim, block_size", [(7, 5, 3), (1, 3, 8)])
def test_tsp_infonce_with_tensor_scale_and_kappa(rng, batch, dim, block_size):
    z_1, z_2 = _pair(rng, batch, dim)

    def fn(a, b, scale, kappa, block):
        return tsp_infonce(a, b, kappa=kappa, scale=scale, block_size=block)

    def oracle(a, b, scale, kappa):
        return oracles.tsp_infonce(a, b, float(kappa), float(scale))

    _check_against_oracle_and_naive(fn, oracle, (z_1, z_2, np.float32(5.0), np.float32(4.0)), block_size)


@pytest.mark.parametrize("batch, dim, block_size, exclude_positive", [(5, 3, 4, True), (2, 4, 1, False)])
def test_multiview_infonce(rng, batch, dim, block_size, exclude_positive):
    z_f, z_l = _pair(rng, batch, dim)

    def fn(a, b, block):
        return multiview_infonce(a, b, 0.2, exclude_positive, block_size=block)

    def oracle(a, b):
        return oracles.multiview_infonce(a, b, 0.2, exclude_positive)

    _check_against_oracle_and_naive(fn, oracle, (z_f, z_l), block_size)


def test_nt_xent(rng):
    z_a, z_b = _pair(rng, 3, 3)
    _check_against_oracle_and_naive(
        lambda a, b, block: nt_xent(a, b, 0.3, block_size=block), lambda a, b: oracles.nt_xent(a, b, 0.3), (z_a, z_b), 4
    )


@pytest.mark.parametrize("batch, views, block_size, threshold", [(5, 3, 4, 0.3), (4, 1, 3, 0.0)])
def test_jaccard_supcon(rng, batch, views, block_size, threshold):
    features, labels = _labelled(rng, batch, views, 3, 3)

    def fn(f, block):
        return jaccard_supcon(f, labels, 0.2, threshold, 0.1, block_size=block)

    def oracle(f):
        return oracles.jaccard_supcon(f, labels, 0.2, threshold, 0.1)

    _check_against_oracle_and_naive(fn, oracle, (features,), block_size)


def test_jaccard_supcon_all_empty_labels_give_zero(rng):
    features = rng.normal(size=(5, 2, 3)).astype("float32")
    empty = np.zeros((5, 4), dtype="float32")
    assert_close(jaccard_supcon(features, empty, block_size=3), 0.0)
    assert_close(jaccard_supcon(features, empty, threshold=0.0, block_size=3), 0.0)


def _compiled_value_and_grads(fn, dim):
    """``(value, grads)`` of ``fn(z_1, z_2, scale)`` under the backend's compiler: jax.jit of jax.grad, a
    tf.function with an unknown batch size (so the row count is only known when it runs); eager on torch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec((None, dim)), tf.TensorSpec((None, dim)), tf.TensorSpec(())])
        def compiled(a, b, scale):
            with tf.GradientTape() as tape:
                tape.watch([a, b, scale])
                value = fn(a, b, scale)
            return value, tape.gradient(value, [a, b, scale])

        return compiled
    return lambda *args: value_and_grad(fn, *args)


@pytest.mark.parametrize("block_size", [3, None])
def test_compiled_with_tensor_scale(rng, monkeypatch, block_size):
    """block_size=None with AUTO_BLOCKED_ROWS lowered: the auto rule picks the blocked path (at run time
    under tf.function, whose batch size is unknown while tracing)."""
    monkeypatch.setattr(blocked, "AUTO_BLOCKED_ROWS", 8)
    z_1, z_2 = _pair(rng, 5, 4)
    scale = np.float32(6.0)
    compiled = _compiled_value_and_grads(lambda a, b, s: tsp_infonce(a, b, 2.0, s, block_size=block_size), 4)
    value, grads = compiled(z_1, z_2, scale)
    expected = finite_difference_grad(lambda a, b, s: oracles.tsp_infonce(a, b, 2.0, float(s)), [z_1, z_2, scale])
    np.testing.assert_allclose(to_numpy(value), oracles.tsp_infonce(z_1, z_2, 2.0, 6.0), rtol=1e-5)
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(to_numpy(grad), reference, rtol=1e-4, atol=1e-5)


def test_auto_rule_uses_the_row_count(rng, monkeypatch):
    calls = []
    blocked_loss = blocked._blocked_loss
    monkeypatch.setattr(blocked, "_blocked_loss", lambda *args: calls.append(args) or blocked_loss(*args))
    monkeypatch.setattr(blocked, "AUTO_BLOCKED_ROWS", 8)
    monkeypatch.setattr(blocked, "DEFAULT_BLOCK_SIZE", 3)
    for batch, expected_calls in ((4, 0), (5, 1)):  # 2B = 8 rows: naive; 10 rows: blocked
        z_1, z_2 = _pair(rng, batch, 3)
        assert_close(tsp_infonce(z_1, z_2, 4.0, 5.0), oracles.tsp_infonce(z_1, z_2, 4.0, 5.0))
        assert len(calls) == expected_calls
    features, labels = _labelled(rng, 3, 3, 4, 3)  # VB = 9 rows: blocked
    assert_close(jaccard_supcon(features, labels), oracles.jaccard_supcon(features, labels))
    assert len(calls) == 2
    assert_close(jaccard_supcon(features, labels, block_size=0), oracles.jaccard_supcon(features, labels))
    assert len(calls) == 2  # block_size=0: always the plain matrices


def test_train_step_in_fit_matches_naive(rng):
    """A tiny model trained by model.fit (compiled train step on every backend) with a trainable log-scale:
    the blocked path gives the same weights after two steps as the naive path."""
    x = rng.normal(size=(7, 2, 3)).astype("float32")

    class Tiny(keras.Model):
        def __init__(self, block_size):
            super().__init__()
            self.block_size = block_size
            self.dense = keras.layers.Dense(4, kernel_initializer="glorot_uniform")
            self.log_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(2.0))

        def call(self, inputs):
            return self.dense(inputs)  # (B, 2, 4)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            scale = keras.ops.clip(keras.ops.exp(self.log_scale), 1.0, 100.0)
            return tsp_infonce(y_pred[:, 0], y_pred[:, 1], kappa=4.0, scale=scale, block_size=self.block_size)

    weights = []
    for block_size in (None, 3):
        keras.utils.set_random_seed(0)
        model = Tiny(block_size)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(x, epochs=2, batch_size=7, shuffle=False, verbose=0)
        weights.append([to_numpy(w) for w in model.weights])
    for naive, blocked_weight in zip(*weights):
        np.testing.assert_allclose(blocked_weight, naive, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights[0][-1], 2.0)  # the log-scale was trained


def test_bfloat16_gives_float32_scalar(rng):
    z_1, z_2 = _pair(rng, 5, 8)
    a16, b16 = (keras.ops.cast(z, "bfloat16") for z in (z_1, z_2))
    loss = tsp_infonce(a16, b16, block_size=4)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and tuple(loss.shape) == ()
    assert_close(loss, oracles.tsp_infonce(*(to_numpy(keras.ops.cast(z, "float32")) for z in (a16, b16))))


def test_loss_classes_pass_block_size(rng):
    features, labels = _labelled(rng, 4, 2, 5, 3)
    loss = JaccardSupCon(temperature=0.1, block_size=3)
    assert_close(loss(labels, features), oracles.jaccard_supcon(features, labels, 0.1, 0.3, 0.07))
    for instance in (loss, TSPInfoNCE(block_size=2), NTXent(block_size=5)):
        restored = keras.losses.deserialize(keras.losses.serialize(instance))
        assert restored.get_config() == instance.get_config() and restored.block_size == instance.block_size


@pytest.mark.parametrize("block_size", [-2, 2.5, True, "4"])
def test_invalid_block_size(rng, block_size):
    z_1, z_2 = _pair(rng, 3, 4)
    features, labels = _labelled(rng, 3, 2, 4, 3)
    for call in (
        lambda: tsp_infonce(z_1, z_2, block_size=block_size),
        lambda: nt_xent(z_1, z_2, block_size=block_size),
        lambda: multiview_infonce(z_1, z_2, block_size=block_size),
        lambda: jaccard_supcon(features, labels, block_size=block_size),
        lambda: TSPInfoNCE(block_size=block_size),
    ):
        with pytest.raises(ValueError, match="block_size"):
            call()
