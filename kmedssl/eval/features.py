"""Frozen-encoder feature extraction and random-init baselines."""

import keras
import numpy as np

from kmedssl.ops.runtime import inference_features, seed_everything


def extract_features(encoder, images, batch_size=64):
    """``encoder.features`` of (N, H, W, C) images, in batches, as a float32 NumPy array (N, D). kmedssl's
    backbones (ViT, Swin, ResNet), whose features depend on their weights alone, run compiled
    (``inference_features``)."""
    from kmedssl.backbones import ResNet, SwinTransformer, VisionTransformer

    compiled = isinstance(encoder, (ResNet, SwinTransformer, VisionTransformer))
    features = inference_features(encoder) if compiled else encoder.features
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = keras.ops.convert_to_tensor(images[start:start + batch_size], "float32")
        outputs.append(np.asarray(keras.ops.convert_to_numpy(features(batch)), dtype="float32"))
    return np.concatenate(outputs, axis=0)


def random_init_copy(encoder, seed=0):
    """A freshly initialised encoder with the same architecture (the "scratch" baseline)."""
    seed_everything(seed)
    return type(encoder).from_config(encoder.get_config())
