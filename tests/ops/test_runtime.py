"""kmedssl.ops.runtime.inference_features: the features the evaluation extracts are the encoder's own, on
every backend, and follow new weights (on JAX the compiled function takes the variables as arguments)."""

import numpy as np

from kmedssl.backbones import VisionTransformer
from kmedssl.ops.runtime import inference_features
from tests.helpers import assert_close, to_numpy


def test_inference_features_equal_the_encoders_and_follow_new_weights():
    encoder = VisionTransformer(image_size=16, patch_size=4, dim=16, depth=1, num_heads=2, channels=1)
    images = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype("float32")
    features = inference_features(encoder)
    assert_close(to_numpy(features(images)), to_numpy(encoder.features(images)), rtol=1e-5, atol=1e-6)
    assert inference_features(encoder) == features  # one function per encoder
    for variable in encoder.trainable_variables:
        variable.assign(variable * 0.5 + 0.01)
    assert_close(to_numpy(features(images)), to_numpy(encoder.features(images)), rtol=1e-5, atol=1e-6)
    assert to_numpy(features(images[:2])).shape == (2, 16)  # another batch size
