"""View builders: S-PCL token partitions, two-crop augmentation, ACE grid-aligned crops (SPEC §1 views/)."""

from kmedssl.views.ace import ACEViews
from kmedssl.views.augment import (
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomIntensityJitter,
    RandomResizedCrop,
    crop_and_resize,
)
from kmedssl.views.mulsupcon import TwoCropAugmentation
from kmedssl.views.spcl import partition_tokens
