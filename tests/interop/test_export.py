"""``kmedssl export``: an exported encoder loads in a plain ``transformers`` script, in a process where kmedssl
cannot be imported, and gives the features of ``encoder.features``; other targets and errors."""

import os
import subprocess
import sys
import textwrap

import numpy as np
from click.testing import CliRunner

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.cli import main
from kmedssl.interop import encoder_state, export, load_into
from tests.helpers import to_numpy
from tests.interop.references import images, randomised

PLAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["kmedssl"] = None  # importing kmedssl now fails: the export must not need it
    import numpy as np, torch
    from transformers import ResNetModel, ViTModel
    vit_dir, resnet_dir, images, out = sys.argv[1:]
    x = np.load(images)  # (B, H, W, 1) in [0, 1], as kmedssl takes it

    def pixels(folder):  # the export's normalisation, NCHW
        processor = json.load(open(folder + "/preprocessor_config.json"))
        mean, std = np.array(processor["image_mean"]), np.array(processor["image_std"])
        return torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2).astype("float32"))

    vit = ViTModel.from_pretrained(vit_dir, add_pooling_layer=False).eval()
    resnet = ResNetModel.from_pretrained(resnet_dir).eval()
    with torch.no_grad():
        np.savez(out, vit=vit(pixels(vit_dir)).last_hidden_state[:, 0].numpy(),
                 resnet=resnet(pixels(resnet_dir)).pooler_output[:, :, 0, 0].numpy())
""")


def test_exports_load_in_plain_transformers_without_kmedssl(tmp_path):
    vit = randomised(VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=2, num_heads=2,
                                       input_mean=0.4, input_std=0.3))
    resnet = randomised(ResNet18(channels=1, stem="imagenet", width=8))
    vit.save(tmp_path / "vit.keras")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "vit.keras"), "--to", "transformers",
                                       "--out", str(tmp_path / "vit-hf")])
    assert result.exit_code == 0, result.output
    assert "model.safetensors" in result.output
    export(resnet, "transformers", tmp_path / "resnet-hf")
    x = images((2, 32, 32, 1))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "USE_TF": "0", "USE_FLAX": "0", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "plain.py"), str(tmp_path / "vit-hf"),
                           str(tmp_path / "resnet-hf"), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    features = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(features["vit"], to_numpy(vit.features(x)), atol=5e-5, rtol=1e-5)
    np.testing.assert_allclose(features["resnet"], to_numpy(resnet.features(x)), atol=1e-4, rtol=1e-5)


def test_safetensors_export_reloads_into_kmedssl_and_timm_names_are_written(tmp_path):
    vit = randomised(VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=1, num_heads=2))
    export(vit, "safetensors", tmp_path / "own")
    export(vit, "timm", tmp_path / "timm")
    for folder in ("own", "timm"):
        again = load_into(VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=1, num_heads=2),
                          tmp_path / folder)
        for name, value in encoder_state(vit).items():
            np.testing.assert_allclose(encoder_state(again)[name], value, atol=1e-7, err_msg=name)


def test_export_errors_are_one_line(tmp_path):
    ResNet18(channels=1, stem="cifar", width=8).save(tmp_path / "cifar.keras")
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(tmp_path / "cifar.keras"), "--to", "transformers",
                                  "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.startswith("Error:") and "stem='cifar'" in result.output
    assert result.output.count("\n") == 1
    result = runner.invoke(main, ["export", str(tmp_path / "cifar.keras"), "--to", "timm", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "cannot be exported --to timm" in result.output
    result = runner.invoke(main, ["export", str(tmp_path / "missing"), "--to", "timm", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "not found" in result.output
