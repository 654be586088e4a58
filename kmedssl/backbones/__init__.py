"""Encoders (SPEC §1 backbones/): a ViT that encodes any subset of patch tokens, its MAE decoder, ResNet-18.

Importing this package registers every backbone with Keras, so ``keras.saving.load_model("encoder.keras")``
needs nothing else from kmedssl.
"""

from kmedssl.backbones.layers import (
    DropPath,
    MultiHeadSelfAttention,
    TransformerBlock,
    patchify,
    sincos_position_embedding_2d,
    unpatchify,
)
from kmedssl.backbones.mae_decoder import MAE_DECODER_SIZES, MAEDecoder, mae_decoder
from kmedssl.backbones.resnet import BasicBlock, ResNet18
from kmedssl.backbones.vit import VIT_SIZES, VisionTransformer, vision_transformer

__all__ = [
    "MAE_DECODER_SIZES",
    "VIT_SIZES",
    "BasicBlock",
    "DropPath",
    "MAEDecoder",
    "MultiHeadSelfAttention",
    "ResNet18",
    "TransformerBlock",
    "VisionTransformer",
    "mae_decoder",
    "patchify",
    "sincos_position_embedding_2d",
    "unpatchify",
    "vision_transformer",
]
