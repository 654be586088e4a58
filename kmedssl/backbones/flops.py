"""Analytic forward FLOPs of the kmedssl encoders per image (for ``kmedssl bench train``; paper 003 Table 1
compares pretraining methods by GFLOPs per image).

Convention: FLOPs = 2 x the multiply-accumulates of every matrix product and convolution, so a Dense layer
from ``m`` to ``n`` features on ``T`` tokens costs ``2 T m n``. Bias adds, normalisations, activations,
softmax, pooling and the other element-wise work are not counted. This is the convention of
``torch.utils.flop_counter.FlopCounterMode``, which the tests check these formulas against. Tools that count
multiply-accumulates and call them FLOPs (fvcore, ptflops, many papers' tables) give half these numbers.

Per ViT block on ``T`` tokens of width ``D`` with MLP width ``H = mlp_ratio * D``:

    qkv 2 T D (3D)  +  attention 2 (2 T^2 D)  (q k^T and attn v, all heads)  +  proj 2 T D D  +  MLP 2 (2 T D H)

Shapes follow ``kmedssl.backbones``: a ViT encodes ``n`` selected patches plus its CLS token (``T = 1 + n``)
after a Dense patch embedding of the ``n`` patches; the MAE decoder embeds ``1 + n_keep`` tokens, runs its
blocks on ``1 + N`` tokens and predicts pixels for all ``1 + N`` rows (the CLS row is dropped afterwards).

A Swin block on an ``R x R`` grid (``T = R^2`` tokens) attends within ``(R / w)^2`` windows of ``w^2`` tokens,
so its attention costs ``(R / w)^2 4 (w^2)^2 D = 4 T w^2 D`` instead of ``4 T^2 D``; the rest is the ViT
block's on ``T`` tokens. The shift, the relative position bias and the mean token 0 add no matrix products.
"""

from kmedssl.backbones.mae_decoder import MAEDecoder
from kmedssl.backbones.resnet import BLOCKS, ResNet, ResNet18, ResNet50, block_plan, residual_convolutions
from kmedssl.backbones.swin import SwinTransformer, stage_plan
from kmedssl.backbones.vit import VisionTransformer


def _check_positive(**values):
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"Expected {name} >= 1. Received: {name}={value}")


def dense_flops(tokens, in_features, out_features):
    """``2 T m n``: a Dense layer from ``m`` to ``n`` features applied to ``T`` tokens."""
    return 2 * tokens * in_features * out_features


def attention_flops(tokens, dim):
    """``4 T^2 D``: ``q k^T`` and ``softmax(.) v`` of multi-head self-attention over ``T`` tokens of width
    ``D`` (the same for any number of heads)."""
    return 4 * tokens * tokens * dim


def transformer_block_flops(tokens, dim, mlp_ratio=4.0):
    """One pre-norm transformer block (``kmedssl.backbones.TransformerBlock``) on ``T`` tokens."""
    _check_positive(tokens=tokens, dim=dim)
    hidden = int(dim * mlp_ratio)
    return (dense_flops(tokens, dim, 3 * dim) + attention_flops(tokens, dim) + dense_flops(tokens, dim, dim)
            + dense_flops(tokens, dim, hidden) + dense_flops(tokens, hidden, dim))


def vit_flops(num_encoded, dim, depth, patch_dim, mlp_ratio=4.0):
    """A ViT on one image of which ``n = num_encoded`` patches are encoded:
    ``2 n P D + depth * block(1 + n)`` (patch embedding of ``P``-value patches, blocks with the CLS token)."""
    _check_positive(num_encoded=num_encoded, dim=dim, patch_dim=patch_dim)
    return dense_flops(num_encoded, patch_dim, dim) + depth * transformer_block_flops(1 + num_encoded, dim, mlp_ratio)


def mae_decoder_flops(num_kept, num_patches, encoder_dim, patch_dim, dim, depth, mlp_ratio=4.0):
    """The MAE decoder on one image: ``2 (1 + n_keep) E d`` (embedding of the encoder's tokens) +
    ``depth * block(1 + N)`` + ``2 (1 + N) d P`` (pixel prediction)."""
    _check_positive(num_patches=num_patches, encoder_dim=encoder_dim, patch_dim=patch_dim, dim=dim)
    if not 0 <= num_kept <= num_patches:
        raise ValueError(f"Expected 0 <= num_kept <= num_patches. Received: num_kept={num_kept}, "
                         f"num_patches={num_patches}")
    return (dense_flops(1 + num_kept, encoder_dim, dim)
            + depth * transformer_block_flops(1 + num_patches, dim, mlp_ratio)
            + dense_flops(1 + num_patches, dim, patch_dim))


