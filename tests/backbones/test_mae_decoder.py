import numpy as np
import pytest

from kmedssl.backbones import MAEDecoder, VisionTransformer, mae_decoder
from tests.backbones.backbone_checks import run_backbone_checks
from tests.helpers import assert_close, to_numpy

KWARGS = dict(num_patches=16, patch_dim=64, encoder_dim=32, dim=32, depth=1, num_heads=2)


def _masking(rng, batch=2, num_patches=16, num_keep=4):
    ids_shuffle = np.argsort(rng.random((batch, num_patches)), axis=1).astype("int32")
    return ids_shuffle[:, :num_keep], np.argsort(ids_shuffle, axis=1).astype("int32")


def test_backbone_checks(rng, tmp_path):
    _, ids_restore = _masking(rng)
    tokens = rng.normal(size=(2, 5, 32)).astype("float32")
    run_backbone_checks(MAEDecoder, KWARGS, (tokens, ids_restore), (2, 16, 64), tmp_path)


def test_unshuffle_puts_kept_tokens_at_their_patches(rng):
    # depth 0, identity embedding/prediction: row i of the output is LN(x_i + pos_i), where x_i is the
    # encoder token of patch i if kept, else the mask token.
    decoder = MAEDecoder(**{**KWARGS, "patch_dim": 32, "depth": 0})
    decoder.embedding.kernel.assign(np.eye(32, dtype="float32"))
    decoder.prediction.kernel.assign(np.eye(32, dtype="float32"))
    ids_keep, ids_restore = _masking(rng)
    tokens = rng.normal(size=(2, 5, 32)).astype("float32")
    rows = np.broadcast_to(to_numpy(decoder.mask_token), (2, 16, 32)).copy()
    for b in range(2):
        rows[b, ids_keep[b]] = tokens[b, 1:]
    rows += to_numpy(decoder.position_embedding)
    expected = (rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + 1e-6)
    assert_close(decoder(tokens, ids_restore), expected, rtol=1e-4, atol=1e-4)


def test_encoder_to_decoder(rng):
    encoder = VisionTransformer(image_size=32, patch_size=8, dim=32, depth=1, num_heads=2)
    decoder = mae_decoder("phantom", encoder.num_patches, encoder.patch_dim, encoder.dim, depth=1)
    ids_keep, ids_restore = _masking(rng)
    images = rng.normal(size=(2, 32, 32, 1)).astype("float32")
    prediction = decoder(encoder(images, token_indices=ids_keep), ids_restore)
    assert tuple(prediction.shape) == (2, 16, 64) and tuple(encoder.unpatchify(prediction).shape) == (2, 32, 32, 1)
    with pytest.raises(ValueError, match="phantom"):
        mae_decoder("huge", 16, 64, 32)


def test_invalid_arguments_and_inputs(rng):
    with pytest.raises(ValueError, match="perfect square"):
        MAEDecoder(**{**KWARGS, "num_patches": 15})
    decoder = MAEDecoder(**KWARGS)
    _, ids_restore = _masking(rng)
    with pytest.raises(ValueError, match=r"Expected tokens of shape \(batch, 1 \+ n_keep, 32\)"):
        decoder(rng.normal(size=(2, 5, 16)).astype("float32"), ids_restore)
    with pytest.raises(ValueError, match="ids_restore"):
        decoder(rng.normal(size=(2, 5, 32)).astype("float32"), ids_restore[:, :8])


@pytest.mark.backend_free
def test_validate_config_names_the_bad_fields_without_building():
    with pytest.raises(ValueError, match=r"Received: num_patches=None, depth=-1"):
        MAEDecoder.validate_config({**KWARGS, "num_patches": None, "depth": -1})
    with pytest.raises(ValueError, match=r"Received: layer_norm_epsilon=-1"):
        MAEDecoder.validate_config({**KWARGS, "layer_norm_epsilon": -1})


def test_parameter_count_of_a_config_is_that_of_the_built_model():
    model = MAEDecoder(**{**KWARGS, "mlp_ratio": 3.0})
    assert MAEDecoder.parameter_count(model.get_config()) == model.count_params()
