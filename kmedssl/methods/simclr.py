"""SimCLR baseline of paper 001: two augmented crops, projection head, NT-Xent (SPEC §3.2)."""

import keras
from keras import ops

from kmedssl.backbones.flops import image_flops
from kmedssl.backbones.heads import ProjectionHead
from kmedssl.losses.replicas import validate_gather
from kmedssl.losses.simclr import nt_xent
from kmedssl.methods.base import PretrainingMethod
from kmedssl.views.simclr import TwoCropAugmentation


@keras.saving.register_keras_serializable(package="kmedssl")
class SimCLR(PretrainingMethod):
    """Two crops of each image (paper 001 §4.3 augmentation) -> encoder -> projection head -> NT-Xent.

    Args:
        encoder: a backbone whose ``features(images)`` gives (B, D), e.g. ``kmedssl.backbones.ResNet18``.
        temperature: NT-Xent temperature (SimCLR / paper 001: 0.1).
        projection_dim, hidden_dim: the MLP projection head.
        crop_size: side of the augmented crops (defaults to the encoder's input size when None).
        crop_scale: RandomResizedCrop area range (paper 001: 0.2-1).
        seed: seed of the augmentation.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from each replica's
            own rows); the same on one device (docs/distributed.md).

    Input: ``{"image": (B, H, W, C)}`` (MulSupCon adds ``"metadata"``).
    """

    loss_terms = ("nt_xent",)
    contrastive = True

    def __init__(self, encoder, temperature=0.1, projection_dim=128, hidden_dim=512, crop_size=None,
                 crop_scale=(0.2, 1.0), seed=None, gather="global", **kwargs):
        super().__init__(encoder, **kwargs)
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}")
        self.temperature = float(temperature)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim)
        self.crop_size = crop_size
        self.crop_scale = tuple(crop_scale)
        self.seed = seed
        validate_gather(gather)
        self.gather = gather
        self.head = ProjectionHead(self.hidden_dim, self.projection_dim, name="projection_head")
        self.augment = None

    def build(self, input_shape):
        image_shape = input_shape["image"]
        size = self.crop_size or image_shape[1]
        self.augment = TwoCropAugmentation(size, scale=self.crop_scale, seed=self.seed, name="two_crop")
        self.head.build((None, self.encoder.dim))

    def project(self, images, training):
        return self.head(self.encoder.features(images, training=training))

    def call(self, inputs, training=False):
        view_1, view_2 = self.augment(inputs["image"], training=training)
        # Both views in one encoder pass: (2B, ...) -> split.
        projections = self.project(ops.concatenate([view_1, view_2], axis=0), training)
        z_1, z_2 = ops.split(projections, 2, axis=0)
        return {"z_1": z_1, "z_2": z_2}

    def compute_loss_terms(self, x, y, y_pred, training):
        loss = nt_xent(y_pred["z_1"], y_pred["z_2"], self.temperature, gather=self.gather)
        return loss, {"nt_xent": loss}

    def encoder_work(self, image_size):
        """The encoder on both augmented crops (``crop_size``, else ``image_size``)."""
        return 2 * image_flops(self.encoder, self.crop_size or image_size), 0

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature, projection_dim=self.projection_dim, hidden_dim=self.hidden_dim,
            crop_size=self.crop_size, crop_scale=self.crop_scale, seed=self.seed, gather=self.gather,
        )
        return config
