"""MVMAE recipe (paper 000 §3-4; MAE for what the paper leaves open)."""

import dataclasses

from kmedssl.data.pairing import study_pairs
from kmedssl.methods.mvmae import MVMAE
from kmedssl.recipes.base import FRACTION, NON_NEGATIVE, Recipe


@dataclasses.dataclass
class MultiViewRecipe(Recipe):
    """Shared data of the multi-view methods: every frontal x lateral pair of a study (paper 000 §2)."""

    def training_samples(self, records):
        return study_pairs(records)

    def load_sample(self, source, sample):
        frontal, lateral = sample
        return {
            "frontal": source.load_image(frontal, self.image_size)[..., None],
            "lateral": source.load_image(lateral, self.image_size)[..., None],
        }


@dataclasses.dataclass
class MVMAERecipe(MultiViewRecipe):
    """Paper 000: ViT-B/16 at 224, β = 1, token alignment (Eq. 1); MAE: mask 0.75, decoder 8 x 512,
    AdamW (lr 1.5e-4 x batch / 256, weight decay 0.05, 40 warm-up epochs), 800 epochs."""

    method = "mvmae"
    sizes = {
        "phantom": dict(encoder_size="phantom", decoder_size="phantom", image_size=64, patch_size=8,
                        batch_size=32, epochs=20, learning_rate=1e-3, warmup_epochs=2, data_size=500),
    }
    limits = {"mask_ratio": FRACTION, "beta": NON_NEGATIVE}

    epochs: int = 800
    warmup_epochs: int = 40
    batch_size: int = 256
    decoder_size: str = "base"
    mask_ratio: float = 0.75
    beta: float = 1.0
    beta_schedule: str = "constant"
    alignment: str = "tokens"
    norm_pix: bool = False

    def build_model(self, encoder, total_steps, seed, num_labels):
        from kmedssl.backbones import mae_decoder

        decoder = mae_decoder(self.decoder_size, encoder.num_patches, encoder.patch_dim, encoder.dim)
        return MVMAE(
            encoder, decoder, mask_ratio=self.mask_ratio, beta=self.beta, beta_schedule=self.beta_schedule,
            total_steps=total_steps, alignment=self.alignment, norm_pix=self.norm_pix, seed=seed,
        )
