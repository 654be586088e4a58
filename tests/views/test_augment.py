"""Tests of the two-view augmentation (kmedssl.views.augment, kmedssl.views.mulsupcon / simclr)."""

import keras
import numpy as np
import pytest
from keras import ops

from kmedssl.views.augment import (
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomIntensityJitter,
    RandomResizedCrop,
    crop_and_resize,
)
from kmedssl.views.mulsupcon import TwoCropAugmentation
from kmedssl.views.simclr import TwoCropAugmentation as SimCLRTwoCropAugmentation
from tests.helpers import to_numpy

LUMA = np.array([0.2989, 0.587, 0.114])
# One image shape for most tests (non-square, so height and width cannot be swapped unnoticed); on JAX each
# new shape recompiles every eager op, so sharing it keeps the file fast.
BATCH, HEIGHT, WIDTH = 16, 12, 16


def coordinate_ramp():
    """(BATCH, HEIGHT, WIDTH, 2): channel 0 = (y + 1/2) / HEIGHT, channel 1 = (x + 1/2) / WIDTH."""
    y, x = np.meshgrid((np.arange(HEIGHT) + 0.5) / HEIGHT, (np.arange(WIDTH) + 0.5) / WIDTH, indexing="ij")
    return np.broadcast_to(np.stack([y, x], axis=-1), (BATCH, HEIGHT, WIDTH, 2)).astype("float32")


def recover_boxes(crops):
    """Read (top, left, height, width) back from crops (B, size, size, 2) of ``coordinate_ramp()``.

    Output pixel i of a box (start, extent) samples coordinate start + (i + 1/2) * extent / size - 1/2, so
    (ramp value * image extent) = start + (i + 1/2) * extent / size is linear in i (exactly, for crops no larger
    than the output). Rows near the ends may be clamped at the image border, so only rows 2..size-3 are used.
    """
    size = crops.shape[1]
    index = np.arange(size) + 0.5
    boxes, residual = [], 0.0
    for line in (crops[:, :, size // 2, 0] * HEIGHT, crops[:, size // 2, :, 1] * WIDTH):  # (B, size) each
        extent = (line[:, -3] - line[:, 2]) * size / (size - 5)
        start = line[:, 2] - 2.5 * extent / size
        fitted = start[:, None] + index[None, :] * extent[:, None] / size
        residual = max(residual, np.abs(fitted - line)[:, 2:-2].max())
        boxes.append((start, extent))
    (top, height), (left, width) = boxes
    return top, left, height, width, residual


# === RandomResizedCrop ===


def test_crop_samples_boxes_in_scale_and_ratio():
    size = 16  # >= HEIGHT, WIDTH: every crop is enlarged, so linear resampling is exact
    crops = RandomResizedCrop(size, seed=3)(coordinate_ramp())
    assert tuple(crops.shape) == (BATCH, size, size, 2)
    assert keras.backend.standardize_dtype(crops.dtype) == "float32"
    crops = to_numpy(crops)
    assert crops.min() >= 0.0 and crops.max() <= 1.0
    top, left, height, width, residual = recover_boxes(crops)
    assert residual < 1e-4  # each crop is an axis-aligned box, resampled linearly
    area = height * width / (HEIGHT * WIDTH)
    assert np.all(area >= 0.2 - 1e-3) and np.all(area <= 1.0 + 1e-3)
    assert np.all(width / height >= 3 / 4 - 1e-3) and np.all(width / height <= 4 / 3 + 1e-3)
    assert np.all(top >= -1e-3) and np.all(top + height <= HEIGHT + 1e-3)
    assert np.all(left >= -1e-3) and np.all(left + width <= WIDTH + 1e-3)
    assert area.min() < 0.5 and area.max() > 0.6  # really sub-regions, of varied size
    assert np.std(top) > 0.3 and np.std(left) > 0.3  # and at varied places


def test_crop_fallback_is_centred_clamped_box():
    # No attempt fits at full area with aspect ratio >= 2 (the image's is 4/3): centred box of ratio 2.
    crops = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(2.0, 3.0), seed=0)(coordinate_ramp())
    top, left, height, width, _ = recover_boxes(to_numpy(crops))
    np.testing.assert_allclose(height, WIDTH / 2, atol=1e-3)
    np.testing.assert_allclose(width, WIDTH, atol=1e-3)
    np.testing.assert_allclose(top, (HEIGHT - WIDTH / 2) / 2, atol=1e-3)
    np.testing.assert_allclose(left, 0.0, atol=1e-3)


def test_crop_keeps_dtype():
    half = RandomResizedCrop(16, seed=0)(ops.cast(coordinate_ramp(), "bfloat16"))
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"


def test_crop_inference_resizes_whole_image():
    ramp = coordinate_ramp()
    out = to_numpy(RandomResizedCrop(16, seed=0)(ramp, training=False))  # rows 12 -> 16, columns unchanged
    np.testing.assert_allclose(out[..., 1], np.broadcast_to(ramp[:, :1, :, 1], out[..., 1].shape), atol=1e-6)
    expected = np.broadcast_to(((np.arange(16) + 0.5) / 16)[None, 1:-1, None], (BATCH, 14, 16))
    np.testing.assert_allclose(out[:, 1:-1, :, 0], expected, atol=1e-6)
    # Shrinking columns by 2 with the triangle kernel keeps a linear ramp exact away from the border.
    small = to_numpy(RandomResizedCrop(8, seed=0)(ramp, training=False))
    expected = np.broadcast_to(((np.arange(8) + 0.5) / 8)[None, None, 1:-1], (BATCH, 8, 6))
    np.testing.assert_allclose(small[:, :, 1:-1, 1], expected, atol=1e-6)


def test_crop_and_resize_picks_the_box(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")
    top, left = rng.integers(0, HEIGHT - 8, BATCH), rng.integers(0, WIDTH - 8, BATCH)
    boxes = np.stack([top, left, np.full(BATCH, 8), np.full(BATCH, 8)], axis=1).astype("float32")
    out = to_numpy(crop_and_resize(images, boxes, 8))
    for b in range(BATCH):  # whole-pixel box resized to its own size: a copy
        np.testing.assert_allclose(out[b], images[b, top[b] : top[b] + 8, left[b] : left[b] + 8], atol=1e-6)


def test_crop_reproducible_from_seed(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")
    first = to_numpy(RandomResizedCrop(16, seed=7)(images))
    np.testing.assert_array_equal(first, to_numpy(RandomResizedCrop(16, seed=7)(images)))
    assert not np.allclose(first, to_numpy(RandomResizedCrop(16, seed=8)(images)))
    layer = RandomResizedCrop(16, seed=7)
    assert not np.allclose(to_numpy(layer(images)), to_numpy(layer(images)))  # the generator advances


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 0}, {"size": 8, "scale": (0.5, 0.2)}, {"size": 8, "scale": (0.2, 1.5)}, {"size": 8, "ratio": (0, 1)}],
)
def test_crop_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Expected"):
        RandomResizedCrop(**kwargs)


