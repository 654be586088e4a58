"""Weights in and out of kmedssl encoders: timm / transformers ViT, torchvision / MONAI / transformers
ResNet-18, ``.safetensors``, weights-only PyTorch files and kmedssl's own ``.keras`` (docs/interop.md).

Conversion is NumPy (``state_dicts``: names, layouts, channel summing, position interpolation, normalisation
folding), so it works the same on every Keras backend; only assigning the result touches the encoder.
"""

from kmedssl.interop.checkpoints import (
    TARGETS,
    encoder_state,
    encoder_variables,
    export,
    load_encoder,
    load_into,
    parse_init,
    read_state_dict,
)
from kmedssl.interop.state_dicts import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAYOUTS,
    InteropError,
    detect_layout,
    fold_input_normalization,
    resize_positions,
    resnet_config_to_transformers,
    resnet_from_torchvision,
    resnet_from_transformers,
    resnet_to_torchvision,
    resnet_to_transformers,
    to_kmedssl,
    vit_config_from_transformers,
    vit_config_to_timm,
    vit_config_to_transformers,
    vit_from_timm,
    vit_from_transformers,
    vit_to_timm,
    vit_to_transformers,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTS",
    "TARGETS",
    "InteropError",
    "detect_layout",
    "encoder_state",
    "encoder_variables",
    "export",
    "fold_input_normalization",
    "load_encoder",
    "load_into",
    "parse_init",
    "read_state_dict",
    "resize_positions",
    "resnet_config_to_transformers",
    "resnet_from_torchvision",
    "resnet_from_transformers",
    "resnet_to_torchvision",
    "resnet_to_transformers",
    "to_kmedssl",
    "vit_config_from_transformers",
    "vit_config_to_timm",
    "vit_config_to_transformers",
    "vit_from_timm",
    "vit_from_transformers",
    "vit_to_timm",
    "vit_to_transformers",
]
