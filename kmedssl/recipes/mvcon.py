"""Multi-view contrastive recipe (paper 000 §3.2)."""

import dataclasses
import typing

from kmedssl.methods.mvcon import MVCon
from kmedssl.recipes.base import NON_NEGATIVE, POSITIVE, Range
from kmedssl.recipes.mvmae import MultiViewRecipe


@dataclasses.dataclass
class MVConRecipe(MultiViewRecipe):
    """Paper 000: ViT-B/16 at 224, CLS embedding, τ = 0.1 (authors' code 0.5), Eq. 2 denominator; same
    optimiser as MVMAE (AdamW). ``temperature``, ``exclude_positive`` and ``gather`` (negatives under data
    parallelism: "global", every replica, or "local") are fields with ``MVCon``'s defaults; ``projection_dim``
    (None: the paper's loss on the CLS token) puts ``MVCon``'s projection head before the loss."""

    method = "mvcon"
    method_class = MVCon
    sizes = {
        # Each view from its own crop (60-100 % of the area) with brightness/contrast jitter 0.4: without them the
        # frontal and lateral images of a study are matched by size and exposure, and the encoder learns less
        # pathology (docs/evaluation.md, "MVCon"). The values of paper 000 §4's augmentations are not given. The
        # loss sits at chance (log 62) for the first 30-80 epochs, hence 150 (about 5 minutes on 2 cores); a
        # projection head (width 96, the encoder's) leaves chance ~20 epochs sooner and passes fine-tuning on seed 1.
        "phantom": dict(encoder_size="phantom", image_size=64, patch_size=8, batch_size=32, epochs=150,
                        learning_rate=5e-4, warmup_epochs=2, data_size=500, crop_scale=(0.6, 1.0), jitter=0.4,
                        projection_dim=96),
    }
    limits = {"temperature": POSITIVE, "projection_dim": POSITIVE, "crop_scale": Range(0, 1, low_open=True),
              "jitter": NON_NEGATIVE}

    epochs: int = 800
    warmup_epochs: int = 40
    batch_size: int = 256
    projection_dim: typing.Optional[int] = None