def swin_block_flops(resolution, dim, window, mlp_ratio=4.0):
    """One Swin block (``kmedssl.backbones.swin.SwinBlock``) on an ``R x R`` grid of ``T = R^2`` tokens with
    ``w x w`` windows: ``2 T D (3D) + 4 T w^2 D`` (``q k^T`` and ``attn v`` within each window) ``+ 2 T D D``
    ``+ 2 (2 T D H)``."""
    _check_positive(resolution=resolution, dim=dim, window=window)
    if resolution % window:
        raise ValueError(f"Expected resolution divisible by window. Received: resolution={resolution}, "
                         f"window={window}")
    tokens, hidden = resolution * resolution, int(dim * mlp_ratio)
    return (dense_flops(tokens, dim, 3 * dim) + (resolution // window) ** 2 * attention_flops(window * window, dim)
            + dense_flops(tokens, dim, dim) + dense_flops(tokens, dim, hidden) + dense_flops(tokens, hidden, dim))


def swin_flops(image_size, patch_size, channels, embed_dim, depths, window_size, mlp_ratio=4.0):
    """A Swin Transformer (``kmedssl.backbones.SwinTransformer``) on one image, stage by stage (``stage_plan``):
    ``2 R_0^2 P C_0`` (patch embedding of ``P = p^2 channels``-value patches on the ``R_0 x R_0`` grid), then per
    stage ``s`` its ``depths[s]`` blocks on ``R_s x R_s`` tokens of width ``C_s`` (``swin_block_flops``, with
    the stage's window ``min(window_size, R_s)``) and, but after the last stage, the patch merging
    ``2 (R_s / 2)^2 (4 C_s) (2 C_s)``."""
    _check_positive(image_size=image_size, patch_size=patch_size, channels=channels, embed_dim=embed_dim,
                    window_size=window_size)
    plan = stage_plan(image_size, patch_size, embed_dim, depths, window_size)
    total = dense_flops(plan[0][0] ** 2, patch_size * patch_size * channels, embed_dim)
    for s, ((resolution, dim, window, _), depth) in enumerate(zip(plan, depths)):
        total += depth * swin_block_flops(resolution, dim, window, mlp_ratio)
        if s + 1 < len(plan):
            total += dense_flops((resolution // 2) ** 2, 4 * dim, 2 * dim)
    return total


def conv_flops(out_size, kernel_size, in_channels, out_channels):
    """``2 S^2 k^2 C_in C_out``: a ``k x k`` convolution producing an ``S x S`` map (no bias)."""
    return 2 * out_size * out_size * kernel_size * kernel_size * in_channels * out_channels


def resnet_flops(image_size, channels=1, width=64, stem="cifar", block="basic", depths=(2, 2, 2, 2)):
    """A ResNet (``kmedssl.backbones.ResNet``) on one ``image_size``-pixel square image.

    Stem ``"cifar"``: conv3x3 stride 1; ``"imagenet"``: conv7x7 stride 2, then a 3x3 stride-2 max-pool
    (no FLOPs). Every stride-2 layer maps side ``S`` to ``ceil(S / 2)``. Per block (``block_plan``): its
    residual convolutions (``residual_convolutions``: basic 3x3_s, 3x3; bottleneck 1x1, 3x3_s, 1x1 with 4x
    expansion, so its first 1x1 still runs on the block's input side), and a 1x1 stride-``s`` projection
    shortcut on the block's output side where the stride or the channel count changes. Global average
    pooling is not counted.
    """
    _check_positive(image_size=image_size, channels=channels, width=width)
    if block not in BLOCKS:
        raise ValueError(f"Expected block in {BLOCKS}. Received: block={block!r}")
    if stem == "cifar":
        size = image_size
        total = conv_flops(size, 3, channels, width)
    elif stem == "imagenet":
        size = -(-image_size // 2)
        total = conv_flops(size, 7, channels, width)
        size = -(-size // 2)
    else:
        raise ValueError(f"Expected stem in ('cifar', 'imagenet'). Received: stem={stem!r}")
    for _, in_channels, filters, strides, projection in block_plan(block, depths, width):
        channels = in_channels
        for kernel_size, out_channels, conv_strides in residual_convolutions(block, filters, strides):
            size = -(-size // conv_strides)
            total += conv_flops(size, kernel_size, channels, out_channels)
            channels = out_channels
        if projection:
            total += conv_flops(size, 1, in_channels, channels)
    return total


def resnet18_flops(image_size, channels=1, width=64, stem="cifar"):
    """ResNet-18 (``kmedssl.backbones.ResNet18``): ``resnet_flops`` with basic blocks [2, 2, 2, 2]."""
    return resnet_flops(image_size, channels, width, stem, **ResNet18.fixed_arguments)


def resnet50_flops(image_size, channels=1, width=64, stem="imagenet"):
    """ResNet-50 (``kmedssl.backbones.ResNet50``): ``resnet_flops`` with bottleneck blocks [3, 4, 6, 3]."""
    return resnet_flops(image_size, channels, width, stem, **ResNet50.fixed_arguments)


def encoder_flops(encoder, num_encoded=None, image_size=None):
    """Forward FLOPs of one image through a kmedssl encoder.

    Args:
        encoder: a ``VisionTransformer`` (encoding ``num_encoded`` of its patches; all by default), a
            ``SwinTransformer`` (whole images only) or a ``ResNet`` (``ResNet18``, ``ResNet50``; on
            ``image_size``-pixel images, required).
        num_encoded: patches a ViT encodes (e.g. MAE's kept patches, one S-PCL part).
        image_size: side of a ResNet's input (a ViT's or Swin's input size is fixed by the encoder).
    """
    if isinstance(encoder, VisionTransformer):
        if image_size not in (None, encoder.image_size):
            raise ValueError(f"Expected image_size None or {encoder.image_size} for this ViT. "
                             f"Received: image_size={image_size}")
        n = encoder.num_patches if num_encoded is None else num_encoded
        if not 1 <= n <= encoder.num_patches:
            raise ValueError(f"Expected 1 <= num_encoded <= {encoder.num_patches}. Received: num_encoded={n}")
        return vit_flops(n, encoder.dim, encoder.depth, encoder.patch_dim, encoder.mlp_ratio)
    if isinstance(encoder, SwinTransformer):
        if image_size not in (None, encoder.image_size) or num_encoded not in (None, encoder.num_patches):
            raise ValueError(f"Expected image_size None or {encoder.image_size} and num_encoded None (a Swin encodes "
                             f"whole images). Received: image_size={image_size}, num_encoded={num_encoded}")
        return swin_flops(encoder.image_size, encoder.patch_size, encoder.channels, encoder.embed_dim,
                          encoder.depths, encoder.window_size, encoder.mlp_ratio)
    if isinstance(encoder, ResNet):
        if image_size is None or num_encoded is not None:
            raise ValueError(f"Expected image_size (and no num_encoded) for a {type(encoder).__name__}. Received: "
                             f"image_size={image_size}, num_encoded={num_encoded}")
        return resnet_flops(image_size, encoder.channels, encoder.width, encoder.stem, encoder.block, encoder.depths)
    raise ValueError(f"Expected a VisionTransformer, SwinTransformer or ResNet encoder. Received: "
                     f"{type(encoder).__name__}")


def image_flops(encoder, image_size):
    """Forward FLOPs of one whole image: every patch of a ViT or Swin (whose input size is its own), or a ResNet
    on ``image_size``-pixel images."""
    if isinstance(encoder, (VisionTransformer, SwinTransformer)):
        return encoder_flops(encoder)
    return encoder_flops(encoder, image_size=image_size)


def decoder_flops(decoder, num_kept):
    """Forward FLOPs of one image through an ``MAEDecoder`` given ``num_kept`` encoded patches."""
    if not isinstance(decoder, MAEDecoder):
        raise ValueError(f"Expected an MAEDecoder. Received: {type(decoder).__name__}")
    return mae_decoder_flops(num_kept, decoder.num_patches, decoder.encoder_dim, decoder.patch_dim, decoder.dim,
                             decoder.depth, decoder.mlp_ratio)
