"""Heads of kmedssl.backbones.heads (moved from kmedssl.methods): registered names unchanged, so configs and
.keras files written before the move (module ``kmedssl.methods.ace`` / ``kmedssl.methods.heads``) still load."""

import keras
import numpy as np
import pytest

from kmedssl.backbones.heads import Composer, Decomposer, DINOHead, ProjectionHead
from tests.helpers import assert_close

# (class, constructor arguments, input shape, module the class lived in before issue 14)
HEADS = [
    (ProjectionHead, dict(hidden_dim=8, output_dim=4), (3, 6), "kmedssl.methods.heads"),
    (DINOHead, dict(output_dim=16, hidden_dim=8, bottleneck_dim=4), (3, 6), "kmedssl.methods.ace"),
    (Composer, dict(dim=6), (3, 16, 6), "kmedssl.methods.ace"),
    (Decomposer, dict(dim=6), (3, 16, 6), "kmedssl.methods.ace"),
]


@pytest.mark.parametrize("cls, kwargs, shape, old_module", HEADS, ids=lambda v: getattr(v, "__name__", ""))
def test_head_deserialises_from_its_pre_move_config(cls, kwargs, shape, old_module, rng):
    head = cls(**kwargs, name="head")
    x = rng.normal(size=shape).astype("float32")
    expected = head(x)
    config = keras.saving.serialize_keras_object(head)
    assert config["registered_name"] == f"kmedssl>{cls.__name__}"
    config["module"] = old_module  # as written by kmedssl before the heads moved
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is cls and restored.get_config() == head.get_config()
    restored(x)
    restored.set_weights(head.get_weights())
    assert_close(restored(x), keras.ops.convert_to_numpy(expected), rtol=1e-6, atol=1e-6)


def test_dino_head_output_is_normalised_features_times_unit_prototypes(rng):
    head = DINOHead(output_dim=5, hidden_dim=8, bottleneck_dim=4)
    x = rng.normal(size=(3, 6)).astype("float32")
    out = keras.ops.convert_to_numpy(head(x)).astype(np.float64)
    h = keras.ops.convert_to_numpy(head.bottleneck(head.hidden_2(head.hidden_1(x)))).astype(np.float64)
    v = keras.ops.convert_to_numpy(head.prototypes).astype(np.float64)
    expected = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=0, keepdims=True))
    assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_projection_head_with_batch_norm_matches_a_float64_reference(rng):
    """``batch_norm=True``: ``W_2 ReLU(BN(x W_1)) + b_2``, BN over the batch in training (biased variance, eps 1e-3)
    and with its moving statistics in inference; the hidden layer has no bias."""
    head = ProjectionHead(hidden_dim=8, output_dim=4, batch_norm=True)
    head.build((5, 6))
    x = rng.normal(size=(5, 6)).astype("float32")
    w1 = keras.ops.convert_to_numpy(head.hidden.kernel).astype(np.float64)
    w2, b2 = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in (head.output_projection.kernel,
                                                                         head.output_projection.bias))
    assert head.hidden.bias is None
    h = x.astype(np.float64) @ w1
    expected = np.maximum((h - h.mean(0)) / np.sqrt(h.var(0) + 1e-3), 0.0) @ w2 + b2
    assert_close(head(x, training=True), expected, rtol=1e-4, atol=1e-5)
    head.norm.moving_mean.assign(np.zeros(8, "float32"))  # the training call moved the statistics: reset them
    head.norm.moving_variance.assign(np.ones(8, "float32"))
    inference = np.maximum(h / np.sqrt(1.0 + 1e-3), 0.0) @ w2 + b2  # moving mean 0, variance 1
    assert_close(head(x, training=False), inference, rtol=1e-4, atol=1e-5)
    assert ProjectionHead(batch_norm=True).get_config()["batch_norm"] is True
