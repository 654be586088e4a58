"""UperNet decoder over multi-level ViT / ResNet features (kmedssl.backbones.upernet) and the ViT's
``block_outputs``: shapes at 64 px, the adaptive pool, config round trips, and a few-step overfit of one phantom
batch of heart masks that must raise the Dice clearly."""

import keras
import numpy as np
import pytest

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.backbones.upernet import (
    UperNet,
    UperNetDecoder,
    adaptive_pool_matrix,
    default_block_indices,
    encoder_feature_maps,
    feature_channels,
)
from kmedssl.data.phantom import ChestCohort
from kmedssl.eval.dense import segmentation_loss
from kmedssl.eval.dense_metrics import dice_per_image
from tests.helpers import to_numpy


# One small architecture for every ViT test: on JAX each new weight shape and op compiles once, so models of the
# same shapes after the first are cheap. Shapes are checked symbolically; models run through the jitted
# ``predict`` and ``fit``.
def _vit():
    return VisionTransformer(image_size=64, patch_size=16, dim=32, depth=4, num_heads=2)


def _upernet():
    return UperNet(_vit(), num_classes=1, channels=16)


def test_vit_block_outputs_end_in_the_encoder_output(rng):
    vit = _vit()
    images = rng.random((2, 64, 64, 1), dtype=np.float32)
    outputs = vit.block_outputs(images, [1, 3])
    assert [tuple(o.shape) for o in outputs] == [(2, 17, 32)] * 2
    np.testing.assert_allclose(to_numpy(vit.norm(outputs[-1])), to_numpy(vit(images)), rtol=1e-5, atol=1e-5)
    for bad in ([], [2, 1], [0, 4], [1, 1]):
        with pytest.raises(ValueError, match="increasing block_indices"):
            vit.block_outputs(images, bad)
    assert default_block_indices(12) == [2, 5, 8, 11] and default_block_indices(4) == [0, 1, 2, 3]


def test_vit_upernet_shapes_and_config_round_trip(rng):
    model = _upernet()
    symbolic = keras.KerasTensor((2, 64, 64, 1))  # shapes without running (JAX compiles every eager op)
    maps = encoder_feature_maps(model.encoder, symbolic)
    assert [tuple(m.shape) for m in maps] == [(2, 4, 4, 32)] * 4 and feature_channels(model.encoder) == [32] * 4
    pyramid = model.neck(maps)
    assert [tuple(m.shape) for m in pyramid] == [(2, 16, 16, 32), (2, 8, 8, 32), (2, 4, 4, 32), (2, 2, 2, 32)]
    logits = model.predict(rng.random((2, 64, 64, 1), dtype=np.float32), verbose=0)
    assert logits.shape == (2, 64, 64, 1) and logits.dtype == np.float32 and np.all(np.isfinite(logits))
    clone = UperNet.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    decoder = UperNetDecoder(2, channels=8, pool_scales=(1, 2), dropout=0.1)
    assert UperNetDecoder.from_config(decoder.get_config()).get_config() == decoder.get_config()


def test_resnet_upernet_shapes(rng):
    resnet = ResNet18(width=8)  # test_resnet's width: on JAX its compiled initialisers are reused
    maps = encoder_feature_maps(resnet, keras.KerasTensor((2, 64, 64, 1)))  # the cifar stem: strides 1, 2, 4, 8
    assert [tuple(m.shape) for m in maps] == [(2, 64, 64, 8), (2, 32, 32, 16), (2, 16, 16, 32), (2, 8, 8, 64)]
    assert feature_channels(resnet) == [8, 16, 32, 64]
    logits = UperNet(resnet, num_classes=2, channels=16).predict(rng.random((2, 64, 64, 1), dtype=np.float32),
                                                                 verbose=0)
    assert logits.shape == (2, 64, 64, 2) and np.all(np.isfinite(logits))
    with pytest.raises(ValueError, match="VisionTransformer or a ResNet"):
        encoder_feature_maps(keras.layers.Dense(2), logits)


def test_adaptive_pool_matrix_hand_computed():
    np.testing.assert_allclose(adaptive_pool_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(adaptive_pool_matrix(4, 3), [[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(adaptive_pool_matrix(2, 3), [[1, 0], [0.5, 0.5], [0, 1]])  # bins repeat
    np.testing.assert_allclose(adaptive_pool_matrix(5, 1), [[0.2] * 5])


# === A few steps on one phantom batch ===


def heart_batch(n=4, size=64):
    """``n`` frontal phantom images ``(n, size, size, 1)`` and their heart masks (bool, same shape)."""
    cohort = ChestCohort(num_subjects=6, seed=0)
    records = [r for r in cohort.records if r.view in ("PA", "AP")][:n]
    images = np.stack([cohort.render(r, image_size=size) for r in records])[..., None].astype("float32")
    masks = np.stack([cohort.ground_truth(r, image_size=size).masks["heart"] for r in records])[..., None]
    return images, masks


def test_overfitting_one_phantom_batch_raises_dice():
    """25 Adam steps on 4 images: the Dice of the heart (inference mode, BatchNorm moving statistics) rises by
    more than 0.2; measured 0.00-0.26 before, 0.73-0.96 after, over seeds 0-2 on each backend (docs/evaluation.md)."""
    images, masks = heart_batch()
    assert masks.any(axis=(1, 2, 3)).all()
    model = _upernet()

    def dice():
        return dice_per_image(model.predict(images, verbose=0) > 0, masks).mean()

    before = dice()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=segmentation_loss)
    model.fit(images, masks.astype("float32"), batch_size=4, epochs=25, verbose=0)
    after = dice()
    assert after > before + 0.2, (before, after)
