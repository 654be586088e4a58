import os
import subprocess
import sys

import keras
import pytest

from kmedssl.backbones import ResNet, ResNet18, ResNet50
from tests.backbones.backbone_checks import run_backbone_checks
from tests.helpers import assert_close, to_numpy


def test_backbone_checks_cifar_stem(rng, tmp_path):
    images = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    model = run_backbone_checks(ResNet18, dict(channels=1, stem="cifar", width=8), (images,), (2, 64), tmp_path)
    assert model.dim == 64
    assert_close(model.features(images), to_numpy(model(images, training=False)), rtol=0, atol=0)


def test_a_bottleneck_resnet_round_trips_its_config_and_file(rng, tmp_path):
    # The training path (gradients, fit, BatchNorm updates) is BasicBlock's code, checked above; here what the
    # bottleneck adds: its config (block, depths) and saving. A shallow ResNet: ResNet50's 16 blocks build slowly
    # on JAX (tests/interop/test_resnet50.py checks ResNet50's outputs against MONAI and transformers).
    model = ResNet(width=4, block="bottleneck", depths=(1, 1, 1, 1))
    config = model.get_config()
    assert config["block"] == "bottleneck" and config["depths"] == [1, 1, 1, 1] and model.dim == 128
    assert [b.name for b in model.blocks] == [f"stage_{s}_block_1" for s in (1, 2, 3, 4)]
    images = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    expected = to_numpy(model(images))
    restored = ResNet.from_config(config)
    restored.set_weights(model.get_weights())
    assert_close(restored(images), expected, rtol=1e-6, atol=1e-6)
    model.save(tmp_path / "bottleneck.keras")
    loaded = keras.saving.load_model(tmp_path / "bottleneck.keras")
    assert type(loaded) is ResNet and loaded.get_config() == config
    assert_close(loaded(images), expected, rtol=1e-6, atol=1e-6)


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


def test_resnet50_bottlenecks_stride_on_the_3x3_and_expand_four_times(rng):
    model = ResNet50(channels=1, width=8)  # stem "imagenet"; the shapes of tests/interop's (compiled once on JAX)
    assert keras.saving.get_registered_object("kmedssl>ResNet50") is ResNet50
    assert model.get_config()["stem"] == "imagenet" and "depths" not in model.get_config()
    assert ResNet50.parameter_count(model.get_config()) == model.count_params()
    assert tuple(model.weights[0].shape) == (7, 7, 1, 8) and model.dim == 256
    assert [len([b for b in model.blocks if b.name.startswith(f"stage_{s}_")]) for s in (1, 2, 3, 4)] == [3, 4, 6, 3]
    first, second = model.blocks[0], model.blocks[3]  # stage 1 (stride 1, 8 -> 32 channels), stage 2 (stride 2)
    shapes = {v.path.split("/", 2)[-1]: tuple(v.shape) for v in second.weights if v.path.endswith("kernel")}
    assert shapes == {"conv_1/kernel": (1, 1, 32, 16), "conv_2/kernel": (3, 3, 16, 16),
                      "conv_3/kernel": (1, 1, 16, 64), "shortcut_conv/kernel": (1, 1, 32, 64)}
    assert [layer.strides for layer in second.residual if hasattr(layer, "kernel_size")] == [(1, 1), (2, 2), (1, 1)]
    assert first.projection and first.strides == 1 and not model.blocks[1].projection
    # Spatial size before pooling: 64 -> 32 (stem) -> 16 (pool), then 16, 8, 4, 2 (odd sides: test_flops.py).
    x = rng.uniform(size=(2, 64, 64, 1)).astype("float32")
    for layer in model.stem_layers + model.blocks:
        x = layer(x)
    assert tuple(x.shape) == (2, 2, 2, 256)


def test_invalid_arguments_and_inputs(rng):
    with pytest.raises(ValueError, match="stem"):
        ResNet18(stem="vit")
    with pytest.raises(ValueError, match=r"Expected block in \('basic', 'bottleneck'\)"):
        ResNet(block="preact")
    with pytest.raises(TypeError):  # the named constructors fix their blocks
        ResNet50(block="basic")
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, height, width, 1\)"):
        ResNet18(width=8)(rng.normal(size=(2, 16, 16, 3)).astype("float32"))


