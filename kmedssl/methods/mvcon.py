"""Multi-view contrastive pretraining: frontal and lateral views of one study are positives
(paper 000 §3, Eq. 2; SPEC §3.2)."""

import keras

from kmedssl.backbones.heads import ProjectionHead
from kmedssl.losses.mvcon import multiview_infonce
from kmedssl.losses.replicas import validate_gather
from kmedssl.methods.base import PretrainingMethod
from kmedssl.methods.view_augmentation import AugmentedViews


@keras.saving.register_keras_serializable(package="kmedssl")
class MVCon(AugmentedViews, PretrainingMethod):
    """Multi-view InfoNCE between the CLS embeddings of a study's frontal and lateral images, optionally through
    a projection head ``z = W_2 ReLU(BN(W_1 cls)) + b_2`` (``ProjectionHead(batch_norm=True)``, SimCLR v2's form;
    the probes still read the CLS token).

    Args:
        encoder: a ``kmedssl.backbones.VisionTransformer``.
        temperature: τ of Eq. 2 (paper 0.1; the authors' code 0.5).
        exclude_positive: ``True`` is exactly Eq. 2 (positive not in the denominator); ``False`` is the
            NT-Xent of the authors' code.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from each replica's
            own rows); the same on one device (docs/distributed.md).
        crop_scale, jitter, seed: the augmentation of each view (``AugmentedViews``; none by default).
        projection_dim: output width of the projection head; None (paper 000's Eq. 2 on the CLS token) for none.
            At initialisation a ViT's CLS token barely depends on the image; the head's batch normalisation
            standardises it over the batch, so the loss leaves chance sooner (docs/evaluation.md, "The sixth round").

    Input: ``{"frontal": (B, H, W, C), "lateral": (B, H, W, C)}``.
    """

    loss_terms = ("infonce",)
    images_per_sample = 2
    contrastive = True

    def __init__(self, encoder, temperature=0.1, exclude_positive=True, gather="global", crop_scale=(1.0, 1.0),
                 jitter=0.0, seed=None, projection_dim=None, **kwargs):
        super().__init__(encoder, **kwargs)
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}")
        self.temperature = float(temperature)
        self.exclude_positive = bool(exclude_positive)
        validate_gather(gather)
        self.gather = gather
        self.init_view_augmentation(crop_scale, jitter, seed)
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"Expected projection_dim >= 1 or None. Received: projection_dim={projection_dim}")
        self.projection_dim = projection_dim
        self.projection = None
        if projection_dim is not None:
            self.projection = ProjectionHead(encoder.dim, projection_dim, batch_norm=True, name="projection")
            self.projection.build((None, encoder.dim))

    def embed(self, images, training):
        """``(B, dim)`` CLS token, or ``(B, projection_dim)`` its projection."""
        cls = self.encoder(images, training=training)[:, 0]
        return cls if self.projection is None else self.projection(cls, training=training)

    def call(self, inputs, training=False):
        frontal, lateral = self.augmented_views(inputs, training)
        return {"z_frontal": self.embed(frontal, training), "z_lateral": self.embed(lateral, training)}

    def compute_loss_terms(self, x, y, y_pred, training):
        loss = multiview_infonce(
            y_pred["z_frontal"], y_pred["z_lateral"], self.temperature, self.exclude_positive, gather=self.gather
        )
        return loss, {"infonce": loss}

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, exclude_positive=self.exclude_positive, gather=self.gather,
                      projection_dim=self.projection_dim, **self.view_augmentation_config())
        return config
