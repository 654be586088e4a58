"""kmedssl's ResNet-50 against MONAI's ``resnet50`` and transformers' bottleneck ``ResNetModel`` (random weights,
converted both ways), torchvision's ``resnet50`` layout by names, shapes and a forward pass written from its
source, and RadImageNet's PyTorch files (torchvision's children numbered under ``backbone.``). One width-8
encoder (stages 32 ... 256 channels wide) with RadImageNet's input normalisation (mean 0.5, std 0.5) serves every
test (each assigns all its weights; building is the slow part on JAX), on 64 px images, batch 2."""

import json

import numpy as np
import pytest

from kmedssl.backbones import ResNet18, ResNet50
from kmedssl.interop import (
    InteropError,
    encoder_state,
    export,
    load_into,
    parse_init,
    resnet_from_torchvision,
    resnet_to_torchvision,
    resnet_to_transformers,
)
from kmedssl.interop.safetensors_io import save_file
from tests.helpers import to_numpy
from tests.interop.references import (
    images,
    nchw,
    numpy_state,
    randomise_batchnorms,
    randomised,
    random_state,
    resnet_features,
    torch,
    torchvision_resnet_features,
    torchvision_resnet_shapes,
    transformers,
)

monai_nets = pytest.importorskip("monai.networks.nets")
WIDTH = 8
ATOL = 1e-4
MEAN, STD = 0.5, 0.5  # RadImageNet's PyTorch example: (p - 127.5) * 2 / 255 on 8-bit pixels p


@pytest.fixture(scope="module")
def x():
    return images((2, 64, 64, 1))


@pytest.fixture(scope="module")
def resnet50():
    return ResNet50(channels=1, width=WIDTH, input_mean=MEAN, input_std=STD)


@pytest.fixture(scope="module")
def monai_reference():
    """MONAI's ``resnet50`` in 2-D with the options of the ResNet-18 mapping (7x7/2 stem, max-pool, shortcut B with
    its default conv bias, no ``fc``), width 8; random BatchNorms and shortcut biases."""
    torch.manual_seed(0)
    model = monai_nets.resnet50(spatial_dims=2, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2,
                                feed_forward=False, widen_factor=WIDTH / 64).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("downsample.0.bias"):
                parameter.uniform_(-0.5, 0.5)
    return randomise_batchnorms(model)


@pytest.fixture(scope="module")
def hf_reference():
    """transformers' ``ResNetModel`` with bottleneck layers [3, 4, 6, 3] (ResNet-50), width 8."""
    torch.manual_seed(1)
    config = transformers.ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], embedding_size=WIDTH,
                                       hidden_sizes=[4 * WIDTH, 8 * WIDTH, 16 * WIDTH, 32 * WIDTH], num_channels=1)
    return randomise_batchnorms(transformers.ResNetModel(config).eval())


@pytest.fixture(scope="module")
def torchvision_rgb():
    """A random torchvision ``resnet50`` state dict (3 channels, width 8, no ``fc``: as RadImageNet releases it)."""
    shapes = torchvision_resnet_shapes("bottleneck", (3, 4, 6, 3), channels=3, width=WIDTH)
    return {k: v for k, v in random_state(shapes, seed=2).items() if not k.startswith("fc.")}


def test_resnet50_from_monai_gives_monais_features_and_exports_back(tmp_path, resnet50, monai_reference, x):
    save_file(numpy_state(monai_reference), tmp_path / "monai-resnet50.safetensors")
    encoder = load_into(resnet50, tmp_path / "monai-resnet50.safetensors")
    with torch.no_grad():
        expected = monai_reference(nchw(x, MEAN, STD)).numpy()
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=ATOL, rtol=1e-5)

    export(encoder, "monai", tmp_path / "monai")  # shortcut biases folded: bias_downsample=False
    config = json.loads((tmp_path / "monai" / "config.json").read_text())
    assert config["block"] == "bottleneck" and config["layers"] == [3, 4, 6, 3]
    back = monai_nets.ResNet(**config).eval()
    back.load_state_dict(numpy_to_torch(resnet_to_torchvision(encoder_state(encoder))))  # strict
    with torch.no_grad():
        np.testing.assert_allclose(back(nchw(x, MEAN, STD)).numpy(), expected, atol=ATOL, rtol=1e-5)


def test_resnet50_from_transformers_gives_the_same_features_and_back(tmp_path, resnet50, hf_reference, x):
    save_file(numpy_state(hf_reference), tmp_path / "hf-resnet50.safetensors")
    encoder = load_into(resnet50, tmp_path / "hf-resnet50.safetensors")
    expected = resnet_features(hf_reference, x, MEAN, STD)
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=ATOL, rtol=1e-5)

    export(encoder, "transformers", tmp_path / "hf")
    back = transformers.ResNetModel.from_pretrained(tmp_path / "hf").eval()
    assert back.config.layer_type == "bottleneck" and list(back.config.depths) == [3, 4, 6, 3]
    assert {k: tuple(v.shape) for k, v in resnet_to_transformers(encoder_state(encoder)).items()} == {
        k: tuple(v.shape) for k, v in hf_reference.state_dict().items()}
    np.testing.assert_allclose(resnet_features(back, x, MEAN, STD), expected, atol=1e-5, rtol=1e-6)


