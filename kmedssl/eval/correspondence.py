"""Zero-shot landmark correspondence with a frozen encoder (ACE 004 §5.2, "cross-patient anatomy
correspondence"; the dense-task building block of SPEC §5): find each landmark of a query image in a key image
by the nearest patch embedding, with no training.

For a pair ``(q, k)`` of images of side ``S`` and the encoder's ``g x g`` grid of patch embeddings
``E(·) ∈ R^{g² x C}`` (patch side ``p = S / g``; row-major patches):

- **embeddings**: the patch tokens ``encoder(images)[:, 1:]`` of a ``VisionTransformer`` (after the final
  LayerNorm, CLS dropped; ``p`` its patch size) or a ``SwinTransformer`` (its last stage's grid after the final
  LayerNorm, the mean token dropped; ``p = patch_size 2^(stages - 1)``, ACE's backbone); a ``ResNet``'s last-stage
  feature map (``p`` its stride, 8 with the ``cifar`` stem, 32 with ``imagenet``). Inference mode, compiled on
  JAX (``inference_features``).
- **query**: the embedding of the query patch containing the landmark ``(x, y)``: column ``⌊(x + 0.5)/p⌋``, row
  ``⌊(y + 0.5)/p⌋`` (``dense_metrics.patch_index``).
- **prediction**: the centre ``(c p + (p - 1)/2, r p + (p - 1)/2)`` of the key patch ``j* = argmin_j
  ||E(q)_query - E(k)_j||_2`` (first on ties; ``dense_metrics.nearest_patch``, ``patch_centres``).
- **error**: ``e = ||prediction - (x_k, y_k)||_2`` in pixels, NaN unless the landmark is visible in both images.

ACE slides a 448² window with stride 8 over 1024² key images; with patch tokens the stride is the patch size, so
even a perfect match is off by up to ``p/√2`` pixels (the distance from a landmark to its patch's centre).
The means and intervals are those of ``kmedssl.eval.landmarks.landmark_report`` over pairs.

Run from the command line by ``kmedssl evaluate RUN --task correspondence`` (``kmedssl.eval.dense_tasks``); see docs/evaluation.md.
"""

import keras
import numpy as np

from kmedssl.backbones.resnet import ResNet
from kmedssl.backbones.swin import SwinTransformer
from kmedssl.backbones.upernet import encoder_feature_maps
from kmedssl.backbones.vit import VisionTransformer
from kmedssl.eval.dense_metrics import zero_shot_correspondence
from kmedssl.eval.intervals import N_RESAMPLES
from kmedssl.eval.landmarks import check_landmarks, landmark_report
from kmedssl.ops.runtime import inference_features

RESNET_STRIDE = {"cifar": 8, "imagenet": 32}  # the last stage's stride per stem


# === Patch embeddings ===


def patch_size_of(encoder):
    """Pixels per side of one patch of :func:`patch_tokens`' grid; ValueError for other encoders."""
    if isinstance(encoder, (VisionTransformer, SwinTransformer)):
        return encoder.image_size // encoder.grid_size
    if isinstance(encoder, ResNet):
        return RESNET_STRIDE[encoder.stem]
    raise ValueError(f"Expected a VisionTransformer, SwinTransformer or ResNet encoder. Received: "
                     f"{type(encoder).__name__}")


def patch_tokens(encoder, images):
    """``(B, S, S, C)`` images -> ``(B, g², C')`` row-major patch embeddings in inference mode: a ViT's or a
    Swin's final tokens (without token 0: CLS or the mean), a ResNet's last-stage map flattened."""
    if isinstance(encoder, (VisionTransformer, SwinTransformer)):
        return encoder(images, training=False)[:, 1:]
    feature_map = encoder_feature_maps(encoder, images, training=False)[-1]  # (B, g, g, C')
    return keras.ops.reshape(feature_map, (keras.ops.shape(feature_map)[0], -1, feature_map.shape[-1]))


