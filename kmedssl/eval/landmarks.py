"""Landmark detection fine-tuning on top of an encoder (the dense-task building block of SPEC §5; ACE 004 §B.2):
an ``UperNet`` with one heatmap channel per landmark on a copy of the encoder, trained against Gaussian heatmap
targets, decoded by the arg-max pixel and scored by the Euclidean error in pixels, with the bootstrap intervals
of the other reports.

Targets (``kmedssl.eval.dense_metrics.gaussian_heatmap``; ACE §B.2: "a 11×11 Gaussian kernel
exp(-(x² + y²)/(2σ²)) ... where the peak is 1", following HRNet [45]), per image ``b`` and landmark ``k`` at
``(x_bk, y_bk)`` rounded half up to the pixel ``(cx, cy)``:

    t_bk(u, v) = exp(-((u - cx)² + (v - cy)²) / (2σ²))   for |u - cx|, |v - cy| <= 5,  0 elsewhere,  σ = 5/3

and ``t_bk = 0`` everywhere when the landmark is not visible.

Loss (``heatmap_loss``): ACE does not state it and says it follows HRNet [45] (Sun et al., CVPR 2019), which
trains its heatmaps with the mean squared error between predicted and ground-truth heatmaps (its code's
``JointsMSELoss``, whose ``target_weight`` masks invisible joints); so the pixel MSE, masked the same way. With
predicted heatmaps ``h`` (the decoder's raw outputs, no activation) over the ``P = H W`` pixels ``i`` and
``w_bk = 1`` when ``t_bk`` is not all zero (the landmark is visible and inside the image), else 0:

    MSE_bk = (1 / P) Σ_i (h_bki - t_bki)²
    loss   = Σ_{b,k} w_bk MSE_bk / max(Σ_{b,k} w_bk, 1)

i.e. the mean over the batch's visible maps. HRNet halves its loss (immaterial with Adam) and divides by all
maps, invisible ones included; dividing by the visible ones keeps a batch's weight independent of how many
landmarks its images lack.

Detection and error: ``p_bk = argmax_{(u, v)} h_bk(u, v)`` (``heatmap_argmax``, no sub-pixel refinement) and
``e_bk = ||p_bk - (x_bk, y_bk)||_2`` in pixels at the given image size, NaN when the landmark is not visible.
``mean_error`` is the mean of ``e_bk`` over all visible ``(b, k)``; ``per_landmark[k]`` the mean over the images
where ``k`` is visible; ``mean_error_ci`` the cluster-bootstrap interval of the mean over images of each image's
mean error over its visible landmarks (``mean_interval``; equal to ``mean_error`` when every landmark is visible).

Run from the command line by ``kmedssl evaluate RUN --task landmarks`` (``kmedssl.eval.dense_tasks``); see docs/evaluation.md.
"""

import math

import keras
import numpy as np
from keras import ops

from kmedssl.backbones.swin import SwinTransformer
from kmedssl.backbones.upernet import UperNet
from kmedssl.backbones.vit import VisionTransformer
from kmedssl.data.phantom.ground_truth import LANDMARKS
from kmedssl.eval.dense_metrics import gaussian_heatmap, heatmap_argmax, landmark_error, mean_interval
from kmedssl.eval.finetune import copy_encoder, warmup_cosine_schedule
from kmedssl.eval.intervals import N_RESAMPLES
from kmedssl.ops.runtime import seed_everything


# === Targets and loss ===


def heatmap_targets(points, visible, image_size):
    """ACE §B.2 targets of a set of images: ``(N, K, 2)`` points and ``(N, K)`` visibility -> float32
    ``(N, H, W, K)`` maps (``gaussian_heatmap`` per image: 11 x 11, peak 1, all zero where not visible)."""
    maps = [gaussian_heatmap(p, image_size, visible=v) for p, v in zip(points, visible)]  # N x (K, H, W)
    return np.transpose(np.stack(maps), (0, 2, 3, 1))


