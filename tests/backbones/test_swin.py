"""Swin Transformer (kmedssl.backbones.swin) against Hugging Face ``transformers``' ``SwinModel`` on the same
random weights (loaded through ``kmedssl.interop.load_into``), on the active backend; sizes, config round trips,
``validate_config`` and UperNet on a Swin."""

import keras
import numpy as np
import pytest

from kmedssl.backbones import SWIN_SIZES, SwinTransformer, swin_transformer
from kmedssl.backbones.swin import stage_plan
from kmedssl.backbones.upernet import UperNet, encoder_feature_maps, feature_channels
from kmedssl.interop import load_into, swin_config_from_transformers
from kmedssl.interop.safetensors_io import save_file
from tests.interop.references import images, nchw, numpy_state, torch, transformers

ATOL = 1e-4
# 64 px, patch 2: grids 32, 16, 8 (shifted windows on the odd blocks, with their mask) and 4 (one window, no shift).
# The phantom size's architecture: on JAX each new weight shape compiles its initialiser once, so every Swin built
# here after the first is cheap; the models run through one jitted ``predict`` each.
REFERENCE = dict(image_size=64, patch_size=2, num_channels=1, embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                 window_size=4, drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STAGES = [(2, 32, 32, 24), (2, 16, 16, 48), (2, 8, 8, 96), (2, 4, 4, 192)]


@pytest.fixture(scope="module")
def reference():
    """A random ``SwinModel`` (every parameter drawn, the bias tables too: transformers initialises them to 0), two
    images, and its outputs: last hidden state, pooled output, the four stage outputs before merging
    ``(B, H, W, C)``."""
    torch.manual_seed(0)
    model = transformers.SwinModel(transformers.SwinConfig(**REFERENCE)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            is_norm_scale = name.endswith("weight") and parameter.ndim == 1
            parameter.copy_(torch.randn_like(parameter) * 0.1 + (1.0 if is_norm_scale else 0.0))
        x = images((2, 64, 64, 1))
        outputs = model(nchw(x))
        embedded, dimensions = model.embeddings(nchw(x))[:2]
        stages = model.encoder(embedded, dimensions, output_hidden_states=True,
                               output_hidden_states_before_downsampling=True).reshaped_hidden_states[1:]
    return dict(model=model, images=x, tokens=outputs.last_hidden_state.numpy(), pooled=outputs.pooler_output.numpy(),
                stages=[s.numpy().transpose(0, 2, 3, 1) for s in stages])


@pytest.fixture(scope="module")
def swin(reference, tmp_path_factory):
    """The kmedssl Swin of the reference's config, loaded from its state dict written as ``.safetensors``."""
    path = tmp_path_factory.mktemp("swin") / "model.safetensors"
    save_file(numpy_state(reference["model"]), path)
    return load_into(SwinTransformer(**swin_config_from_transformers(reference["model"].config)), path)


@pytest.fixture(scope="module")
def outputs(swin, reference):
    """``[tokens, *stage_outputs]`` of the kmedssl Swin on the reference images, from one jitted ``predict``."""
    inputs = keras.Input((64, 64, 1))
    return keras.Model(inputs, [swin(inputs), *swin.stage_outputs(inputs)]).predict(reference["images"], verbose=0)


def test_matches_transformers_tokens_and_pooled_output(swin, reference, outputs):
    tokens = outputs[0]
    assert tokens.shape == (2, 1 + 16, 192) and swin.grid_size == 4 and swin.dim == 192 and swin.num_patches == 16
    np.testing.assert_allclose(tokens[:, 1:], reference["tokens"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(tokens[:, 0], reference["pooled"], atol=ATOL, rtol=0)


def test_stage_outputs_match_transformers_hidden_states_before_downsampling(reference, outputs):
    assert [s.shape for s in outputs[1:]] == STAGES
    for ours, theirs in zip(outputs[1:], reference["stages"]):
        np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


def test_upernet_on_a_swin_uses_its_stage_outputs(swin, reference):
    maps = encoder_feature_maps(swin, keras.KerasTensor((2, 64, 64, 1)))
    assert [tuple(m.shape) for m in maps] == STAGES and feature_channels(swin) == [24, 48, 96, 192]
    with pytest.raises(ValueError, match="block_indices=None for a SwinTransformer"):
        encoder_feature_maps(swin, reference["images"], block_indices=[0, 1, 2, 3])
    model = UperNet(swin, num_classes=2, channels=8)  # symbolic: running it only compiles (test_upernet runs them)
    logits = model(keras.KerasTensor((2, 64, 64, 1)))
    assert tuple(logits.shape) == (2, 64, 64, 2) and logits.dtype == "float32" and model.neck is None


def test_config_round_trip_and_parameter_count(swin):
    clone = SwinTransformer.from_config(swin.get_config())
    assert clone.get_config() == swin.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in swin.weights]
    assert SwinTransformer.parameter_count(swin.get_config()) == swin.count_params()


def test_sizes():
    """Swin-B's stage plan (224 px: grids 56, 28, 14, 7, widths 128 .. 1024) without building it; the phantom
    size at 64 px (the reference's architecture) has the grids its window divides, the last one a single window."""
    base = {**SWIN_SIZES["base"], "image_size": 224}
    SwinTransformer.validate_config(base)
    assert stage_plan(224, 4, 128, base["depths"], 7) == [(56, 128, 7, 3), (28, 256, 7, 3), (14, 512, 7, 3),
                                                          (7, 1024, 7, 0)]
    assert SwinTransformer.parameter_count(base) == 86_743_224 - 2 * 4 * 4 * 128  # HF SwinModel, RGB -> 1 channel
    phantom = swin_transformer("phantom", image_size=64)
    assert phantom.stage_resolutions == [32, 16, 8, 4] and phantom.grid_size == 4 and phantom.dim == 192
    assert [b.shift_size for b in phantom.blocks] == [0, 2, 0, 2, 0, 2, 0, 0]
    with pytest.raises(ValueError, match=r"Expected size in \['base', 'phantom', 'small', 'tiny'\]"):
        swin_transformer("huge")


@pytest.mark.backend_free
@pytest.mark.parametrize("overrides, received", [
    (dict(image_size=60), "image_size=60"),  # not divisible by patch_size * 8 = 16
    (dict(window_size=3), "stage 0: resolution=32"),  # 32 is neither <= 3 nor a multiple of 3
    (dict(num_heads=(1, 2, 4, 5)), "stage 3: resolution=4, dim=192, num_heads=5"),
    (dict(depths=(2, 2), num_heads=(1, 2, 4)), "depths=(2, 2), num_heads=(1, 2, 4)"),
    (dict(embed_dim=0), "embed_dim=0"),
    (dict(drop_path_rate=1.0), "drop_path_rate=1.0"),
])
def test_validate_config_errors_are_one_line(overrides, received):
    config = {**SWIN_SIZES["phantom"], "image_size": 64, **overrides}
    with pytest.raises(ValueError) as error:
        SwinTransformer.validate_config(config)
    message = str(error.value)
    assert message.startswith("Expected ") and "Received: " in message and "\n" not in message
    assert received in message.split("Received: ", 1)[1]
