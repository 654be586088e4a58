"""kmedssl's ViT and ResNet-18 against Hugging Face ``transformers``' own forward passes: random
reference weights converted into kmedssl give the same outputs on the active backend, and the way back gives
the reference the same outputs again."""

import numpy as np
import pytest

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.interop import (
    InteropError,
    encoder_state,
    load_into,
    resnet_to_transformers,
    vit_config_from_transformers,
    vit_to_transformers,
)
from kmedssl.interop.safetensors_io import save_file
from tests.helpers import to_numpy
from tests.interop.references import (
    hf_resnet,
    hf_vit,
    images,
    numpy_state,
    resnet_features,
    torch,
    transformers,
    vit_tokens,
)

ATOL = 2e-5


def saved(tmp_path, state, name="weights.safetensors"):
    save_file(state, tmp_path / name)
    return tmp_path / name


def test_vit_from_transformers_gives_the_same_tokens_and_back(tmp_path):
    reference = hf_vit(channels=1)
    encoder = VisionTransformer(**vit_config_from_transformers(reference.config))
    load_into(encoder, saved(tmp_path, numpy_state(reference)))
    x = images((2, 32, 32, 1))
    expected = vit_tokens(reference, x)
    np.testing.assert_allclose(to_numpy(encoder(x)), expected, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected[:, 0], atol=ATOL, rtol=1e-5)

    back = transformers.ViTModel(reference.config, add_pooling_layer=False).eval()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in vit_to_transformers(encoder_state(encoder), 1).items()})
    np.testing.assert_allclose(vit_tokens(back, x), expected, atol=ATOL, rtol=1e-5)


def test_vit_rgb_weights_sum_to_one_channel_for_a_grey_image(tmp_path):
    reference = hf_vit(channels=3)
    encoder = VisionTransformer(**{**vit_config_from_transformers(reference.config), "channels": 1})
    load_into(encoder, saved(tmp_path, numpy_state(reference)))
    x = images((2, 32, 32, 1))
    expected = vit_tokens(reference, np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(to_numpy(encoder(x)), expected, atol=ATOL, rtol=1e-5)


def test_vit_positions_interpolate_as_transformers_does(tmp_path):
    reference = hf_vit(channels=1)
    config = {**vit_config_from_transformers(reference.config), "image_size": 48}  # grid 4 -> 6
    encoder = VisionTransformer(**config)
    load_into(encoder, saved(tmp_path, numpy_state(reference)))
    x = images((2, 48, 48, 1))
    expected = vit_tokens(reference, x, interpolate_pos_encoding=True)
    np.testing.assert_allclose(to_numpy(encoder(x)), expected, atol=5e-5, rtol=1e-5)


def test_imagenet_normalisation_folds_into_the_patch_embedding(tmp_path):
    reference = hf_vit(channels=3)
    encoder = VisionTransformer(**{**vit_config_from_transformers(reference.config), "channels": 1})
    load_into(encoder, saved(tmp_path, numpy_state(reference)), source_normalization="imagenet")
    x = images((2, 32, 32, 1))
    mean = np.array([0.485, 0.456, 0.406], "float32")
    std = np.array([0.229, 0.224, 0.225], "float32")
    rgb = (np.repeat(x, 3, axis=-1) - mean) / std  # what an ImageNet model sees of a grey image
    with torch.no_grad():
        expected = reference(torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())).last_hidden_state.numpy()
    np.testing.assert_allclose(to_numpy(encoder(x)), expected, atol=1e-4, rtol=1e-4)


def test_resnet18_from_transformers_gives_the_same_features_and_back(tmp_path):
    reference = hf_resnet(channels=1)
    encoder = ResNet18(channels=1, stem="imagenet", width=8)
    load_into(encoder, saved(tmp_path, numpy_state(reference)))
    x = images((2, 32, 32, 1))
    expected = resnet_features(reference, x)
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=1e-4, rtol=1e-5)

    back = transformers.ResNetModel(reference.config).eval()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in resnet_to_transformers(encoder_state(encoder)).items()})
    np.testing.assert_allclose(resnet_features(back, x), expected, atol=1e-5, rtol=1e-6)


def test_a_weights_only_torch_file_loads(tmp_path):
    reference = hf_vit(channels=1)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, path)
    encoder = VisionTransformer(**vit_config_from_transformers(reference.config))
    load_into(encoder, path)
    x = images((1, 32, 32, 1))
    np.testing.assert_allclose(to_numpy(encoder.features(x)), vit_tokens(reference, x)[:, 0], atol=ATOL, rtol=1e-5)


def test_a_pickled_object_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": EvilPickle()}, path)
    encoder = ResNet18(channels=1, stem="imagenet", width=8)
    with pytest.raises(InteropError, match=r"evil\.pt: not a weights-only PyTorch file") as caught:
        load_into(encoder, path)
    assert "\n" not in str(caught.value)


class EvilPickle:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_mismatching_tensors_are_named_in_one_line(tmp_path):
    reference = hf_vit(channels=1)
    config = {**vit_config_from_transformers(reference.config), "dim": 48, "num_heads": 2}
    with pytest.raises(InteropError) as caught:
        load_into(VisionTransformer(**config), saved(tmp_path, numpy_state(reference)))
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "weights.safetensors"))
    assert "'embeddings.cls_token'" in message and "(1, 1, 48)" in message and "(1, 1, 32)" in message
    assert "\n" not in message

    deeper = {**vit_config_from_transformers(reference.config), "depth": 3}
    with pytest.raises(InteropError, match=r"no tensor for the encoder's 'block_2/"):
        load_into(VisionTransformer(**deeper), tmp_path / "weights.safetensors")

    with pytest.raises(InteropError, match=r"stem_conv.*expected shape \(3, 3, 1, 8\), received \(7, 7, 1, 8\).*"
                                           r"stem='imagenet'"):
        load_into(ResNet18(channels=1, stem="cifar", width=8),
                  saved(tmp_path, numpy_state(hf_resnet()), "r.safetensors"))


def test_kmedssl_keras_file_and_own_export_load(tmp_path):
    source = VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=1, num_heads=2, seed=1)
    source.save(tmp_path / "encoder.keras")
    target = VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=1, num_heads=2, seed=2)
    load_into(target, tmp_path / "encoder.keras")
    for name, value in encoder_state(source).items():
        np.testing.assert_array_equal(encoder_state(target)[name], value)
