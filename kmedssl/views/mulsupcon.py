"""ModAn-MulSupCon views: two independently augmented crops of each image (paper 001 §4.3, Table 2; SPEC §2)."""

import keras

from kmedssl.views.augment import RandomGrayscale, RandomHorizontalFlip, RandomIntensityJitter, RandomResizedCrop


@keras.saving.register_keras_serializable(package="kmedssl")
class TwoCropAugmentation(keras.layers.Layer):
    """SimCLR-style TwoCropTransform of paper 001 (§4.3, Table 2): each image gives two augmented views.

    Each view is, independently per sample and per view: RandomResizedCrop(size, scale 0.2-1, ratio 3/4-4/3)
    -> horizontal flip (p 0.5) -> colour/intensity jitter (p 0.8) -> grey-scale (p 0.2, RGB only), with the
    layers of ``kmedssl.views.augment``. The two views come from two calls of the same layers, whose seed
    generators advance between calls, so they are independent draws. ``training=False`` gives twice the
    whole image resized to ``size x size``.

    Input: ``images`` ``(B, H, W, C)`` float in [0, 1] (before any mean/std normalisation).
    Output: ``(view_1, view_2)``, each ``(B, size, size, C)``, same dtype, in [0, 1].

    Args:
        size: output height and width of each view.
        scale: area range of the random crop, as a fraction of the image.
        flip: whether to flip horizontally with probability 0.5.
        jitter_probability: chance that a view is jittered (``RandomIntensityJitter``).
        grayscale_probability: chance that an RGB view is turned grey (no-op on 1 channel).
        seed: integer seed; the sub-layers use ``seed``, ``seed + 1``, ... (None: drawn from Python's RNG).
        ratio: aspect-ratio range of the random crop.
        brightness, contrast, saturation, hue: jitter strengths (saturation and hue act on RGB only).
    """

    def __init__(
        self,
        size,
        scale=(0.2, 1.0),
        flip=True,
        jitter_probability=0.8,
        grayscale_probability=0.2,
        seed=None,
        *,
        ratio=(3 / 4, 4 / 3),
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

        # === Layers (they validate the arguments) ===
        def sub_seed(offset):
            return None if seed is None else seed + offset

        self.crop = RandomResizedCrop(size, scale=scale, ratio=ratio, seed=sub_seed(0))
        self.horizontal_flip = RandomHorizontalFlip(0.5, seed=sub_seed(1)) if flip else None
        self.jitter = RandomIntensityJitter(
            brightness, contrast, jitter_probability, seed=sub_seed(2), saturation=saturation, hue=hue
        )
        self.grayscale = RandomGrayscale(grayscale_probability, seed=sub_seed(3))

        # === Config ===
        self.size, self.scale, self.ratio = self.crop.size, self.crop.scale, self.crop.ratio
        self.flip = bool(flip)
        self.jitter_probability = self.jitter.probability
        self.grayscale_probability = self.grayscale.probability
        self.seed = seed
        self.brightness, self.contrast = self.jitter.brightness, self.jitter.contrast
        self.saturation, self.hue = self.jitter.saturation, self.jitter.hue

    def build(self, input_shape):
        self.crop.build(input_shape)
        view_shape = self.compute_output_shape(input_shape)[0]
        for layer in (self.horizontal_flip, self.jitter, self.grayscale):
            if layer is not None:
                layer.build(view_shape)

    def augment(self, images, training=True):
        """One augmented view of ``images`` ``(B, H, W, C)`` -> ``(B, size, size, C)``."""
        views = self.crop(images, training=training)
        if self.horizontal_flip is not None:
            views = self.horizontal_flip(views, training=training)
        views = self.jitter(views, training=training)
        return self.grayscale(views, training=training)

    def call(self, images, training=True):
        return self.augment(images, training=training), self.augment(images, training=training)

    def compute_output_spec(self, images, training=True):
        view = keras.KerasTensor(self.compute_output_shape(images.shape)[0], dtype=images.dtype)
        return view, keras.KerasTensor(view.shape, dtype=images.dtype)

    def compute_output_shape(self, input_shape):
        view = (input_shape[0], self.size, self.size, input_shape[3])
        return view, view

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "size": self.size,
                "scale": self.scale,
                "flip": self.flip,
                "jitter_probability": self.jitter_probability,
                "grayscale_probability": self.grayscale_probability,
                "seed": self.seed,
                "ratio": self.ratio,
                "brightness": self.brightness,
                "contrast": self.contrast,
                "saturation": self.saturation,
                "hue": self.hue,
            }
        )
        return config


def crop_and_jitter(size, crop_scale, jitter, seed=None, name=None):
    """A ``TwoCropAugmentation`` of random resized crops (area ``crop_scale``) and brightness/contrast jitter of
    strength ``jitter`` (probability 0.8), without flip or grey-scale; None when both are off (``crop_scale`` of
    ``(1, 1)`` and ``jitter`` 0). S-PCL's parts and MVCon's views take it against global-appearance shortcuts."""
    crop_scale = tuple(float(v) for v in crop_scale)
    if crop_scale == (1.0, 1.0) and jitter == 0:
        return None
    return TwoCropAugmentation(
        size, scale=crop_scale, flip=False, grayscale_probability=0.0, jitter_probability=0.8 if jitter > 0 else 0.0,
        brightness=jitter, contrast=jitter, seed=seed, name=name,
    )