# === Flip, jitter, grey-scale ===


def test_flip(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")
    np.testing.assert_array_equal(to_numpy(RandomHorizontalFlip(1.0, seed=0)(images)), images[:, :, ::-1])
    np.testing.assert_array_equal(to_numpy(RandomHorizontalFlip(0.0, seed=0)(images)), images)
    np.testing.assert_array_equal(to_numpy(RandomHorizontalFlip(1.0, seed=0)(images, training=False)), images)
    out = to_numpy(RandomHorizontalFlip(0.5, seed=0)(images))
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == images, axis=(1, 2, 3))
    assert np.all(flipped | kept) and flipped.any() and kept.any()


def test_jitter_on_grey_scale_is_a_per_sample_affine_intensity_map(rng):
    images = rng.uniform(0.25, 0.45, size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")  # no clipping can occur
    out = to_numpy(RandomIntensityJitter(probability=1.0, seed=0)(images))
    x = images.reshape(BATCH, -1).astype(np.float64)
    y = out.reshape(BATCH, -1).astype(np.float64)
    slope = np.array([np.polyfit(a, b, 1)[0] for a, b in zip(x, y)])
    intercept = np.array([np.polyfit(a, b, 1)[1] for a, b in zip(x, y)])
    np.testing.assert_allclose(slope[:, None] * x + intercept[:, None], y, atol=1e-5)
    assert np.all(slope >= 0.6 * 0.6 - 1e-4) and np.all(slope <= 1.4 * 1.4 + 1e-4)
    assert np.std(slope) > 0.05  # factors differ per sample


def test_jitter_probability_and_inference(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")
    np.testing.assert_array_equal(to_numpy(RandomIntensityJitter(probability=0.0, seed=0)(images)), images)
    np.testing.assert_array_equal(to_numpy(RandomIntensityJitter(seed=0)(images, training=False)), images)
    out = to_numpy(RandomIntensityJitter(probability=0.5, seed=0)(images))
    assert out.min() >= 0.0 and out.max() <= 1.0
    kept = np.all(out == images, axis=(1, 2, 3))
    assert kept.any() and not kept.all()


def test_jitter_ignores_saturation_and_hue_on_grey_scale(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")
    plain = RandomIntensityJitter(probability=1.0, seed=4, saturation=0.0, hue=0.0)(images)
    colourful = RandomIntensityJitter(probability=1.0, seed=4, saturation=1.0, hue=0.5)(images)
    np.testing.assert_array_equal(to_numpy(plain), to_numpy(colourful))


def test_jitter_saturation_keeps_luma_and_hue_keeps_value_and_chroma(rng):
    images = rng.uniform(0.3, 0.7, size=(BATCH, HEIGHT, WIDTH, 3)).astype("float32")
    saturated = to_numpy(RandomIntensityJitter(0.0, 0.0, 1.0, seed=0, saturation=0.4, hue=0.0)(images))
    assert not np.allclose(saturated, images)
    np.testing.assert_allclose(saturated @ LUMA, images @ LUMA, atol=1e-4)
    shifted = to_numpy(RandomIntensityJitter(0.0, 0.0, 1.0, seed=0, saturation=0.0, hue=0.1)(images))
    assert not np.allclose(shifted, images, atol=1e-3)
    np.testing.assert_allclose(shifted.max(-1), images.max(-1), atol=1e-5)
    np.testing.assert_allclose(shifted.max(-1) - shifted.min(-1), images.max(-1) - images.min(-1), atol=1e-5)
    grey = np.repeat(images[..., :1], 3, axis=-1)
    # Grey stays grey (up to the luma weights summing to 0.9999, as torchvision).
    np.testing.assert_allclose(to_numpy(RandomIntensityJitter(0.0, 0.0, 1.0, seed=0)(grey)), grey, atol=1e-4)


def test_grayscale(rng):
    colour = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 3)).astype("float32")
    grey = to_numpy(RandomGrayscale(1.0, seed=0)(colour))
    np.testing.assert_allclose(grey, np.repeat((colour @ LUMA)[..., None], 3, axis=-1), atol=1e-6)
    mixed = to_numpy(RandomGrayscale(0.5, seed=0)(colour))
    kept = np.all(mixed == colour, axis=(1, 2, 3))
    assert kept.any() and not kept.all()
    np.testing.assert_array_equal(to_numpy(RandomGrayscale(1.0, seed=0)(colour, training=False)), colour)
    single = colour[..., :1]
    np.testing.assert_array_equal(to_numpy(RandomGrayscale(1.0, seed=0)(single)), single)


# === TwoCropAugmentation ===


def test_two_crop_views(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 1)).astype("float32")
    view_1, view_2 = TwoCropAugmentation(8, seed=0)(images)
    for view in (view_1, view_2):
        assert tuple(view.shape) == (BATCH, 8, 8, 1)
        assert keras.backend.standardize_dtype(view.dtype) == "float32"
        assert to_numpy(view).min() >= 0.0 and to_numpy(view).max() <= 1.0
    assert not np.allclose(to_numpy(view_1), to_numpy(view_2))
    again_1, again_2 = TwoCropAugmentation(8, seed=0)(images)
    np.testing.assert_array_equal(to_numpy(view_1), to_numpy(again_1))
    np.testing.assert_array_equal(to_numpy(view_2), to_numpy(again_2))
    square = images[:, :, :HEIGHT]
    centre_1, centre_2 = TwoCropAugmentation(HEIGHT, seed=0)(square, training=False)
    np.testing.assert_allclose(to_numpy(centre_1), square, atol=1e-6)
    np.testing.assert_allclose(to_numpy(centre_2), square, atol=1e-6)
    assert SimCLRTwoCropAugmentation is TwoCropAugmentation


