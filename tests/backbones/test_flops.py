"""Analytic FLOPs of the encoders: hand counts of tiny models, and (torch) torch's own FLOP counter."""

import keras
import numpy as np
import pytest

from kmedssl.backbones import ResNet18, ResNet50, SwinTransformer, mae_decoder, vision_transformer
from kmedssl.backbones.flops import (
    decoder_flops,
    encoder_flops,
    image_flops,
    mae_decoder_flops,
    resnet18_flops,
    resnet50_flops,
    resnet_flops,
    swin_flops,
    transformer_block_flops,
    vit_flops,
)
from kmedssl.bench.phantom import step_flops
from kmedssl.methods.ace import ACE
from kmedssl.recipes.registry import make_recipe

# A tiny ViT: 16 x 16 px images, 4 px patches -> 16 patches of P = 16 values, D = 8, one block, MLP 32.
TINY_VIT = dict(image_size=16, patch_size=4, dim=8, depth=1, num_heads=2)
# A tiny Swin: 16 x 16 px, 2 px patches -> an 8 x 8 grid of P = 4 values, C = 4; stage 0 (two blocks, the second
# shifted) in 4 windows of 4 x 4, merging to a 4 x 4 grid of C = 8; stage 1 (one block) in one 4 x 4 window.
TINY_SWIN = dict(image_size=16, patch_size=2, embed_dim=4, depths=(2, 1), num_heads=(1, 2), window_size=4)


@pytest.mark.backend_free
def test_vit_hand_count():
    # All 16 patches: T = 17 tokens.
    embed = 2 * 16 * 16 * 8  # 16 patches x (16 -> 8)
    qkv = 2 * 17 * 8 * 24
    scores_and_mix = 2 * (2 * 17 * 17 * 8)  # q k^T and attn v over all heads
    proj = 2 * 17 * 8 * 8
    mlp = 2 * 17 * 8 * 32 + 2 * 17 * 32 * 8
    assert embed + qkv + scores_and_mix + proj + mlp == 39456
    assert vit_flops(16, dim=8, depth=1, patch_dim=16) == 39456
    # 3 selected patches: T = 4 tokens; two blocks cost twice the block part.
    subset_block = 2 * 4 * 8 * 24 + 4 * 4 * 4 * 8 + 2 * 4 * 8 * 8 + 4 * 4 * 8 * 32
    assert vit_flops(3, dim=8, depth=1, patch_dim=16) == 2 * 3 * 16 * 8 + subset_block == 7424
    assert vit_flops(3, dim=8, depth=2, patch_dim=16) == 2 * 3 * 16 * 8 + 2 * subset_block
    assert transformer_block_flops(4, 8, mlp_ratio=2.0) == subset_block - 4 * 4 * 8 * (32 - 16)


@pytest.mark.backend_free
def test_vit_b16_at_224_is_the_usual_17_6_gmacs():
    # The widely quoted 17.6 "GFLOPs" of ViT-B/16 at 224 px (3 channels) are multiply-accumulates.
    macs = vit_flops(196, dim=768, depth=12, patch_dim=16 * 16 * 3) / 2
    assert abs(macs / 1e9 - 17.6) < 0.05


@pytest.mark.backend_free
def test_mae_decoder_hand_count():
    # 16 patches of P = 16, encoder width 8, decoder width 4, one block (MLP 16), 3 patches kept.
    embed = 2 * 4 * 8 * 4  # CLS + 3 kept tokens, 8 -> 4
    block = 2 * 17 * 4 * 12 + 4 * 17 * 17 * 4 + 2 * 17 * 4 * 4 + 2 * (2 * 17 * 4 * 16)
    predict = 2 * 17 * 4 * 16  # every row, CLS included, 4 -> 16
    assert mae_decoder_flops(3, 16, encoder_dim=8, patch_dim=16, dim=4, depth=1) == embed + block + predict
    with pytest.raises(ValueError, match="num_kept <= num_patches"):
        mae_decoder_flops(17, 16, encoder_dim=8, patch_dim=16, dim=4, depth=1)


@pytest.mark.backend_free
def test_resnet18_hand_count():
    # Width 4 on 8 x 8 px, CIFAR stem: feature maps 8, 8, 4, 2, 1 px.
    stem = 2 * 64 * 9 * 1 * 4
    stage_1 = 4 * (2 * 64 * 9 * 4 * 4)  # four 3x3 convs 4 -> 4, no projection
    stage_2 = 2 * 16 * 9 * 4 * 8 + 3 * (2 * 16 * 9 * 8 * 8) + 2 * 16 * 4 * 8
    stage_3 = 2 * 4 * 9 * 8 * 16 + 3 * (2 * 4 * 9 * 16 * 16) + 2 * 4 * 8 * 16
    stage_4 = 2 * 1 * 9 * 16 * 32 + 3 * (2 * 1 * 9 * 32 * 32) + 2 * 1 * 16 * 32
    assert resnet18_flops(8, channels=1, width=4) == stem + stage_1 + stage_2 + stage_3 + stage_4 == 274944
    # ImageNet stem on 16 px: 7x7 stride 2 -> 8 px, max-pool -> 4 px, then the stages of a CIFAR-stem
    # ResNet on 4 px with 4 input channels, without that ResNet's 3x3 stem.
    imagenet = resnet18_flops(16, channels=1, width=4, stem="imagenet")
    assert imagenet == 2 * 64 * 49 * 1 * 4 + resnet18_flops(4, channels=4, width=4) - 2 * 16 * 9 * 4 * 4
    with pytest.raises(ValueError, match="stem"):
        resnet18_flops(8, stem="vgg")


