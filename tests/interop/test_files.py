"""Weights files read without pickle, and the NumPy parts of the conversion (no Keras model involved)."""

import json

import numpy as np
import pytest

from kmedssl.interop import InteropError, detect_layout, read_state_dict, resize_positions, vit_config_from_transformers
from kmedssl.interop.safetensors_io import load_file, load_metadata, save_file

pytestmark = pytest.mark.backend_free
torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")


def sample():
    rng = np.random.default_rng(0)
    return {"a.weight": rng.normal(size=(3, 4)).astype("float32"), "a.bias": rng.normal(size=4).astype("float16"),
            "count": np.array(7, np.int64), "mask": np.array([True, False]), "b": rng.normal(size=(2, 0, 2))}


def test_safetensors_written_here_read_by_the_package_and_back(tmp_path):
    from safetensors.numpy import load_file as package_load
    from safetensors.numpy import save_file as package_save

    save_file(sample(), tmp_path / "ours.safetensors", metadata={"format": "pt", "note": "x"})
    theirs = package_load(tmp_path / "ours.safetensors")
    for name, value in sample().items():
        assert theirs[name].dtype == value.dtype and theirs[name].shape == value.shape
        np.testing.assert_array_equal(theirs[name], value)
    assert load_metadata(tmp_path / "ours.safetensors") == {"format": "pt", "note": "x"}
    package_save(sample(), tmp_path / "theirs.safetensors")
    ours = load_file(tmp_path / "theirs.safetensors")
    for name, value in sample().items():
        assert ours[name].dtype == value.dtype
        np.testing.assert_array_equal(ours[name], value)


def test_bfloat16_reads_as_float32_exactly(tmp_path):
    from safetensors.torch import save_file as torch_save

    tensor = torch.randn(5, 3).to(torch.bfloat16)
    torch_save({"w": tensor}, tmp_path / "bf16.safetensors")
    np.testing.assert_array_equal(read_state_dict(tmp_path / "bf16.safetensors")["w"], tensor.float().numpy())


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:5], "shorter than its 8-byte header length"),
    (lambda raw: (10**9).to_bytes(8, "little") + raw[8:], "header of 1000000000 bytes"),
    (lambda raw: raw[:8] + b"{" * (len(raw) - 8), "header is not JSON"),
    (lambda raw: raw[:-4], "outside the file's"),
])
def test_damaged_safetensors_get_one_line_errors(tmp_path, damage, message):
    save_file({"w": np.zeros((4, 4), "float32")}, tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(damage(raw))
    with pytest.raises(InteropError, match=message) as caught:
        read_state_dict(tmp_path / "w.safetensors")
    assert str(caught.value).startswith(str(tmp_path / "w.safetensors")) and "\n" not in str(caught.value)


def test_a_lying_header_is_refused(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(InteropError, match=r"tensor 'w': 16 bytes for shape \(1000, 1000\) F32"):
        read_state_dict(tmp_path / "w.safetensors")


def test_unknown_files_and_layouts_are_refused(tmp_path):
    (tmp_path / "w.npy").write_bytes(b"")
    with pytest.raises(InteropError, match=r"w\.npy: unsupported weights file"):
        read_state_dict(tmp_path / "w.npy")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        read_state_dict(tmp_path / "missing.safetensors")
    with pytest.raises(InteropError, match="unknown state-dict layout"):
        detect_layout({"foo.weight": np.zeros(1)})


@pytest.mark.parametrize("grid_in, grid_out", [(4, 6), (7, 3), (14, 32), (5, 5)])
def test_position_interpolation_is_torchs_bicubic(grid_in, grid_out):
    positions = np.random.default_rng(0).normal(size=(grid_in * grid_in, 8)).astype("float32")
    grid = torch.from_numpy(positions.reshape(1, grid_in, grid_in, 8)).permute(0, 3, 1, 2).double()
    expected = torch.nn.functional.interpolate(grid, size=(grid_out, grid_out), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(grid_out * grid_out, 8).numpy()
    np.testing.assert_allclose(resize_positions(positions, grid_out), expected, atol=1e-6)


def test_transformers_configs_kmedssl_cannot_express_are_refused():
    config = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
              "image_size": 32, "patch_size": 8, "num_channels": 1, "layer_norm_eps": 1e-12, "qkv_bias": False,
              "hidden_act": "gelu_new"}
    with pytest.raises(InteropError, match=r"qkv_bias=False.*hidden_act='gelu_new'"):
        vit_config_from_transformers(config)
    config.update(qkv_bias=True, hidden_act="gelu")
    assert vit_config_from_transformers(config)["mlp_ratio"] == 2.0
