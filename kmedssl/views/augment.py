"""Batched random image augmentations for two-view contrastive pretraining (paper 001 §4.3, Table 2).

Every layer takes a batch ``images`` ``(B, H, W, C)`` (channels last) of floats in [0, 1] and returns the same
dtype with values in [0, 1]. Each sample draws its own random parameters from the layer's
``keras.random.SeedGenerator`` (reproducible from ``seed``), all with ``keras.ops`` on whole batches, so the
layers run inside compiled models on torch, tensorflow and jax. Under data parallelism each replica keeps its
rows of one draw for the global batch (``kmedssl.distributed.replica_uniform``). ``training=False`` is deterministic: the crop
resizes the full image, the other layers are the identity. Arithmetic runs in float32 and is cast back.

The policy follows torchvision's transforms used by the paper's SimCLR-style TwoCropTransform, with two
documented simplifications: crop boxes are continuous (sub-pixel) rather than whole pixels, and the jitter
applies its operations in a fixed order (torchvision shuffles the order per image).
"""

import math
import numbers

import keras
from keras import ops

from kmedssl.distributed import replica_uniform

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


# === Helpers ===


def _grey(x):
    """Grey level of each pixel: luma for 3 channels, the channel mean otherwise. (B, H, W, C) -> (B, H, W, 1)."""
    if x.shape[-1] == 3:
        return ops.sum(x * ops.convert_to_tensor(_LUMA, dtype=x.dtype), axis=-1, keepdims=True)
    return ops.mean(x, axis=-1, keepdims=True)


def _check_images_shape(layer, input_shape):
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(
            f"Expected {layer} input of shape (batch, height, width, channels) with a known channel count. "
            f"Received: input_shape={input_shape}"
        )


