"""ModAn-MulSupCon recipe (paper 001 §3-4, Table 2)."""

import dataclasses

from kmedssl.methods.mulsupcon import MulSupCon
from kmedssl.recipes.base import UNIT_INTERVAL
from kmedssl.recipes.simclr import SimCLRRecipe


@dataclasses.dataclass
class MulSupConRecipe(SimCLRRecipe):
    """Paper 001 Table 2: as SimCLR but Jaccard-weighted SupCon on modality ⊕ anatomy, T = 0.07, τ = 0.3."""

    method = "mulsupcon"
    limits = {"threshold": UNIT_INTERVAL}

    temperature: float = 0.07
    threshold: float = 0.3

    def build_model(self, encoder, total_steps, seed, num_labels):
        return MulSupCon(encoder, temperature=self.temperature, threshold=self.threshold,
                         base_temperature=self.temperature, projection_dim=self.projection_dim,
                         hidden_dim=encoder.dim, crop_scale=self.crop_scale, seed=seed,
                         gather=self.gather)