def heatmap_loss(targets, heatmaps):
    """Masked heatmap MSE (module docstring): the mean over the visible maps (targets not all zero) of the
    per-map mean squared error. ``(B, H, W, K)`` targets and predictions -> scalar; usable as a Keras ``loss``."""
    targets, heatmaps = ops.cast(targets, "float32"), ops.cast(heatmaps, "float32")
    per_map = ops.mean(ops.square(heatmaps - targets), axis=(1, 2))  # (B, K)
    weights = ops.cast(ops.max(targets, axis=(1, 2)) > 0, "float32")  # (B, K): w_bk
    return ops.sum(weights * per_map) / ops.maximum(ops.sum(weights), 1.0)


def predict_landmarks(model, images, batch_size=32):
    """``(N, K, 2)`` arg-max pixels ``(x, y)`` of the model's ``(N, H, W, K)`` heatmaps (inference mode)."""
    heatmaps = np.asarray(model.predict(np.asarray(images, "float32"), batch_size=batch_size, verbose=0))
    return heatmap_argmax(np.transpose(heatmaps, (0, 3, 1, 2)))  # (N, K, H, W) -> (N, K, 2)


# === Reports ===


def landmark_report(errors, landmark_names=None, groups=None, n_resamples=N_RESAMPLES, seed=0):
    """Means and intervals of ``(N, K)`` pixel errors, NaN where not visible (module docstring): ``mean_error``
    (over visible entries), ``per_landmark`` and ``per_landmark_ci`` (over the images where each is visible),
    ``mean_error_ci`` (over images of each image's mean over its visible landmarks; images with none left out).
    A landmark visible nowhere has a NaN mean."""
    errors = np.asarray(errors, np.float64)
    names = [str(k) for k in range(errors.shape[1])] if landmark_names is None else list(landmark_names)
    if len(names) != errors.shape[1]:
        raise ValueError(f"Expected {errors.shape[1]} landmark names. Received: {len(names)}")
    finite = np.isfinite(errors)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.where(finite, errors, 0.0).sum(axis=1) / finite.sum(axis=1)  # NaN without a visible one
        per_landmark = np.where(finite, errors, 0.0).sum(axis=0) / finite.sum(axis=0)
    interval = dict(n_resamples=n_resamples, seed=seed)
    return {
        "mean_error": float(np.mean(errors[finite])) if finite.any() else math.nan,
        "per_landmark": {name: float(per_landmark[k]) for k, name in enumerate(names)},
        "mean_error_ci": mean_interval(per_image, groups, **interval),
        "per_landmark_ci": {name: mean_interval(errors[:, k], groups, **interval) for k, name in enumerate(names)},
    }


def check_landmarks(name, images, points, visible):
    """Validate ``(N, H, W, C)`` images, ``(N, K, 2)`` points and ``(N, K)`` visibility of one set."""
    if images.ndim != 4 or points.ndim != 3 or points.shape[-1] != 2 or visible.shape != points.shape[:2] \
            or len(points) != len(images):
        raise ValueError(f"Expected {name} images (N, H, W, C), points (N, K, 2) and visible (N, K) of the same N "
                         f"and K. Received: {images.shape}, {points.shape} and {visible.shape}")


# === Fine-tuning ===