@pytest.mark.backend_free
def test_validate_config_names_the_bad_fields_without_building():
    with pytest.raises(ValueError, match=r"Received: channels=0, width=8.0"):
        ResNet18.validate_config({"channels": 0, "width": 8.0})
    with pytest.raises(ValueError, match="stem"):
        ResNet18.validate_config({"stem": None})
    with pytest.raises(ValueError, match=r"Received: depths=\[2, 2\]"):
        ResNet.validate_config({"depths": [2, 2]})
    with pytest.raises(ValueError, match=r"Received: depths=\[3, 4, 0, 3\]"):
        ResNet.validate_config({"block": "bottleneck", "depths": [3, 4, 0, 3]})
    ResNet50.validate_config({"depths": "ignored: ResNet50 fixes its depths"})


def test_parameter_count_of_a_config_is_that_of_the_built_model():
    for model in (ResNet18(width=8), ResNet18(channels=3, stem="imagenet", width=4),
                  ResNet(width=4, block="bottleneck", depths=(1, 1, 1, 1))):
        assert type(model).parameter_count(model.get_config()) == model.count_params()


@pytest.mark.backend_free
def test_resnet50_has_torchvisions_parameter_count():
    # torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in fc; kmedssl also counts the
    # BatchNorms' moving means and variances: 2 x 26,560 channels.
    assert ResNet50.parameter_count({"channels": 3}) == 25_557_032 - 2_049_000 + 2 * 26_560
    # A tampered file's depths are counted without a loop over the blocks (the safe loader compares the count
    # with the file's size before anything is built).
    assert ResNet.parameter_count({"block": "bottleneck", "depths": [10**12] * 4}) > 10**18


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the crash is torch's; the equality of the "
                    "subsampled projection is checked on every backend below")
def test_strided_projection_trains_at_64_px_where_torch_crashed(tmp_path):
    """torch 2.13's CPU backward of a 1x1 stride-2 convolution on channels-last inputs kills the process at some
    shapes (8 -> 16 channels at 64 px: a segmentation fault); the ResNet's strided projection subsamples first.
    Trained in a child process, so a crash fails this test instead of the whole run."""
    script = (
        "import numpy as np, keras\n"
        "from kmedssl.backbones import ResNet18\n"
        "inputs = keras.Input((64, 64, 1))\n"
        "model = keras.Model(inputs, keras.layers.Dense(3)(ResNet18(width=8)(inputs)))\n"
        "model.compile('adam', 'mse')\n"
        "x, y = np.random.rand(8, 64, 64, 1).astype('float32'), np.random.rand(8, 3).astype('float32')\n"
        "model.fit(x, y, batch_size=8, epochs=1, verbose=0)\n"
        "print('trained')\n"
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == 0 and "trained" in result.stdout, result.stderr[-2000:]


def test_strided_projection_is_a_strided_1x1_convolution(rng):
    """A stride-2 block = relu(residual path + BN(1x1 convolution with stride 2, "valid")), on odd and even
    sides: subsampling before the projection changes nothing."""
    block = ResNet18(width=4).blocks[2]  # stage 2, block 1: stride 2, 4 -> 8 channels
    assert block.strides == 2 and block.shortcut
    conv, norm = block.shortcut
    reference = keras.layers.Conv2D(8, 1, strides=2, padding="valid", use_bias=False)
    reference.build((None, None, None, 4))
    reference.set_weights(conv.get_weights())
    for side in (9, 10):
        x = rng.standard_normal((2, side, side, 4)).astype("float32")
        residual = x
        for layer in block.residual:
            residual = layer(residual, training=False)
        expected = keras.ops.relu(residual + norm(reference(x), training=False))
        assert_close(to_numpy(block(x, training=False)), to_numpy(expected), atol=1e-5)
