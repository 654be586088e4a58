import numpy as np
import pytest

from kmedssl.backbones import ResNet18
from tests.backbones.backbone_checks import run_backbone_checks
from tests.helpers import assert_close, to_numpy


def test_backbone_checks_cifar_stem(rng, tmp_path):
    images = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    model = run_backbone_checks(ResNet18, dict(channels=1, stem="cifar", width=8), (images,), (2, 64), tmp_path)
    assert model.dim == 64
    assert_close(model.features(images), to_numpy(model(images, training=False)), rtol=0, atol=0)


def test_stems_and_downsampling(rng):
    cifar = ResNet18(width=8)
    imagenet = ResNet18(channels=3, stem="imagenet", width=8)
    assert tuple(cifar.weights[0].shape) == (3, 3, 1, 8)  # 1-channel 3x3 stem (paper 001)
    assert tuple(imagenet.weights[0].shape) == (7, 7, 3, 8)
    # Spatial size before pooling: cifar 16 -> 16, 8, 4, 2; imagenet 16 -> 8 -> 4, 4, 2, 1, 1.
    x = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    for layer in cifar.stem_layers + cifar.blocks:
        x = layer(x)
    assert tuple(x.shape) == (2, 2, 2, 64)
    x = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    for layer in imagenet.stem_layers + imagenet.blocks:
        x = layer(x)
    assert tuple(x.shape) == (2, 1, 1, 64)


def test_invalid_arguments_and_inputs(rng):
    with pytest.raises(ValueError, match="stem"):
        ResNet18(stem="vit")
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, height, width, 1\)"):
        ResNet18(width=8)(rng.normal(size=(2, 16, 16, 3)).astype("float32"))


@pytest.mark.backend_free
def test_validate_config_names_the_bad_fields_without_building():
    with pytest.raises(ValueError, match=r"Received: channels=0, width=8.0"):
        ResNet18.validate_config({"channels": 0, "width": 8.0})
    with pytest.raises(ValueError, match="stem"):
        ResNet18.validate_config({"stem": None})


def test_parameter_count_of_a_config_is_that_of_the_built_model():
    for model in (ResNet18(width=8), ResNet18(channels=3, stem="imagenet", width=4)):
        assert ResNet18.parameter_count(model.get_config()) == model.count_params()