def finetune_landmarks(encoder, images, points, visible, test_images, test_points, test_visible, landmark_names=None,
                       groups=None, epochs=30, batch_size=8, learning_rate=1e-3, warmup_epochs=1, weight_decay=0.05,
                       channels=32, train_encoder=True, seed=0, n_resamples=N_RESAMPLES):
    """Fine-tune ``UperNet(copy of encoder)`` to predict landmark heatmaps and score the pixel error on the test
    split (module docstring for the targets, loss, decoding and means).

    AdamW with a linear warm-up then cosine decay per step (as ``finetune_segmentation``), mini-batches reshuffled
    every epoch; Python, NumPy, Keras and the backend seeded with ``seed``. The caller's encoder is not modified.

    Args:
        encoder: a ``VisionTransformer``, ``SwinTransformer`` or ``ResNet`` (what ``UperNet`` takes).
        images, test_images: ``(N, H, W, C)`` float images in [0, 1].
        points, test_points: ``(N, K, 2)`` landmarks ``(x, y)`` = (column, row) in pixels, centres at integers.
        visible, test_visible: ``(N, K)`` booleans; invisible landmarks are left out of the loss and the error.
        landmark_names: the ``K`` landmark names (default ``"0" .. "K-1"``).
        groups: ``(N_test,)`` bootstrap groups of the test images (the study); None: each image its own.
        epochs, batch_size, learning_rate, warmup_epochs, weight_decay: the optimisation.
        channels: the decoder's width.
        train_encoder: False freezes the encoder copy (decoder only).
        seed: seed of the initialisation, shuffling and bootstrap.
        n_resamples: bootstrap resamples of the intervals.

    Returns:
        dict: ``per_image_error`` ``(N_test, K)`` pixel errors (NaN where not visible in the truth);
        ``mean_error`` (over the visible entries) and ``per_landmark`` means; ``mean_error_ci`` (``Interval`` of
        the mean over images of each image's mean error) and ``per_landmark_ci``; ``model`` (the fine-tuned
        ``UperNet``, heatmaps out).
    """
    images, test_images = np.asarray(images, "float32"), np.asarray(test_images, "float32")
    points, test_points = np.asarray(points, np.float64), np.asarray(test_points, np.float64)
    visible, test_visible = np.asarray(visible).astype(bool), np.asarray(test_visible).astype(bool)
    check_landmarks("training", images, points, visible)
    check_landmarks("test", test_images, test_points, test_visible)
    if points.shape[1] != test_points.shape[1] or images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"Expected the same landmarks and image shape in training and test. Received: "
                         f"{points.shape[1:]} / {images.shape[1:]} and {test_points.shape[1:]} / "
                         f"{test_images.shape[1:]}")
    targets = heatmap_targets(points, visible, images.shape[1:3])  # (N, H, W, K)
    seed_everything(seed)
    copy = copy_encoder(encoder)
    copy.trainable = bool(train_encoder)
    if isinstance(copy, (VisionTransformer, SwinTransformer)):
        copy.norm.trainable = False  # the decoder reads block / stage outputs before the final LayerNorm
    model = UperNet(copy, points.shape[1], channels=channels)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    schedule = warmup_cosine_schedule(learning_rate, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay), loss=heatmap_loss)
    model.fit(images, targets, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)

    predicted = predict_landmarks(model, test_images, batch_size=max(batch_size, 32))
    errors = landmark_error(predicted, test_points, test_visible)  # (N_test, K)
    report = landmark_report(errors, landmark_names, groups, n_resamples=n_resamples, seed=seed)
    return {"per_image_error": errors, **report, "model": model}


# === Phantom data ===


def phantom_landmark_arrays(cohort, records, image_size, names=None):
    """Images and landmarks of phantom ``records`` from their exact ground truth (docs/data-phantom-dense.md).

    Args:
        cohort: a ``kmedssl.data.phantom.ChestCohort``.
        records: its records to render (any views).
        image_size: side in pixels.
        names: landmark names (default ``ground_truth.LANDMARKS``, all eleven).

    Returns:
        ``(images (N, H, W, 1) float32 in [0, 1], points (N, K, 2) float64 (x, y) pixels, visible (N, K) bool)``.
    """
    names = list(LANDMARKS if names is None else names)
    records = list(records)
    images = np.zeros((len(records), image_size, image_size, 1), "float32")
    points, visible = np.zeros((len(records), len(names), 2)), np.zeros((len(records), len(names)), bool)
    for n, record in enumerate(records):
        images[n, ..., 0] = cohort.render(record, image_size=image_size)
        landmarks = cohort.ground_truth(record, image_size=image_size).landmarks
        for k, name in enumerate(names):
            if name not in landmarks:
                raise ValueError(f"Expected landmark names among {sorted(landmarks)}. Received: {name!r}")
            points[n, k] = landmarks[name].x, landmarks[name].y
            visible[n, k] = landmarks[name].visible
    return images, points, visible
