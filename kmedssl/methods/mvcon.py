"""Multi-view contrastive pretraining: frontal and lateral views of one study are positives
(paper 000 §3, Eq. 2; SPEC §3.2)."""

import keras

from kmedssl.losses.mvcon import multiview_infonce
from kmedssl.losses.replicas import validate_gather
from kmedssl.methods.base import PretrainingMethod


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

    Input: ``{"frontal": (B, H, W, C), "lateral": (B, H, W, C)}``.
    """

    loss_terms = ("infonce",)
    images_per_sample = 2
    contrastive = True

    def __init__(self, encoder, temperature=0.1, exclude_positive=True, gather="global", **kwargs):
        super().__init__(encoder, **kwargs)
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}")
        self.temperature = float(temperature)
        self.exclude_positive = bool(exclude_positive)
        validate_gather(gather)
        self.gather = gather

    def call(self, inputs, training=False):
        return {
            "z_frontal": self.encoder(inputs["frontal"], training=training)[:, 0],
            "z_lateral": self.encoder(inputs["lateral"], training=training)[:, 0],
        }

    def compute_loss_terms(self, x, y, y_pred, training):
        loss = multiview_infonce(
            y_pred["z_frontal"], y_pred["z_lateral"], self.temperature, self.exclude_positive, gather=self.gather
        )
        return loss, {"infonce": loss}

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, exclude_positive=self.exclude_positive, gather=self.gather)
        return config