class _PatchTokens:
    """``features`` = :func:`patch_tokens` of an encoder, so that ``inference_features`` runs it as it runs
    ``encoder.features`` (one ``jax.jit`` on JAX, eager elsewhere)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.variables = encoder.variables

    def features(self, images):
        return patch_tokens(self.encoder, images)


def extract_patch_tokens(encoder, images, batch_size=32):
    """:func:`patch_tokens` of ``(N, S, S, C)`` images in batches, float32 NumPy ``(N, g², C')``; checks that the
    grid tiles the image with the encoder's patch size."""
    size, patch = images.shape[1], patch_size_of(encoder)
    if images.shape[1] != images.shape[2] or size % patch:
        raise ValueError(f"Expected square images whose side is a multiple of the patch size {patch}. Received: "
                         f"images.shape={images.shape}")
    run = inference_features(_PatchTokens(encoder))
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = keras.ops.convert_to_tensor(images[start:start + batch_size], "float32")
        outputs.append(np.asarray(keras.ops.convert_to_numpy(run(batch)), dtype="float32"))
    tokens = np.concatenate(outputs, axis=0)
    if tokens.shape[1] != (size // patch) ** 2:
        raise ValueError(f"Expected a {size // patch}² grid of patches. Received: {tokens.shape[1]} patches")
    return tokens


# === Evaluation ===


def evaluate_correspondence(encoder, query_images, query_points, query_visible, key_images, key_points, key_visible,
                            landmark_names=None, groups=None, seed=0, n_resamples=N_RESAMPLES, batch_size=32):
    """ACE §5.2 zero-shot correspondence over image pairs (module docstring): query ``i`` is matched to key ``i``.

    Args:
        encoder: a ``VisionTransformer``, ``SwinTransformer`` or ``ResNet`` (frozen: run in inference mode).
        query_images, key_images: ``(N, S, S, C)`` float images in [0, 1], ``S`` a multiple of the patch size.
        query_points, key_points: ``(N, K, 2)`` landmarks ``(x, y)`` = (column, row) in pixels, centres at integers.
        query_visible, key_visible: ``(N, K)`` booleans; a pair's landmark counts where visible in both.
        landmark_names: the ``K`` landmark names (default ``"0" .. "K-1"``).
        groups: ``(N,)`` bootstrap groups of the pairs (e.g. the key study); None: each pair its own.
        seed, n_resamples: the bootstrap of the intervals.
        batch_size: images per encoder call.

    Returns:
        dict: ``per_pair_error`` ``(N, K)`` pixel errors (NaN unless visible in both images); ``mean_error`` (over
        the finite entries) and ``per_landmark`` means; ``mean_error_ci`` (``Interval`` of the mean over pairs of
        each pair's mean error) and ``per_landmark_ci``.
    """
    query_images, key_images = np.asarray(query_images, "float32"), np.asarray(key_images, "float32")
    query_points, key_points = np.asarray(query_points, np.float64), np.asarray(key_points, np.float64)
    query_visible, key_visible = np.asarray(query_visible).astype(bool), np.asarray(key_visible).astype(bool)
    check_landmarks("query", query_images, query_points, query_visible)
    check_landmarks("key", key_images, key_points, key_visible)
    if query_images.shape != key_images.shape or query_points.shape != key_points.shape:
        raise ValueError(f"Expected query and key sets of the same shapes. Received: images {query_images.shape} "
                         f"and {key_images.shape}, points {query_points.shape} and {key_points.shape}")
    patch = patch_size_of(encoder)
    query_tokens = extract_patch_tokens(encoder, query_images, batch_size)  # (N, g², C')
    key_tokens = extract_patch_tokens(encoder, key_images, batch_size)
    both = query_visible & key_visible
    errors = np.array([
        zero_shot_correspondence(query_tokens[i], key_tokens[i], query_points[i], key_points[i], patch,
                                 visible=both[i])["error"]
        for i in range(len(query_images))
    ]).reshape(both.shape)  # (N, K)
    return {"per_pair_error": errors, **landmark_report(errors, landmark_names, groups, n_resamples, seed)}
