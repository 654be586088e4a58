"""Views: what a method sees of a sample (SPEC §1 views/), one module per method stem.

``mvmae`` / ``mvcon``: a study's frontal and lateral images (and MVMAE's per-view masks); ``mulsupcon`` /
``simclr``: two augmented crops (``augment`` holds the crop and jitter layers); ``spcl``: two disjoint
visible-token parts; ``ace``: two grid-aligned crops, their overlap masks and matching pairs.
"""

from kmedssl.views.ace import ACEViews, ace_matching_pairs, ace_matching_targets
from kmedssl.views.augment import (
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomIntensityJitter,
    RandomResizedCrop,
    crop_and_resize,
)
from kmedssl.views.mulsupcon import TwoCropAugmentation
from kmedssl.views.mvmae import load_study_pair, mask_views, study_pairs
from kmedssl.views.spcl import partition_tokens