def test_two_crop_config_round_trip(rng):
    images = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 3)).astype("float32")
    layer = TwoCropAugmentation(8, scale=(0.3, 0.9), flip=False, jitter_probability=0.5, seed=2, hue=0.0)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()
    for a, b in zip(layer(images), clone(images)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    subs = (RandomResizedCrop(8, seed=1), RandomHorizontalFlip(0.3), RandomIntensityJitter(hue=0.2), RandomGrayscale())
    for sub in subs:
        assert type(sub).from_config(sub.get_config()).get_config() == sub.get_config()


class TwoViews(keras.Model):
    """Applies the augmentation in training mode inside the model, so predict() augments."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.augmentation = TwoCropAugmentation(12, seed=1)

    def call(self, images):
        view_1, view_2 = self.augmentation(images, training=True)
        return ops.concatenate([view_1, view_2], axis=-1)


def test_two_crop_in_compiled_model(rng):
    image = rng.uniform(size=(1, 16, 16, 1)).astype("float32")
    images = np.repeat(image, 8, axis=0)  # two batches of 4 copies of one image
    jit = keras.backend.backend() != "torch"  # XLA on tensorflow and jax (torch.compile is too slow for a test)
    model = TwoViews()
    model.compile(jit_compile=jit)
    out = model.predict(images, batch_size=4, verbose=0)
    assert out.shape == (8, 12, 12, 2)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out[..., 0], out[..., 1])  # the two views differ
    assert not np.allclose(out[0], out[1])  # samples differ
    assert not np.allclose(out[:4], out[4:])  # the seed state advances between compiled steps

    inputs = keras.Input((16, 16, 1))
    functional = keras.Model(inputs, TwoCropAugmentation(16, seed=0)(inputs))
    functional.compile(jit_compile=jit)
    centre_1, centre_2 = functional.predict(images, batch_size=4, verbose=0)  # inference: whole image
    np.testing.assert_allclose(centre_1, images, atol=1e-6)
    np.testing.assert_allclose(centre_2, images, atol=1e-6)
