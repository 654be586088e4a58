"""ModAn-MulSupCon recipe (paper 001 §3-4, Table 2)."""

import dataclasses
import typing

from kmedssl.methods.mulsupcon import MulSupCon
from kmedssl.recipes.base import POSITIVE, UNIT_INTERVAL
from kmedssl.recipes.simclr import SimCLRRecipe


@dataclasses.dataclass
class MulSupConRecipe(SimCLRRecipe):
    """Paper 001 Table 2: as SimCLR but Jaccard-weighted SupCon on modality ⊕ anatomy, T = 0.07, τ = 0.3
    (``MulSupCon``'s defaults for ``temperature`` and ``threshold``)."""

    method = "mulsupcon"
    method_class = MulSupCon
    sizes = {
        # T = 0.2 and crops of 40-100 % of the area: at the paper's T = 0.07 and 20-100 % the frozen features
        # carried no pathology on one seed of two (docs/evaluation.md, "ModAn-MulSupCon"); a 20 % crop of a
        # 32 px image is 14 px.
        "phantom": dict(SimCLRRecipe.sizes["phantom"], temperature=0.2, crop_scale=(0.4, 1.0)),
    }
    limits = {"threshold": UNIT_INTERVAL, "base_temperature": POSITIVE}

    # SupCon's loss scale is T / base_temperature; None: base_temperature = temperature, so the loss is paper
    # 001's Eq. 3 without a scale whatever the temperature (MulSupCon's own default is 0.07, equal to T).
    base_temperature: typing.Optional[float] = None

    def compute_arguments(self, encoder, total_steps, seed, num_labels):
        arguments = super().compute_arguments(encoder, total_steps, seed, num_labels)
        if self.base_temperature is None:
            arguments["base_temperature"] = self.temperature
        return arguments
