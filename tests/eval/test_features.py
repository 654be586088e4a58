"""kmedssl.eval.features.extract_features: a Swin's features are its token 0 (the mean of its final tokens), in
batches, through the compiled path (``inference_features``) as a ViT's and a ResNet's."""

import numpy as np

import kmedssl.eval.features as features_module
from kmedssl.backbones import SwinTransformer
from kmedssl.eval.features import extract_features
from tests.helpers import assert_close, to_numpy


def test_swin_features_are_token_0_through_the_compiled_path(monkeypatch):
    swin = SwinTransformer(image_size=16, patch_size=2, embed_dim=4, depths=(2, 1), num_heads=(1, 2), window_size=4)
    images = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype("float32")
    compiled = []
    original = features_module.inference_features
    monkeypatch.setattr(features_module, "inference_features", lambda layer: compiled.append(layer) or original(layer))
    features = extract_features(swin, images, batch_size=2)  # batches of 2 and 1
    assert compiled == [swin]
    assert features.dtype == np.float32 and features.shape == (3, swin.dim)
    tokens = to_numpy(swin(images))  # (3, 1 + 16, 8)
    assert_close(features, tokens[:, 0], rtol=1e-5, atol=1e-6)
    assert_close(tokens[:, 0], tokens[:, 1:].mean(axis=1), rtol=1e-5, atol=1e-6)
