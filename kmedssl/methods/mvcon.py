"""Multi-view contrastive pretraining: frontal and lateral views of one study are positives
(paper 000 §3, Eq. 2; SPEC §3.2)."""

import keras

from kmedssl.losses.mvcon import multiview_infonce
from kmedssl.losses.replicas import validate_gather
from kmedssl.methods.base import PretrainingMethod
from kmedssl.views.mulsupcon import crop_and_jitter


@keras.saving.register_keras_serializable(package="kmedssl")
class MVCon(PretrainingMethod):
    """Multi-view InfoNCE between the CLS embeddings of a study's frontal and lateral images.

    Args:
        encoder: a ``kmedssl.backbones.VisionTransformer``.
        temperature: τ of Eq. 2 (paper 0.1; the authors' code 0.5).
        exclude_positive: ``True`` is exactly Eq. 2 (positive not in the denominator); ``False`` is the
            NT-Xent of the authors' code.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from each replica's
            own rows); the same on one device (docs/distributed.md).
        crop_scale: area range ``(low, high)`` of an independent random resized crop of each view (``(1, 1)``:
            none). Paper 000 §4 trains "with random resize cropping [...] and jitter" without giving the values.
        jitter: brightness and contrast strength of an independent intensity jitter of each view (probability
            0.8; ``kmedssl.views.augment.RandomIntensityJitter``); 0: none.
        seed: seed of the augmentation.

    Input: ``{"frontal": (B, H, W, C), "lateral": (B, H, W, C)}``.
    """

    loss_terms = ("infonce",)
    images_per_sample = 2
    contrastive = True

    def __init__(self, encoder, temperature=0.1, exclude_positive=True, gather="global", crop_scale=(1.0, 1.0),
                 jitter=0.0, seed=None, **kwargs):
        super().__init__(encoder, **kwargs)
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}")
        self.temperature = float(temperature)
        self.exclude_positive = bool(exclude_positive)
        validate_gather(gather)
        self.gather = gather
        self.crop_scale = tuple(float(v) for v in crop_scale)
        if not 0.0 <= jitter:
            raise ValueError(f"Expected jitter >= 0. Received: jitter={jitter}")
        self.jitter = float(jitter)
        self.seed = seed
        self.augment = None

    def build(self, input_shape):
        self.augment = crop_and_jitter(input_shape["frontal"][1], self.crop_scale, self.jitter, self.seed,
                                       name="view_augmentation")
        if self.augment is not None:
            self.augment.build(input_shape["frontal"])

    def call(self, inputs, training=False):
        frontal, lateral = inputs["frontal"], inputs["lateral"]
        if self.augment is not None:
            frontal = self.augment.augment(frontal, training=training)
            lateral = self.augment.augment(lateral, training=training)
        return {
            "z_frontal": self.encoder(frontal, training=training)[:, 0],
            "z_lateral": self.encoder(lateral, training=training)[:, 0],
        }

    def compute_loss_terms(self, x, y, y_pred, training):
        loss = multiview_infonce(
            y_pred["z_frontal"], y_pred["z_lateral"], self.temperature, self.exclude_positive, gather=self.gather
        )
        return loss, {"infonce": loss}

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, exclude_positive=self.exclude_positive, gather=self.gather,
                      crop_scale=self.crop_scale, jitter=self.jitter, seed=self.seed)
        return config
