"""KerasHub ``ViTBackbone`` / ``ResNetBackbone`` ``.keras`` files in ``load_into`` (``--init``): read as JSON and HDF5
without KerasHub, and equal to timm's / torchvision's forward passes of the same weights on the active backend."""

import json
import zipfile

import numpy as np
import pytest

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.interop import InteropError, load_into, read_state_dict
from kmedssl.interop.state_dicts import vit_from_keras_hub
from tests.helpers import to_numpy
from tests.interop.keras_hub_files import (
    resnet_backbone_config,
    resnet_layers_from_torchvision,
    vit_backbone_config,
    vit_layers_from_timm,
    write_keras_file,
)
from tests.interop.references import images, timm_vit_tokens, torchvision_resnet18_shapes, torchvision_resnet_features

VIT = dict(image_size=32, patch_size=8, channels=1, dim=32, depth=2, num_heads=2)


def random_state(shapes, seed=0):
    """Random PyTorch-layout weights: unit-variance kernels, BatchNorm scales and variances in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    return {k: (rng.uniform(0.5, 1.5, s) if k.endswith(("running_var", "weight")) and len(s) == 1
                else rng.normal(0, 1 / np.sqrt(np.prod(s[1:])), s) if len(s) > 1
                else rng.normal(0, 0.3, s)).astype("float32") for k, s in shapes.items() if s != ()}


def timm_vit_shapes(dim=32, depth=2, mlp_dim=64, patch=8, grid=4, channels=1):
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim),
              "patch_embed.proj.weight": (dim, channels, patch, patch), "patch_embed.proj.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        shapes.update({f"blocks.{i}.{k}": s for k, s in {
            "norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim),
            "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,),
            "mlp.fc1.weight": (mlp_dim, dim), "mlp.fc1.bias": (mlp_dim,), "mlp.fc2.weight": (dim, mlp_dim),
            "mlp.fc2.bias": (dim,)}.items()})
    return shapes


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """(path, timm state) of a 2-block ViTBackbone file with non-trivial CLS token and positions."""
    timm = random_state(timm_vit_shapes())
    path = tmp_path_factory.mktemp("keras-hub") / "vit.keras"
    config = vit_backbone_config(32, 8, 1, depth=2, num_heads=2, dim=32, mlp_dim=64)
    return write_keras_file(path, config, vit_layers_from_timm(timm, num_heads=2), "vi_t_backbone"), timm


def test_a_keras_hub_vit_file_gives_timms_tokens(vit_file):
    path, timm = vit_file
    encoder = load_into(VisionTransformer(**VIT, mlp_ratio=2.0), path)
    x = images((2, 32, 32, 1))
    np.testing.assert_allclose(to_numpy(encoder(x)), timm_vit_tokens(timm, x, num_heads=2), atol=5e-5, rtol=1e-5)
    load_into(VisionTransformer(**{**VIT, "image_size": 48}, mlp_ratio=2.0), path)  # positions interpolated
    with pytest.raises(InteropError, match=r"vit\.keras: the file's ViT has num_heads=2, the encoder num_heads=4$"):
        load_into(VisionTransformer(**{**VIT, "num_heads": 4}, mlp_ratio=2.0), path)
    with pytest.raises(InteropError, match=r"vit\.keras: tensor 'vit_encoder/transformer_block_2/.*has no place"):
        load_into(VisionTransformer(**{**VIT, "depth": 1}, mlp_ratio=2.0), path)


def test_a_keras_hub_resnet_file_gives_torchvisions_features(tmp_path):
    tv = random_state(torchvision_resnet18_shapes(channels=1, width=64, num_classes=1))
    tv.pop("fc.weight"), tv.pop("fc.bias")
    path = write_keras_file(tmp_path / "resnet.keras", resnet_backbone_config(1), resnet_layers_from_torchvision(tv),
                            "res_net_backbone")
    encoder = load_into(ResNet18(channels=1, stem="imagenet", width=64), path)
    x = images((2, 32, 32, 1))
    np.testing.assert_allclose(to_numpy(encoder.features(x)), torchvision_resnet_features(tv, x), atol=1e-4,
                               rtol=1e-5)


@pytest.mark.backend_free
def test_keras_hub_biases_left_out_read_as_zeros(tmp_path):
    timm = random_state(timm_vit_shapes(depth=1))
    layers = vit_layers_from_timm(timm, num_heads=2)
    for group, (name, arrays) in layers.items():
        if name in ("query", "key", "value", "attention_output", "dense_1", "dense_2", "patch_embedding"):
            layers[group] = (name, arrays[:1])  # use_mha_bias = use_mlp_bias = use_patch_bias = False
    config = vit_backbone_config(32, 8, 1, depth=1, num_heads=2, dim=32, mlp_dim=64, use_mha_bias=False,
                                 use_mlp_bias=False, use_patch_bias=False)
    state, _, leftovers = vit_from_keras_hub(read_state_dict(write_keras_file(tmp_path / "v.keras", config, layers,
                                                                              "vi_t_backbone")))
    assert not leftovers
    for name in ("patch_embedding/bias", "block_0/attention/qkv/bias", "block_0/attention/proj/bias",
                 "block_0/mlp_hidden/bias", "block_0/mlp_output/bias"):
        np.testing.assert_array_equal(state[name], 0.0)
    np.testing.assert_allclose(state["block_0/attention/qkv/kernel"], timm["blocks.0.attn.qkv.weight"].T)


@pytest.mark.backend_free
@pytest.mark.parametrize("change, message", [
    (dict(use_class_token=False), "use_class_token=False: kmedssl's ViT has a CLS token"),
    (dict(patch_size=[8, 4]), r"patch_size=\[8, 4\]: kmedssl's patches are square"),
    (dict(image_shape=[32, 48, 1]), r"image_shape=\[32, 48, 1\]: kmedssl's images are square"),
    ("resnet", "block_type='bottleneck_block': kmedssl's ResNet-18 needs block_type='basic_block'"),
    ("classifier", "a keras_hub ViTImageClassifier; kmedssl reads keras_hub ViTBackbone and ResNetBackbone"),
    ("not a zip", "not a .keras file"),
])
def test_keras_hub_files_kmedssl_cannot_express_get_one_line_errors(tmp_path, change, message):
    path = tmp_path / "model.keras"
    if change == "not a zip":
        path.write_bytes(b"PK not really")
    elif change == "resnet":
        write_keras_file(path, resnet_backbone_config(3, block_type="bottleneck_block"), {}, "res_net_backbone")
    else:
        config = vit_backbone_config(32, 8, 1, depth=1, num_heads=2, dim=32, mlp_dim=64)
        if change == "classifier":
            config.update(class_name="ViTImageClassifier", registered_name="keras_hub>ViTImageClassifier")
        else:
            config["config"].update(change)
        write_keras_file(path, config, {}, "vi_t_backbone")
    with pytest.raises(InteropError, match=message) as caught:
        read_state_dict(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


@pytest.mark.backend_free
def test_a_keras_file_without_weights_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("config.json", '{"class_name": "ViTBackbone", "registered_name": "keras_hub>ViTBackbone", '
                                        '"config": {"image_shape": [32, 32, 1], "patch_size": 8}}')
    with pytest.raises(InteropError, match=r"model\.keras: a \.keras file without model\.weights\.h5$"):
        read_state_dict(tmp_path / "model.keras")


def test_the_written_layout_is_keras_hubs(tmp_path):
    """Only where keras-hub is installed (not a test dependency): real ``model.save`` files have the groups, layer
    names, shapes and config keys that ``keras_hub_files`` writes."""
    keras_hub = pytest.importorskip("keras_hub")
    import h5py

    def layout(path):
        with zipfile.ZipFile(path) as archive:
            archive.extract("model.weights.h5", tmp_path / path.stem)
            config = json.loads(archive.read("config.json"))
        found = {}
        with h5py.File(tmp_path / path.stem / "model.weights.h5") as file:
            file.visititems(lambda name, item: found.update(
                {name: (str(item.attrs.get("name")), [item[k].shape for k in sorted(item, key=int)])}
                if name.endswith("/vars") and len(item) else {}))
        return found, config["class_name"], sorted(config["config"])

    real_vit = keras_hub.models.ViTBackbone(image_shape=(32, 32, 1), patch_size=8, num_layers=2, num_heads=2,
                                            hidden_dim=32, mlp_dim=64)
    real_vit.save(tmp_path / "real_vit.keras")
    ours = write_keras_file(tmp_path / "our_vit.keras", vit_backbone_config(32, 8, 1, 2, 2, 32, 64),
                            vit_layers_from_timm(random_state(timm_vit_shapes()), 2), "vi_t_backbone")
    assert layout(tmp_path / "real_vit.keras") == layout(ours)
    real_resnet = keras_hub.models.ResNetBackbone(**{k: v for k, v in resnet_backbone_config(1)["config"].items()
                                                     if k not in ("name", "trainable", "dtype")})
    real_resnet.save(tmp_path / "real_resnet.keras")
    tv = random_state(torchvision_resnet18_shapes(channels=1, width=64, num_classes=1))
    ours = write_keras_file(tmp_path / "our_resnet.keras", resnet_backbone_config(1),
                            resnet_layers_from_torchvision(tv), "res_net_backbone")
    assert layout(tmp_path / "real_resnet.keras") == layout(ours)


@pytest.mark.backend_free
def test_links_inside_the_weights_are_refused(tmp_path):
    import h5py

    config = vit_backbone_config(32, 8, 1, depth=1, num_heads=2, dim=32, mlp_dim=64)
    path = write_keras_file(tmp_path / "model.keras", config, {"layers/a": ("a", [np.zeros(2)])}, "vi_t_backbone")
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5", "a") as file:
        file["layers/a/vars/1"] = h5py.ExternalLink("/elsewhere.h5", "/data")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.write(tmp_path / "model.weights.h5", "model.weights.h5")
    with pytest.raises(InteropError, match=r"model\.keras: /layers/a/vars/1 is a link, not data$"):
        read_state_dict(path)
