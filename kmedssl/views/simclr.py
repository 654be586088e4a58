"""SimCLR views: the same two-crop augmentation as ModAn-MulSupCon (paper 001 §4.3, Table 2; SPEC §2).

The paper's SimCLR baseline (miniRINSimCLR) is pretrained with the identical TwoCropTransform, so this
module re-exports ``TwoCropAugmentation`` under the ``simclr`` name stem.
"""

from kmedssl.views.mulsupcon import TwoCropAugmentation

__all__ = ["TwoCropAugmentation"]