@pytest.mark.backend_free
def test_bottleneck_resnet_hand_count():
    # Width 2, one bottleneck block per stage, CIFAR stem on 8 px: stage sides 8, 4, 2, 1; base widths 2, 4, 8, 16,
    # outputs 4x. The first 1x1 runs on the block's input side, the 3x3 strides, the projection is on the output.
    stem = 2 * 64 * 9 * 1 * 2
    stage_1 = 2 * 64 * (2 * 2 + 9 * 2 * 2 + 2 * 8) + 2 * 64 * 2 * 8  # 1x1 2->2, 3x3 2->2, 1x1 2->8; projection 2->8
    stage_2 = 2 * 64 * 8 * 4 + 2 * 16 * (9 * 4 * 4 + 4 * 16) + 2 * 16 * 8 * 16
    stage_3 = 2 * 16 * 16 * 8 + 2 * 4 * (9 * 8 * 8 + 8 * 32) + 2 * 4 * 16 * 32
    stage_4 = 2 * 4 * 32 * 16 + 2 * 1 * (9 * 16 * 16 + 16 * 64) + 2 * 1 * 32 * 64
    total = resnet_flops(8, channels=1, width=2, block="bottleneck", depths=(1, 1, 1, 1))
    assert total == stem + stage_1 + stage_2 + stage_3 + stage_4 == 56064
    # A second block in a stage: no stride, no projection, input 4 x base width.
    second = 2 * 64 * (8 * 2 + 9 * 2 * 2 + 2 * 8)
    assert resnet_flops(8, channels=1, width=2, block="bottleneck", depths=(2, 1, 1, 1)) == total + second
    with pytest.raises(ValueError, match="block"):
        resnet_flops(8, block="preact")


@pytest.mark.backend_free
def test_resnet_at_224_are_torchvisions_gmacs():
    # torchvision's model tables: ResNet-50 4.09, ResNet-18 1.81 "GFLOPS" (multiply-accumulates, 3-channel 224 px).
    assert abs(resnet50_flops(224, channels=3) / 2e9 - 4.09) < 0.005
    assert abs(resnet18_flops(224, channels=3, stem="imagenet") / 2e9 - 1.81) < 0.005


@pytest.mark.backend_free
def test_encoder_flops_reads_the_model():
    vit = vision_transformer("phantom", **TINY_VIT)
    assert encoder_flops(vit) == 39456 and encoder_flops(vit, num_encoded=3) == 7424
    resnet = ResNet18(width=4)
    assert encoder_flops(resnet, image_size=8) == 274944
    decoder = mae_decoder("phantom", vit.num_patches, vit.patch_dim, vit.dim, dim=4, depth=1, num_heads=1)
    assert decoder_flops(decoder, 3) == mae_decoder_flops(3, 16, encoder_dim=8, patch_dim=16, dim=4, depth=1)
    with pytest.raises(ValueError, match="num_encoded <= 16"):
        encoder_flops(vit, num_encoded=17)
    with pytest.raises(ValueError, match="image_size"):
        encoder_flops(resnet)
    with pytest.raises(ValueError, match="VisionTransformer, SwinTransformer or ResNet"):
        encoder_flops(decoder)


