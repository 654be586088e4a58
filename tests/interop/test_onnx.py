"""``kmedssl export --to onnx``: the graph of ``encoder.features`` runs in ``onnxruntime`` in a process where kmedssl
cannot be imported, for other batch sizes (and, for a ResNet, other image sizes) than it was traced with."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kmedssl.backbones import ResNet18, VisionTransformer
from kmedssl.cli import main
from kmedssl.interop import export
from tests.helpers import to_numpy
from tests.interop.references import images, randomised

on_torch = pytest.mark.skipif(keras.backend.backend() != "torch", reason="ONNX export uses torch.onnx.export")

ONNXRUNTIME_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["kmedssl"] = None  # importing kmedssl now fails: the graph must not need it
    import numpy as np, onnxruntime
    vit_file, resnet_file, vit_images, resnet_images, out = sys.argv[1:]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    features = {}
    for name, file, x in (("vit", vit_file, vit_images), ("resnet", resnet_file, resnet_images)):
        session = onnxruntime.InferenceSession(file, options, providers=["CPUExecutionProvider"])
        features[name] = session.run(["features"], {"images": np.load(x)})[0]
    np.savez(out, **features)
""")


@on_torch
def test_onnx_exports_run_in_onnxruntime_without_kmedssl(tmp_path):
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    vit = randomised(VisionTransformer(image_size=32, patch_size=8, channels=1, dim=32, depth=2, num_heads=2,
                                       input_mean=0.4, input_std=0.3))
    resnet = randomised(ResNet18(channels=1, stem="imagenet", width=8))
    vit.save(tmp_path / "vit.keras")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "vit.keras"), "--to", "onnx",
                                       "--out", str(tmp_path / "vit-onnx")])
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.output
    export(resnet, "onnx", tmp_path / "resnet-onnx")
    config = json.loads((tmp_path / "vit-onnx" / "config.json").read_text())
    assert config["input"]["shape"] == ["batch", 32, 32, 1] and config["output"]["shape"] == ["batch", 32]
    x_vit, x_resnet = images((3, 32, 32, 1)), images((1, 40, 48, 1), seed=1)  # traced with (2, ...)
    np.save(tmp_path / "vit.npy", x_vit)
    np.save(tmp_path / "resnet.npy", x_resnet)
    (tmp_path / "run.py").write_text(ONNXRUNTIME_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "run.py"), str(tmp_path / "vit-onnx" / "model.onnx"),
                           str(tmp_path / "resnet-onnx" / "model.onnx"), str(tmp_path / "vit.npy"),
                           str(tmp_path / "resnet.npy"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    features = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(features["vit"], to_numpy(vit.features(x_vit)), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(features["resnet"], to_numpy(resnet.features(x_resnet)), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="the error of the other backends")
def test_onnx_export_on_another_backend_is_one_line(tmp_path):
    ResNet18(channels=1, stem="imagenet", width=8).save(tmp_path / "resnet.keras")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "resnet.keras"), "--to", "onnx",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.startswith("Error:") and "KERAS_BACKEND=torch" in result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()