def test_resnet50_to_torchvision_has_its_names_and_shapes_and_forward_and_comes_back(tmp_path, resnet50, x):
    encoder = randomised(resnet50)
    tv = resnet_to_torchvision(encoder_state(encoder))
    expected = torchvision_resnet_shapes("bottleneck", (3, 4, 6, 3), channels=1, width=WIDTH)
    expected.pop("fc.weight"), expected.pop("fc.bias")
    assert {k: tuple(v.shape) for k, v in tv.items()} == expected
    np.testing.assert_allclose(to_numpy(encoder.features(x)), torchvision_resnet_features(tv, x, mean=MEAN, std=STD),
                               atol=ATOL, rtol=1e-5)
    back, _, leftovers = resnet_from_torchvision(tv)
    assert not leftovers
    for name, value in encoder_state(encoder).items():
        np.testing.assert_array_equal(back[name], value)
    config = json.loads((export(encoder, "torchvision", tmp_path / "tv")[1]).read_text())
    assert config["architecture"] == "resnet50" and config["layers"] == [3, 4, 6, 3]


def radimagenet_children(state):
    """RadImageNet's PyTorch layout: ``backbone = nn.Sequential(*list(resnet50().children())[:9])``."""
    number = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    return {"backbone." + ".".join([number[k.split(".")[0]], *k.split(".")[1:]]): v for k, v in state.items()}


@pytest.mark.parametrize("form", ["radimagenet", "backbone.", "module.", "torchvision-with-fc"])
def test_a_radimagenet_style_file_loads_into_a_grey_resnet50(tmp_path, resnet50, torchvision_rgb, x, form):
    if form == "radimagenet":
        state = radimagenet_children(torchvision_rgb)
    elif form == "torchvision-with-fc":
        state = {**torchvision_rgb, "fc.weight": np.zeros((3, 32 * WIDTH), "float32"),
                 "fc.bias": np.zeros(3, "float32")}
    else:
        state = {form + k: v for k, v in torchvision_rgb.items()}
    save_file(state, tmp_path / "ResNet50.safetensors")
    path, normalization = parse_init(tmp_path / "ResNet50.safetensors")  # what --init PATH does
    encoder = load_into(resnet50, path, normalization)  # RGB summed to grey; RadImageNet's normalisation built in
    expected = torchvision_resnet_features(torchvision_rgb, np.repeat(x, 3, axis=-1), mean=MEAN, std=STD)
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=ATOL, rtol=1e-5)


def test_a_weights_only_torch_file_in_radimagenets_layout_loads(tmp_path, resnet50, torchvision_rgb, x):
    path = tmp_path / "ResNet50.pt"
    torch.save(numpy_to_torch(radimagenet_children(torchvision_rgb)), path)
    encoder = load_into(resnet50, path)
    expected = torchvision_resnet_features(torchvision_rgb, np.repeat(x, 3, axis=-1), mean=MEAN, std=STD)
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=ATOL, rtol=1e-5)


def test_a_file_of_the_other_block_kind_is_one_line_naming_file_and_tensor(tmp_path, resnet50, torchvision_rgb):
    save_file(radimagenet_children(torchvision_rgb), tmp_path / "ResNet50.safetensors")
    with pytest.raises(InteropError) as caught:
        load_into(ResNet18(channels=1, stem="imagenet", width=WIDTH), tmp_path / "ResNet50.safetensors")
    message = str(caught.value)
    assert message == (f"{tmp_path / 'ResNet50.safetensors'}: tensor 'layer1.0.conv1.weight' -> "
                       f"'stage_1_block_1/conv_1/kernel': expected shape (3, 3, 8, 8), received (1, 1, 8, 8) (the "
                       f"file's ResNet has bottleneck blocks, ResNet-50 style: load it into a ResNet50)")

    resnet18 = random_state(torchvision_resnet_shapes("basic", (2, 2, 2, 2), channels=3, width=WIDTH))
    save_file(resnet18, tmp_path / "resnet18.safetensors")
    with pytest.raises(InteropError, match=r"^\S*resnet18\.safetensors: tensor 'layer1\.0\.conv1\.weight' .*"
                                           r"expected shape \(1, 1, 8, 8\), received \(3, 3, 8, 8\) .*ResNet18\)$"):
        load_into(resnet50, tmp_path / "resnet18.safetensors")


def numpy_to_torch(state):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def test_a_recipe_with_resnet_depth_50_starts_from_a_radimagenet_file(tmp_path, torchvision_rgb, x):
    """What ``kmedssl pretrain simclr --set resnet_depth=50 --set resnet_stem=imagenet --init radimagenet:PATH``
    builds and loads: the recipe's ResNet-50, with RadImageNet's [-1, 1] scaling folded into its first layer."""
    from kmedssl.recipes import make_recipe

    recipe = make_recipe("simclr", "phantom", resnet_depth=50, resnet_stem="imagenet", resnet_width=WIDTH)
    save_file(radimagenet_children(torchvision_rgb), tmp_path / "ResNet50.safetensors")
    path, normalization = parse_init(f"radimagenet:{tmp_path / 'ResNet50.safetensors'}")
    assert normalization == "radimagenet"
    encoder = load_into(recipe.build_encoder(), path, normalization)
    assert isinstance(encoder, ResNet50)
    expected = torchvision_resnet_features(torchvision_rgb, np.repeat(x, 3, axis=-1), mean=MEAN, std=STD)
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=ATOL, rtol=1e-5)
    with pytest.raises(ValueError, match="resnet_depth"):
        make_recipe("simclr", "phantom", resnet_depth=34)