def _swin_hand_count(grid, patch_dim, dims, depths, window, mlp_ratio=4):
    """Swin FLOPs written out token by token: per block ``qkv + sum over windows (q k^T + attn v) + proj + MLP``,
    per merging ``(grid / 2)^2`` tokens ``4 C -> 2 C``."""
    total = 2 * grid * grid * patch_dim * dims[0]  # patch embedding
    for s, (dim, depth) in enumerate(zip(dims, depths)):
        tokens, w = grid * grid, min(window, grid)
        windows, per_window = (grid // w) ** 2, w * w
        qkv, proj = 2 * tokens * dim * 3 * dim, 2 * tokens * dim * dim
        scores = mix = windows * 2 * per_window * per_window * dim  # q k^T, attn v of every window, all heads
        mlp = 2 * 2 * tokens * dim * (mlp_ratio * dim)
        total += depth * (qkv + scores + mix + proj + mlp)
        if s + 1 < len(dims):
            grid //= 2
            total += 2 * grid * grid * (4 * dim) * (2 * dim)
    return total


@pytest.mark.backend_free
def test_swin_hand_count():
    # Stage 0: T = 64, D = 4, 4 windows of 16: per block qkv 6144 + attention 4 x 2 x 2 x 16^2 x 4 = 16384
    # + proj 2048 + MLP 16384; merging 16 tokens 16 -> 8: 4096. Stage 1: T = 16, D = 8, one window: qkv 6144
    # + attention 8192 + proj 2048 + MLP 16384.
    expected = 2 * 64 * 4 * 4 + 2 * (6144 + 16384 + 2048 + 16384) + 4096 + (6144 + 8192 + 2048 + 16384)
    assert expected == _swin_hand_count(8, 4, (4, 8), (2, 1), 4) == 120832
    assert swin_flops(16, 2, 1, 4, (2, 1), 4) == expected
    # A window smaller than the grid costs less attention than one window of the whole grid (a ViT's).
    assert swin_flops(32, 2, 1, 4, (2, 1), 4) == _swin_hand_count(16, 4, (4, 8), (2, 1), 4)
    assert swin_flops(32, 2, 1, 4, (2, 1), 4) < swin_flops(32, 2, 1, 4, (2, 1), 16)
    assert swin_flops(24, 3, 2, 6, (1, 1, 1), 2, mlp_ratio=2.0) == _swin_hand_count(8, 18, (6, 12, 24), (1, 1, 1), 2,
                                                                                     mlp_ratio=2)
    # Liu et al. 2021 Table 1: Swin-T 4.5G, Swin-B 15.4G "FLOPs" (multiply-accumulates, 3-channel 224 px).
    assert abs(swin_flops(224, 4, 3, 96, (2, 2, 6, 2), 7) / 2e9 - 4.5) < 0.05
    assert abs(swin_flops(224, 4, 3, 128, (2, 2, 18, 2), 7) / 2e9 - 15.4) < 0.05


def test_encoder_flops_reads_a_swin():
    swin = SwinTransformer(**TINY_SWIN)
    assert encoder_flops(swin) == image_flops(swin, 16) == encoder_flops(swin, image_size=16) == 120832
    with pytest.raises(ValueError, match="whole images"):
        encoder_flops(swin, num_encoded=3)
    with pytest.raises(ValueError, match="image_size None or 16"):
        encoder_flops(swin, image_size=32)
    # kmedssl bench's step FLOPs of ACE on a Swin: student and EMA teacher on both crops; only the student trains.
    ace = ACE(swin, total_steps=2, head_dim=8, head_hidden_dim=8, head_bottleneck_dim=4)
    recipe = make_recipe("ace", encoder="swin", image_size=64)  # encoder_work reads the model, not image_size
    assert step_flops(recipe, ace) == (4 * 120832, 8 * 120832)


def _torch_count(function):
    """FLOPs that ``torch.utils.flop_counter`` counts while ``function`` runs, with attention in the math
    backend (on CPU the fused attention kernel has no FLOP formula; the math path is plain ``bmm``)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.utils.flop_counter needs the torch backend")
def test_formulas_match_torch_flop_counter(rng):
    batch = 2
    vit = vision_transformer("phantom", image_size=24, patch_size=4, dim=12, depth=2, num_heads=3)  # 36 patches
    images = rng.uniform(size=(batch, 24, 24, 1)).astype("float32")
    indices = np.stack([rng.permutation(36)[:7] for _ in range(batch)]).astype("int32")
    assert _torch_count(lambda: vit(images)) == batch * encoder_flops(vit)
    assert _torch_count(lambda: vit(images, token_indices=indices)) == batch * encoder_flops(vit, num_encoded=7)

    decoder = mae_decoder("phantom", vit.num_patches, vit.patch_dim, vit.dim, dim=8, depth=1, num_heads=2)
    tokens = rng.normal(size=(batch, 1 + 9, vit.dim)).astype("float32")
    ids_restore = np.stack([rng.permutation(36) for _ in range(batch)]).astype("int32")
    assert _torch_count(lambda: decoder(tokens, ids_restore)) == batch * decoder_flops(decoder, 9)

    # encoder_flops reads each model's block and depths; odd sides go through every stride.
    for resnet, size in ((ResNet18(width=4), 12), (ResNet18(width=4, stem="imagenet"), 19),
                         (ResNet50(width=2), 19), (ResNet50(width=2, stem="cifar"), 13)):
        pixels = rng.uniform(size=(batch, size, size, 1)).astype("float32")
        assert _torch_count(lambda: resnet(pixels)) == batch * encoder_flops(resnet, image_size=size), resnet.name

    # A Swin with shifted windows in stage 0 and one window in stage 1.
    swin = SwinTransformer(**{**TINY_SWIN, "image_size": 32})
    pixels = rng.uniform(size=(batch, 32, 32, 1)).astype("float32")
    assert _torch_count(lambda: swin(pixels)) == batch * encoder_flops(swin)
