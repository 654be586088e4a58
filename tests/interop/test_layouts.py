"""timm ViT and torchvision ResNet-18 layouts (no timm or torchvision import: torchvision's wheel does not load
beside the CPU torch build): names and shapes from their sources, and forward passes written from their
sources in float64 torch, against kmedssl's encoders on the active backend."""

import numpy as np
import pytest

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.interop import (
    InteropError,
    detect_layout,
    encoder_state,
    load_into,
    resnet_from_torchvision,
    resnet_to_torchvision,
    vit_from_timm,
    vit_to_timm,
)
from kmedssl.interop.safetensors_io import save_file
from tests.helpers import to_numpy
from tests.interop.references import (
    images,
    randomised,
    timm_vit_tokens,
    torchvision_resnet18_shapes,
    torchvision_resnet_features,
)


def test_vit_to_timm_matches_timms_forward_and_comes_back():
    encoder = randomised(VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=2, num_heads=2))
    state = encoder_state(encoder)
    timm = vit_to_timm(state, channels=1)
    assert detect_layout(timm) == "timm-vit"
    assert timm["pos_embed"].shape == (1, 17, 32) and timm["patch_embed.proj.weight"].shape == (32, 1, 8, 8)
    assert timm["blocks.1.attn.qkv.weight"].shape == (96, 32) and timm["blocks.1.mlp.fc1.weight"].shape == (128, 32)
    x = images((2, 32, 32, 1))
    np.testing.assert_allclose(to_numpy(encoder(x)), timm_vit_tokens(timm, x, num_heads=2), atol=5e-5, rtol=1e-5)
    back, _, leftovers = vit_from_timm(timm)
    assert not leftovers
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_resnet18_to_torchvision_has_its_names_and_shapes_and_forward(stem):
    encoder = randomised(ResNet18(channels=1, stem=stem, width=8))
    tv = resnet_to_torchvision(encoder_state(encoder))
    expected = torchvision_resnet18_shapes(channels=1, width=8)
    expected.pop("fc.weight"), expected.pop("fc.bias")
    if stem == "cifar":
        expected["conv1.weight"] = (8, 1, 3, 3)
    assert {k: tuple(v.shape) for k, v in tv.items()} == expected
    x = images((2, 32, 32, 1))
    np.testing.assert_allclose(to_numpy(encoder.features(x)), torchvision_resnet_features(tv, x, stem=stem),
                               atol=1e-4, rtol=1e-5)
    back, _, leftovers = resnet_from_torchvision(tv)
    assert not leftovers
    for name, value in encoder_state(encoder).items():
        np.testing.assert_array_equal(back[name], value)


def test_a_torchvision_file_with_fc_and_rgb_loads_into_a_grey_encoder(tmp_path):
    rng = np.random.default_rng(1)
    shapes = torchvision_resnet18_shapes(channels=3, width=8, num_classes=10)
    state = {k: (rng.uniform(0.5, 1.5, s) if k.endswith(("running_var", "weight")) and len(s) == 1
                 else rng.normal(0, 1 / np.sqrt(np.prod(s[1:])), s) if len(s) > 1
                 else rng.normal(0, 0.3, s)).astype("float32") for k, s in shapes.items()}
    state.update({k: np.zeros((), np.int64) for k in shapes if k.endswith("num_batches_tracked")})
    save_file(state, tmp_path / "resnet18.safetensors")
    encoder = load_into(ResNet18(channels=1, stem="imagenet", width=8), tmp_path / "resnet18.safetensors")
    x = images((2, 32, 32, 1))
    expected = torchvision_resnet_features(state, np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=1e-4, rtol=1e-5)


def test_unsupported_architectures_are_refused(tmp_path):
    # A bottleneck (ResNet-50) file into a ResNet18: tests/interop/test_resnet50.py.
    encoder = VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=1, num_heads=2)
    timm = vit_to_timm(encoder_state(encoder), channels=1)
    timm["blocks.0.ls1.gamma"] = np.ones(32, "float32")  # layer scale: not in kmedssl's ViT
    save_file(timm, tmp_path / "vit.safetensors")
    with pytest.raises(InteropError, match=r"'blocks\.0\.ls1\.gamma' has no counterpart"):
        load_into(encoder, tmp_path / "vit.safetensors")
