"""kmedssl's ViT and ResNet-18 against MONAI's own (``monai.networks.nets.ViT`` / ``ResNet``, a test-only
dependency): random MONAI weights converted into kmedssl give MONAI's outputs on the active backend, and an
encoder exported ``--to monai`` loads strictly in a plain MONAI script, without kmedssl, with the same features."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.interop import export, load_into
from kmedssl.interop.safetensors_io import save_file
from tests.helpers import to_numpy
from tests.interop.references import images, nchw, numpy_state, randomise_batchnorms, randomised, torch

monai_nets = pytest.importorskip("monai.networks.nets")
ATOL = 2e-5
VIT = dict(image_size=32, patch_size=8, channels=1, dim=32, depth=2, num_heads=2, layer_norm_epsilon=1e-5)


def monai_vit(qkv_bias, seed=0):
    """A random MONAI ViT with a CLS token, non-trivial positions and LayerNorms, in eval mode."""
    torch.manual_seed(seed)
    model = monai_nets.ViT(in_channels=1, img_size=(32, 32), patch_size=(8, 8), hidden_size=32, mlp_dim=128,
                           num_layers=2, num_heads=2, classification=True, num_classes=3, spatial_dims=2,
                           qkv_bias=qkv_bias).eval()
    with torch.no_grad():
        model.cls_token.normal_(0, 0.5)
        model.patch_embedding.position_embeddings.normal_(0, 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model


def monai_resnet(stem, seed=0):
    """A random MONAI 2-D ResNet-18 (basic blocks, shortcut B with its default conv bias), BN statistics random."""
    torch.manual_seed(seed)
    model = monai_nets.ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[8, 16, 32, 64], spatial_dims=2,
                              n_input_channels=1, conv1_t_size=7 if stem == "imagenet" else 3,
                              conv1_t_stride=2 if stem == "imagenet" else 1, no_max_pool=stem != "imagenet",
                              feed_forward=False).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("downsample.0.bias"):
                parameter.uniform_(-0.5, 0.5)
    return randomise_batchnorms(model)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_vit_from_monai_gives_monais_tokens(tmp_path, qkv_bias):
    reference = monai_vit(qkv_bias)
    save_file(numpy_state(reference), tmp_path / "monai-vit.safetensors")
    encoder = load_into(VisionTransformer(**VIT), tmp_path / "monai-vit.safetensors")
    x = images((2, 32, 32, 1))
    with torch.no_grad():
        _, hidden = reference(nchw(x))
        expected = reference.norm(hidden[-1]).numpy()  # the tokens before MONAI's classification head
    np.testing.assert_allclose(to_numpy(encoder(x)), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_resnet18_from_monai_folds_the_shortcut_bias_and_gives_monais_features(tmp_path, stem):
    reference = monai_resnet(stem)
    save_file(numpy_state(reference), tmp_path / "monai-resnet.safetensors")
    encoder = load_into(ResNet18(channels=1, stem=stem, width=8), tmp_path / "monai-resnet.safetensors")
    x = images((2, 32, 32, 1))
    with torch.no_grad():
        expected = reference(nchw(x)).numpy()
    np.testing.assert_allclose(to_numpy(encoder.features(x)), expected, atol=1e-4, rtol=1e-5)


PLAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["kmedssl"] = None  # importing kmedssl now fails: the export must not need it
    import numpy as np, torch
    from monai.networks.nets import ResNet, ViT
    from safetensors.torch import load_file
    x = np.load(sys.argv[3])  # (B, H, W, 1) in [0, 1], as kmedssl takes it
    features = {}
    for name, folder, build in (("vit", sys.argv[1], ViT), ("resnet", sys.argv[2], ResNet)):
        model = build(**json.load(open(folder + "/config.json"))).eval()
        model.load_state_dict(load_file(folder + "/model.safetensors"))  # strict
        own = json.load(open(folder + "/kmedssl.json"))["config"]  # the encoder's input normalisation
        pixels = torch.from_numpy(((x - own["input_mean"]) / own["input_std"]).transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            out = model(pixels)
        features[name] = (out[0] if name == "vit" else out).numpy()
    np.savez(sys.argv[4], **features)
""")


def test_monai_exports_load_strictly_in_plain_monai_without_kmedssl(tmp_path):
    vit = randomised(VisionTransformer(**{**VIT, "input_mean": 0.4, "input_std": 0.3}))
    resnet = randomised(ResNet18(channels=1, stem="imagenet", width=8))
    export(vit, "monai", tmp_path / "vit-monai")
    export(resnet, "monai", tmp_path / "resnet-monai")
    assert json.loads((tmp_path / "vit-monai" / "config.json").read_text())["hidden_size"] == 32
    x = images((2, 32, 32, 1))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "plain.py"), str(tmp_path / "vit-monai"),
                           str(tmp_path / "resnet-monai"), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    features = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(features["vit"], to_numpy(vit.features(x)), atol=5e-5, rtol=1e-5)
    np.testing.assert_allclose(features["resnet"], to_numpy(resnet.features(x)), atol=1e-4, rtol=1e-5)
