"""Augmentation of a study's frontal and lateral images for the multi-view methods (paper 000 §4)."""

from kmedssl.views.augment import check_non_negative
from kmedssl.views.mulsupcon import crop_and_jitter


class AugmentedViews:
    """Mixin of ``MVCon`` and ``MVMAE``: in training, each view replaced by its own random resized crop (area
    ``crop_scale``) and intensity jitter (strength ``jitter``, probability 0.8), ``crop_and_jitter``. Paper 000
    §4 trains "with random resize cropping, horizontal flipping, and jitter" without giving the values; off
    (``crop_scale=(1, 1)``, ``jitter=0``) the views pass unchanged.

    Inputs: ``{"frontal": (B, H, W, C), "lateral": (B, H, W, C)}``.
    """

    def init_view_augmentation(self, crop_scale, jitter, seed):
        """Checks and stores the settings (``build`` makes the layer); ``seed`` seeds the augmentation."""
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.jitter = check_non_negative("jitter", jitter)
        self.seed = seed
        self.augment = None

    def build(self, input_shape):
        self.augment = crop_and_jitter(input_shape["frontal"][1], self.crop_scale, self.jitter, self.seed,
                                       name="view_augmentation")
        if self.augment is not None:
            self.augment.build(input_shape["frontal"])

    def augmented_views(self, inputs, training):
        """``(frontal, lateral)``: each independently augmented when ``training``, else the inputs' views."""
        frontal, lateral = inputs["frontal"], inputs["lateral"]
        if self.augment is None:
            return frontal, lateral
        return self.augment.augment(frontal, training=training), self.augment.augment(lateral, training=training)

    def view_augmentation_config(self):
        return dict(crop_scale=self.crop_scale, jitter=self.jitter, seed=self.seed)
