"""MVMAE: multi-view masked autoencoder with latent alignment of frontal and lateral views
(paper 000 §3, Eq. 1 and the total objective; SPEC §3.1)."""

import keras
from keras import ops

from kmedssl.backbones.flops import decoder_flops, encoder_flops
from kmedssl.losses.mvmae import latent_alignment, mae_reconstruction
from kmedssl.methods.base import PretrainingMethod
from kmedssl.methods.view_augmentation import AugmentedViews
from kmedssl.views.mvmae import mask_views

BETA_SCHEDULES = ("constant", "sigmoid")


@keras.saving.register_keras_serializable(package="kmedssl")
class MVMAE(AugmentedViews, PretrainingMethod):
    """Masked autoencoding of each view plus β-weighted alignment of the two views' latents.

    Stages: [with ``crop_scale`` below 1 or ``jitter`` above 0: each view replaced by an independently augmented
    copy, which is also the reconstruction target] -> ``mask_views`` (keep ``1 - mask_ratio`` of the patches,
    one mask shared by both views when ``alignment="tokens"`` so token positions match, independent masks for
    ``"pooled"``) -> ``encoder`` on the kept patches of each view -> ``decoder`` -> loss
    ``0.5 * (rec_f + rec_l) + beta * align`` (paper 000 §3.1).

    Args:
        encoder: a ``kmedssl.backbones.VisionTransformer``.
        decoder: a ``kmedssl.backbones.MAEDecoder`` matching the encoder.
        mask_ratio: MAE mask ratio (MAE default 0.75; the authors' code uses 0.93).
        beta: weight of the alignment term (paper: 1).
        beta_schedule: ``"constant"`` (paper) or ``"sigmoid"``: β(t) = beta_max / (1 + exp(-10 (t / T - 0.5)))
            annealed from ~0 to ``beta_max`` over ``total_steps`` (authors' code, 0 -> 2).
        beta_max: final β of the sigmoid schedule.
        total_steps: T of the sigmoid schedule.
        alignment: ``"tokens"`` (paper Eq. 1) or ``"pooled"`` (authors' code); see ``latent_alignment``.
        norm_pix: normalise target patches (MAE option).
        seed: seed of the masking noise and of the augmentation.
        crop_scale, jitter: the augmentation of each view (``AugmentedViews``; none by default).

    Input: ``{"frontal": (B, H, W, C), "lateral": (B, H, W, C)}``.
    """

    loss_terms = ("reconstruction_frontal", "reconstruction_lateral", "alignment")
    images_per_sample = 2
    nested_objects = ("encoder", "decoder")

    def __init__(self, encoder, decoder, mask_ratio=0.75, beta=1.0, beta_schedule="constant", beta_max=2.0,
                 total_steps=1, alignment="tokens", norm_pix=False, seed=None, crop_scale=(1.0, 1.0), jitter=0.0,
                 **kwargs):
        super().__init__(encoder, **kwargs)
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"Expected beta_schedule in {BETA_SCHEDULES}. Received: beta_schedule={beta_schedule!r}")
        if alignment not in ("tokens", "pooled"):
            raise ValueError(f"Expected alignment in ('tokens', 'pooled'). Received: alignment={alignment!r}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"Expected 0 <= mask_ratio < 1. Received: mask_ratio={mask_ratio}")
        self.decoder = decoder
        self.mask_ratio = float(mask_ratio)
        self.beta = float(beta)
        self.beta_schedule = beta_schedule
        self.beta_max = float(beta_max)
        self.total_steps = int(total_steps)
        self.alignment = alignment
        self.norm_pix = bool(norm_pix)
        self.init_view_augmentation(crop_scale, jitter, seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.step = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False, name="step")

    def encode_decode(self, images, ids_keep, ids_restore, training):
        """Encoder on the kept patches ``ids_keep (B, N_keep)`` -> ``(tokens, decoder prediction (B, N, P))``."""
        tokens = self.encoder(images, token_indices=ids_keep, training=training)
        return tokens, self.decoder(tokens, ids_restore, training=training)

    def call(self, inputs, training=False):
        frontal, lateral = self.augmented_views(inputs, training)
        (keep_f, mask_f, restore_f), (keep_l, mask_l, restore_l) = mask_views(
            ops.shape(frontal)[0], self.encoder.num_patches, self.mask_ratio, shared=self.alignment == "tokens",
            seed_generator=self.seed_generator,
        )
        tokens_f, pred_f = self.encode_decode(frontal, keep_f, restore_f, training)
        tokens_l, pred_l = self.encode_decode(lateral, keep_l, restore_l, training)
        return {
            "tokens_frontal": tokens_f, "tokens_lateral": tokens_l,
            "pred_frontal": pred_f, "pred_lateral": pred_l,
            "mask_frontal": mask_f, "mask_lateral": mask_l,
            "image_frontal": frontal, "image_lateral": lateral,
        }

    def current_beta(self):
        """β at the current step (constant, or the sigmoid anneal of the authors' code)."""
        if self.beta_schedule == "constant":
            return ops.convert_to_tensor(self.beta, "float32")
        progress = ops.cast(self.step, "float32") / float(max(self.total_steps, 1))
        return self.beta_max * ops.sigmoid(10.0 * (progress - 0.5))

    def compute_loss_terms(self, x, y, y_pred, training):
        rec_f, rec_l = (
            mae_reconstruction(self.encoder.patchify(y_pred[f"image_{view}"]), y_pred[f"pred_{view}"],
                               y_pred[f"mask_{view}"], self.norm_pix)
            for view in ("frontal", "lateral")
        )
        align = latent_alignment(y_pred["tokens_frontal"], y_pred["tokens_lateral"], mode=self.alignment)
        if training:
            self.step.assign_add(ops.cast(1, "int32"))
        total = 0.5 * (rec_f + rec_l) + self.current_beta() * align
        return total, {"reconstruction_frontal": rec_f, "reconstruction_lateral": rec_l, "alignment": align}

    def encoder_work(self, image_size):
        """The ViT on the ``int(N (1 - mask_ratio))`` kept patches (``mae_masking``'s len_keep) and the MAE
        decoder, per view."""
        kept = int(self.encoder.num_patches * (1 - self.mask_ratio))
        return encoder_flops(self.encoder, kept) + decoder_flops(self.decoder, kept), 0

    def get_config(self):
        config = super().get_config()
        config.update(
            mask_ratio=self.mask_ratio, beta=self.beta, beta_schedule=self.beta_schedule, beta_max=self.beta_max,
            total_steps=self.total_steps, alignment=self.alignment, norm_pix=self.norm_pix,
            **self.view_augmentation_config(),
        )
        return config
