"""Encoders (SPEC §1 backbones/): a ViT that encodes any subset of patch tokens, its MAE decoder, ResNets
(``ResNet18``, ``ResNet50`` and their common ``ResNet``), a Swin Transformer (``SwinTransformer``); the UperNet
decoder of the dense tasks over their multi-level features; and the token layers and heads shared by methods.

Importing this package registers every backbone with Keras, so ``keras.saving.load_model("encoder.keras")``
needs nothing else from kmedssl. The heads a method puts on an encoder (projection, DINO, ACE composer /
decomposer) are in ``kmedssl.backbones.heads``, imported by the methods that use them, not here: they use
``kmedssl.losses`` (``l2_normalize``), which loading an encoder must not import.
"""

from kmedssl.backbones.layers import (
    DropPath,
    MultiHeadSelfAttention,
    TransformerBlock,
    merge_2x2,
    patchify,
    sincos_position_embedding_2d,
    split_2x2,
    unpatchify,
)
from kmedssl.backbones.mae_decoder import MAE_DECODER_SIZES, MAEDecoder, mae_decoder
from kmedssl.backbones.resnet import BasicBlock, BottleneckBlock, ResNet, ResNet18, ResNet50
from kmedssl.backbones.swin import (
    SWIN_SIZES,
    PatchMerging,
    SwinBlock,
    SwinTransformer,
    WindowAttention,
    swin_transformer,
)
from kmedssl.backbones.upernet import UperNet, UperNetDecoder, ViTFeaturePyramid, encoder_feature_maps
from kmedssl.backbones.vit import VIT_SIZES, VisionTransformer, vision_transformer

__all__ = [
    "MAE_DECODER_SIZES",
    "SWIN_SIZES",
    "VIT_SIZES",
    "BasicBlock",
    "BottleneckBlock",
    "DropPath",
    "MAEDecoder",
    "MultiHeadSelfAttention",
    "PatchMerging",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "SwinBlock",
    "SwinTransformer",
    "TransformerBlock",
    "UperNet",
    "UperNetDecoder",
    "ViTFeaturePyramid",
    "VisionTransformer",
    "WindowAttention",
    "encoder_feature_maps",
    "mae_decoder",
    "merge_2x2",
    "patchify",
    "sincos_position_embedding_2d",
    "split_2x2",
    "swin_transformer",
    "unpatchify",
    "vision_transformer",
]
