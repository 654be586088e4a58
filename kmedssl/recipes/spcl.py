"""S-PCL recipe (paper 003 §3.1)."""

import dataclasses

from kmedssl.methods.spcl import SPCL
from kmedssl.recipes.base import FRACTION, NON_NEGATIVE, POSITIVE, Range, Recipe


@dataclasses.dataclass
class SPCLRecipe(Recipe):
    """Paper 003 §3.1: ViT-B/16 at 512 px, mask ratio 0.6, batch 600 x 2 accumulation (= 1200); κ = 16 and
    scale init 1/0.07 (``SPCL``'s defaults, with ``scale_bounds`` and ``gather``, are fields). The paper gives
    no optimiser settings; it follows Medical MAE's, so AdamW with MAE's 1.5e-4 x batch / 256 and weight decay
    0.05 are used."""

    method = "spcl"
    method_class = SPCL
    sizes = {
        # Patch 4: 256 tokens, so each partition holds ~51 of them (the paper's 512 px / 16 px has 1024).
        # 1000 subjects: the 10 % test split (~100 subjects) keeps the probe AUROCs from being pure noise.
        # Each part from its own crop (60-100 % of the area) with brightness/contrast jitter 0.4: without them the
        # two parts of one phantom image are told apart from the batch by global appearance, and the encoder
        # learns no pathology (docs/evaluation.md, "S-PCL on the phantom"). Not in the paper (size="paper").
        "phantom": dict(encoder_size="phantom", image_size=64, patch_size=4, batch_size=64, epochs=15,
                        learning_rate=1e-3, warmup_epochs=1, data_size=1000, crop_scale=(0.6, 1.0), jitter=0.4),
    }
    limits = {"mask_ratio": FRACTION, "kappa": POSITIVE, "scale_init": POSITIVE, "scale_bounds": POSITIVE,
              "crop_scale": Range(0, 1, low_open=True), "jitter": NON_NEGATIVE}

    image_size: int = 512
    batch_size: int = 1200
    learning_rate: float = 1.5e-4 * 1200 / 256
    warmup_epochs: int = 10