def _check_interval(name, value, upper=None):
    """A pair ``(low, high)`` with ``0 < low <= high`` (and ``high <= upper`` when given), as floats."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected a pair (low, high). Received: {name}={value}") from None
    if not 0 < low <= high or (upper is not None and high > upper):
        bound = "" if upper is None else f" <= {upper}"
        raise ValueError(f"Expected 0 < low <= high{bound}. Received: {name}={value}")
    return low, high


def check_non_negative(name, value):
    """``value`` as a float, or ``ValueError("Expected {name} >= 0. ...")`` (NaN too): jitter strengths."""
    if not value >= 0:
        raise ValueError(f"Expected {name} >= 0. Received: {name}={value}")
    return float(value)


def _check_probability(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected a probability in [0, 1]. Received: {name}={value}")
    return float(value)


def _batch_uniform(images, seed_generator, minval=0.0, maxval=1.0):
    """One uniform draw per sample, shaped (B, 1, 1, 1) to broadcast over an image batch."""
    shape = (ops.shape(images)[0], 1, 1, 1)
    return replica_uniform(shape, minval=minval, maxval=maxval, seed=seed_generator)


def _interpolation_matrix(start, extent, size, length):
    """Resampling weights along one axis, (B,) boxes -> (B, size, length).

    Output index i samples the input at the pixel-centre coordinate
    ``c_i = start + (i + 1/2) * extent / size - 1/2`` with the triangle kernel
    ``k(t) = max(0, 1 - |t| / s)``, ``s = max(1, extent / size)``, normalised over the ``length`` input pixels.
    s = 1 is bilinear interpolation; s > 1 widens the kernel when the box is shrunk (anti-aliasing, as
    PIL and torchvision's ``antialias=True``). Normalising over the image's pixels clamps samples at the border.
    """
    step = extent / size  # (B,)
    index = ops.arange(size, dtype="float32")  # (size,)
    centres = start[:, None] + (index[None, :] + 0.5) * step[:, None] - 0.5  # (B, size)
    support = ops.maximum(step, 1.0)[:, None, None]  # (B, 1, 1)
    pixels = ops.cast(ops.arange(length), "float32")  # (length,)
    weights = ops.relu(1.0 - ops.abs(pixels[None, None, :] - centres[:, :, None]) / support)  # (B, size, length)
    return weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-12)


def crop_and_resize(images, boxes, size):
    """Crops one box per image and resizes it to ``size x size`` with (anti-aliased) bilinear sampling.

    Separable resampling written as two batched matrix products, ``out_b = R_y,b @ image_b @ R_x,b^T``,
    with the weights of ``_interpolation_matrix`` (no gather, no loop over the batch).

    Input: ``images`` ``(B, H, W, C)``; ``boxes`` ``(B, 4)`` = ``(top, left, height, width)`` in pixels, where
    pixel ``i`` covers ``[i, i + 1)``; boxes are expected inside the image (samples farther out than the
    kernel support read 0).

    Output: ``(B, size, size, C)`` float32.
    """
    x = ops.cast(images, "float32")
    boxes = ops.cast(boxes, "float32")
    shape = ops.shape(x)
    rows = _interpolation_matrix(boxes[:, 0], boxes[:, 2], size, shape[1])  # (B, size, H)
    cols = _interpolation_matrix(boxes[:, 1], boxes[:, 3], size, shape[2])  # (B, size, W)
    x = ops.einsum("bih,bhwc->biwc", rows, x)  # (B, size, W, C)
    return ops.einsum("bjw,biwc->bijc", cols, x)  # (B, size, size, C)


class _ImageAugmentation(keras.layers.Layer):
    """Shared set-up: no autocasting (output dtype = input dtype), one seed generator, shape checks."""

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        _check_images_shape(type(self).__name__, input_shape)

    def compute_output_spec(self, images, training=True):
        return keras.KerasTensor(self.compute_output_shape(images.shape), dtype=images.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


# === Layers ===


@keras.saving.register_keras_serializable(package="kmedssl")
class RandomResizedCrop(_ImageAugmentation):
    """Random crop of random area and aspect ratio, resized to ``size x size`` (torchvision's RandomResizedCrop).

    Per sample, as torchvision: up to 10 attempts draw an area fraction ``a ~ U(scale)`` and an aspect ratio
    ``r = exp(U(log ratio))``, giving ``w = sqrt(a H W r)``, ``h = sqrt(a H W / r)``; the first attempt with
    ``w <= W`` and ``h <= H`` is kept and placed at ``top ~ U(0, H - h)``, ``left ~ U(0, W - w)``. If no
    attempt fits, the fallback is the centred crop of the whole image with its aspect ratio clamped to
    ``ratio``. The box is resized with ``crop_and_resize`` (bilinear, anti-aliased when shrinking). Boxes
    are continuous, not rounded to whole pixels. With ``training=False`` the whole image is resized.

    Input: ``images`` ``(B, H, W, C)`` float in [0, 1].
    Output: ``(B, size, size, C)``, same dtype, in [0, 1].

    Args:
        size: output height and width in pixels.
        scale: ``(low, high)`` range of the crop's area as a fraction of the image's (paper 001: 0.2-1).
        ratio: ``(low, high)`` range of the crop's aspect ratio width / height.
        seed: integer seed of the layer's ``keras.random.SeedGenerator`` (None: drawn from Python's RNG).
    """

    attempts = 10

    def __init__(self, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"Expected a positive integer size. Received: size={size}")
        super().__init__(seed=seed, **kwargs)
        self.size = int(size)
        self.scale = _check_interval("scale", scale, upper=1.0)
        self.ratio = _check_interval("ratio", ratio)

    def sample_boxes(self, images):
        """Random crop boxes ``(B, 4)`` = ``(top, left, height, width)`` in pixels for ``images`` ``(B, H, W, C)``."""
        shape = ops.shape(images)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        draws = (shape[0], self.attempts)
        area = height * width * replica_uniform(draws, *self.scale, seed=self.seed_generator)  # (B, 10)
        log_ratio = replica_uniform(draws, *(math.log(r) for r in self.ratio), seed=self.seed_generator)
        aspect = ops.exp(log_ratio)
        crop_w, crop_h = ops.sqrt(area * aspect), ops.sqrt(area / aspect)  # (B, 10)
        fits = ops.logical_and(crop_w <= width, crop_h <= height)  # (B, 10)
        # First fitting attempt: the smallest attempt index among the fitting ones (no ties).
        index = ops.cast(ops.arange(self.attempts), "float32")
        first = ops.argmin(ops.where(fits, index[None, :], float(self.attempts)), axis=1)  # (B,)
        pick = ops.one_hot(first, self.attempts, dtype="float32")  # (B, 10)
        crop_w, crop_h = ops.sum(crop_w * pick, axis=1), ops.sum(crop_h * pick, axis=1)  # (B,)
        found = ops.any(fits, axis=1)  # (B,)
        # Fallback: the whole image, aspect ratio clamped to [ratio_low, ratio_high], centred.
        low, high = self.ratio
        image_ratio = width / height
        fallback_w = ops.where(image_ratio > high, height * high, width)
        fallback_h = ops.where(image_ratio < low, width / low, height)
        crop_w = ops.where(found, crop_w, fallback_w)
        crop_h = ops.where(found, crop_h, fallback_h)
        placement = replica_uniform((shape[0], 2), seed=self.seed_generator)  # (B, 2)
        placement = ops.where(found[:, None], placement, 0.5)
        top = placement[:, 0] * (height - crop_h)
        left = placement[:, 1] * (width - crop_w)
        return ops.stack([top, left, crop_h, crop_w], axis=1)  # (B, 4)

    def call(self, images, training=True):
        if training:
            boxes = self.sample_boxes(images)
        else:
            shape = ops.shape(images)
            ones = ops.ones_like(ops.cast(images[:, 0, 0, 0], "float32"))  # (B,)
            height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
            boxes = ops.stack([0.0 * ones, 0.0 * ones, height * ones, width * ones], axis=1)  # (B, 4)
        crops = crop_and_resize(images, boxes, self.size)
        return ops.cast(ops.clip(crops, 0.0, 1.0), images.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "scale": self.scale, "ratio": self.ratio})
        return config


@keras.saving.register_keras_serializable(package="kmedssl")
class RandomHorizontalFlip(_ImageAugmentation):
    """Left-right flip of each sample with probability ``probability`` (torchvision's RandomHorizontalFlip).

    Input: ``images`` ``(B, H, W, C)``. Output: same shape and dtype.

    Args:
        probability: chance that a sample is flipped.
        seed: integer seed of the layer's ``keras.random.SeedGenerator``.
    """

    def __init__(self, probability=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.probability = _check_probability("probability", probability)

    def call(self, images, training=True):
        if not training:
            return images
        flip = _batch_uniform(images, self.seed_generator) < self.probability  # (B, 1, 1, 1)
        return ops.where(flip, ops.flip(images, axis=2), images)

    def get_config(self):
        config = super().get_config()
        config.update({"probability": self.probability})
        return config


@keras.saving.register_keras_serializable(package="kmedssl")
class RandomIntensityJitter(_ImageAugmentation):
    """Colour jitter applied to each sample with probability ``probability`` (torchvision's ColorJitter).

    For an applied sample, each factor is drawn per sample and the operations run in this order, each
    followed by clipping to [0, 1] (``g(x)`` is the grey level: luma for RGB, the channel mean otherwise):

    - brightness: ``x <- b x``, ``b ~ U(max(0, 1 - brightness), 1 + brightness)``;
    - contrast: ``x <- c x + (1 - c) mean(g(x))`` (mean over the image), ``c ~ U(max(0, 1 - contrast), 1 + contrast)``;
    - saturation (3 channels only): ``x <- s x + (1 - s) g(x)``, ``s ~ U(max(0, 1 - saturation), 1 + saturation)``;
    - hue (3 channels only): the HSV hue is shifted by ``d ~ U(-hue, hue)`` (modulo 1).

    Grey-scale input (any channel count but 3, e.g. 1-channel X-rays) gets only brightness and contrast.
    The paper (001 Table 2) names ColorJitter with p = 0.8 without strengths; the defaults are SimCLR's and
    SupCon's ``ColorJitter(0.4, 0.4, 0.4, 0.1)``. torchvision shuffles the four operations per image; here
    the order is fixed.

    Input: ``images`` ``(B, H, W, C)`` float in [0, 1]. Output: same shape and dtype, in [0, 1].

    Args:
        brightness: strength of the brightness factor (>= 0; 0 disables it).
        contrast: strength of the contrast factor (>= 0; 0 disables it).
        probability: chance that a sample is jittered at all.
        seed: integer seed of the layer's ``keras.random.SeedGenerator``.
        saturation: strength of the saturation factor, 3-channel input only (>= 0; 0 disables it).
        hue: largest hue shift in turns, 3-channel input only (in [0, 0.5]; 0 disables it).
    """

    def __init__(
        self, brightness=0.4, contrast=0.4, probability=0.8, seed=None, *, saturation=0.4, hue=0.1, **kwargs
    ):
        super().__init__(seed=seed, **kwargs)
        self.brightness = check_non_negative("brightness", brightness)
        self.contrast = check_non_negative("contrast", contrast)
        self.saturation = check_non_negative("saturation", saturation)
        if not 0 <= hue <= 0.5:
            raise ValueError(f"Expected hue in [0, 0.5]. Received: hue={hue}")
        self.probability = _check_probability("probability", probability)
        self.hue = float(hue)

    def _factor(self, x, strength):
        return _batch_uniform(x, self.seed_generator, max(0.0, 1.0 - strength), 1.0 + strength)  # (B, 1, 1, 1)

    def jitter(self, x):
        """Jitter every sample of ``x`` ``(B, H, W, C)`` float32 (no probability gate)."""
        colour = x.shape[-1] == 3
        if self.brightness > 0:
            x = ops.clip(x * self._factor(x, self.brightness), 0.0, 1.0)
        if self.contrast > 0:
            c = self._factor(x, self.contrast)
            mean = ops.mean(_grey(x), axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
            x = ops.clip(c * x + (1.0 - c) * mean, 0.0, 1.0)
        if colour and self.saturation > 0:
            s = self._factor(x, self.saturation)
            x = ops.clip(s * x + (1.0 - s) * _grey(x), 0.0, 1.0)
        if colour and self.hue > 0:
            shift = _batch_uniform(x, self.seed_generator, -self.hue, self.hue)  # (B, 1, 1, 1)
            hsv = ops.image.rgb_to_hsv(x, data_format="channels_last")
            hue = ops.mod(hsv[..., :1] + shift, 1.0)
            hsv = ops.concatenate([hue, hsv[..., 1:]], axis=-1)
            x = ops.clip(ops.image.hsv_to_rgb(hsv, data_format="channels_last"), 0.0, 1.0)
        return x

    def call(self, images, training=True):
        if not training:
            return images
        x = ops.cast(images, "float32")
        apply = _batch_uniform(x, self.seed_generator) < self.probability  # (B, 1, 1, 1)
        return ops.cast(ops.where(apply, self.jitter(x), x), images.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "brightness": self.brightness,
                "contrast": self.contrast,
                "probability": self.probability,
                "saturation": self.saturation,
                "hue": self.hue,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kmedssl")
class RandomGrayscale(_ImageAugmentation):
    """Replaces an RGB sample by its luma in all 3 channels with probability ``probability`` (torchvision's
    RandomGrayscale). Input without 3 channels (e.g. 1-channel X-rays) has no colour and passes unchanged.

    Input: ``images`` ``(B, H, W, C)``. Output: same shape and dtype.

    Args:
        probability: chance that an RGB sample is turned grey.
        seed: integer seed of the layer's ``keras.random.SeedGenerator``.
    """

    def __init__(self, probability=0.2, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.probability = _check_probability("probability", probability)

    def call(self, images, training=True):
        if not training or images.shape[-1] != 3:
            return images
        x = ops.cast(images, "float32")
        grey = ops.broadcast_to(_grey(x), ops.shape(x))  # (B, H, W, 3)
        apply = _batch_uniform(x, self.seed_generator) < self.probability  # (B, 1, 1, 1)
        return ops.cast(ops.clip(ops.where(apply, grey, x), 0.0, 1.0), images.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"probability": self.probability})
        return config
