"""S-PCL: semantic-partitioned contrastive learning (paper 003 §2, Eqs. 1-2; SPEC §3.4)."""

import math

import keras
from keras import ops

from kmedssl.backbones.flops import encoder_flops
from kmedssl.losses.replicas import validate_gather
from kmedssl.losses.spcl import tsp_infonce
from kmedssl.methods.base import PretrainingMethod
from kmedssl.views.augment import check_non_negative
from kmedssl.views.mulsupcon import crop_and_jitter
from kmedssl.views.spcl import partition_tokens


@keras.saving.register_keras_serializable(package="kmedssl")
class SPCL(PretrainingMethod):
    """S-PCL: one image, two disjoint visible-token parts, T-SP InfoNCE between their CLS embeddings.

    Stages: ``partition_tokens`` (mask ``mask_ratio`` of the patches, split the visible ones in two
    halves) -> [with ``crop_scale`` below 1 or ``jitter`` above 0: part 1 read from one augmented copy of the
    image, part 2 from another] -> ``encoder`` on each part with a prepended CLS token (shared weights, no projection head)
    -> ``tsp_infonce(z_1, z_2, kappa, scale)`` with ``scale = clip(exp(log_scale), *scale_bounds)``, a
    trainable scalar stored as a log (init log(1/0.07), paper 003 §3.1).

    Args:
        encoder: a ``kmedssl.backbones.VisionTransformer``.
        mask_ratio: fraction of patches masked before partitioning (paper §3.1: 0.6).
        kappa: T-SP concentration (Eq. 1), fixed (default 16).
        scale_init: initial logit scale 1/τ.
        scale_bounds: clamp of the applied scale.
        seed: seed of the partition noise and of the augmentation.
        crop_scale: area range ``(low, high)`` of an independent random resized crop per part (``(1, 1)``, the
            paper: both parts come from the same image). Not in paper 003; a recipe option for small data sets,
            where the two parts of one image can be told apart from the others by global appearance alone.
        jitter: brightness and contrast strength of an independent intensity jitter per part (probability
            0.8; ``kmedssl.views.augment.RandomIntensityJitter``); 0, the paper: none.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from each replica's
            own rows); the same on one device (docs/distributed.md).

    Input: ``{"image": (B, H, W, C)}``. Output of ``call``: ``{"z_1": (B, D), "z_2": (B, D)}``.
    """

    loss_terms = ("tsp",)
    contrastive = True

    def __init__(self, encoder, mask_ratio=0.6, kappa=16.0, scale_init=1 / 0.07, scale_bounds=(1.0, 100.0),
                 seed=None, gather="global", crop_scale=(1.0, 1.0), jitter=0.0, **kwargs):
        super().__init__(encoder, **kwargs)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"Expected 0 <= mask_ratio < 1. Received: mask_ratio={mask_ratio}")
        if kappa <= 0:
            raise ValueError(f"Expected kappa > 0. Received: kappa={kappa}")
        self.mask_ratio = float(mask_ratio)
        self.kappa = float(kappa)
        self.scale_init = float(scale_init)
        self.scale_bounds = tuple(float(b) for b in scale_bounds)
        validate_gather(gather)
        self.gather = gather
        self.seed = seed
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.jitter = check_non_negative("jitter", jitter)
        self.augment = None
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.log_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(math.log(self.scale_init)), name="log_scale"
        )

    def build(self, input_shape):
        self.augment = crop_and_jitter(input_shape["image"][1], self.crop_scale, self.jitter, self.seed,
                                       name="part_augmentation")

    def call(self, inputs, training=False):
        images = inputs["image"]
        part_1, part_2 = partition_tokens(
            ops.shape(images)[0], self.encoder.num_patches, self.mask_ratio, self.seed_generator
        )
        images_1, images_2 = self.augment(images, training=training) if self.augment else (images, images)
        z_1 = self.encoder(images_1, token_indices=part_1, training=training)[:, 0]
        z_2 = self.encoder(images_2, token_indices=part_2, training=training)[:, 0]
        return {"z_1": z_1, "z_2": z_2}

    def scale(self):
        """The applied logit scale, ``clip(exp(log_scale), low, high)``."""
        return ops.clip(ops.exp(self.log_scale), *self.scale_bounds)

    def compute_loss_terms(self, x, y, y_pred, training):
        loss = tsp_infonce(y_pred["z_1"], y_pred["z_2"], kappa=self.kappa, scale=self.scale(), gather=self.gather)
        return loss, {"tsp": loss}

    def encoder_work(self, image_size):
        """The ViT on each of the two visible parts (``V // 2`` and ``V - V // 2`` of ``random_partition``'s V
        visible patches)."""
        visible = self.encoder.num_patches - int(self.encoder.num_patches * self.mask_ratio)
        return encoder_flops(self.encoder, visible // 2) + encoder_flops(self.encoder, visible - visible // 2), 0

    def get_config(self):
        config = super().get_config()
        config.update(mask_ratio=self.mask_ratio, kappa=self.kappa, scale_init=self.scale_init,
                      scale_bounds=self.scale_bounds, seed=self.seed, gather=self.gather,
                      crop_scale=self.crop_scale, jitter=self.jitter)
        return config
