"""Segmentation fine-tuning on top of an encoder (the dense-task building block of SPEC §5; ACE 004 §A.4):
an ``UperNet`` decoder on a copy of the encoder, trained with sigmoid BCE + soft Dice, scored by per-image Dice
with the bootstrap intervals of the classification reports.

Loss (``segmentation_loss``), per image ``b`` and structure ``k`` with probabilities ``p = σ(z)`` and 0/1
targets ``t`` over the pixels ``i``:

    BCE = -mean_{b,i,k} [t log p + (1 - t) log(1 - p)]
    SoftDice = 1 - mean_{b,k} (2 Σ_i p t + ε) / (Σ_i p + Σ_i t + ε),   ε = 1

    loss = BCE + SoftDice

(``ε = 1`` makes an empty truth with an empty prediction score ~1, the metric's empty-mask convention.)
Run from the command line by ``kmedssl evaluate RUN --task segmentation`` (``kmedssl.eval.dense_tasks``); see docs/evaluation.md.
"""

import math

import keras
import numpy as np
from keras import ops

from kmedssl.backbones.upernet import UperNet
from kmedssl.backbones.vit import VisionTransformer
from kmedssl.eval.dense_metrics import dice_per_image, mean_dice, mean_interval
from kmedssl.eval.finetune import copy_encoder, warmup_cosine_schedule
from kmedssl.eval.intervals import N_RESAMPLES
from kmedssl.ops.runtime import seed_everything

SOFT_DICE_SMOOTH = 1.0


def soft_dice_loss(targets, logits, smooth=SOFT_DICE_SMOOTH):
    """``1 - mean_{b,k} (2 Σ p t + ε) / (Σ p + Σ t + ε)`` over ``(B, H, W, K)`` logits and 0/1 targets."""
    probabilities = ops.sigmoid(ops.cast(logits, "float32"))
    targets = ops.cast(targets, "float32")
    intersection = ops.sum(probabilities * targets, axis=(1, 2))  # (B, K)
    total = ops.sum(probabilities, axis=(1, 2)) + ops.sum(targets, axis=(1, 2))
    return 1.0 - ops.mean((2.0 * intersection + smooth) / (total + smooth))


def segmentation_loss(targets, logits):
    """Sigmoid BCE + soft Dice (module docstring); usable as a Keras ``loss``. Returns a scalar."""
    logits, targets = ops.cast(logits, "float32"), ops.cast(targets, "float32")
    bce = ops.mean(ops.binary_crossentropy(targets, logits, from_logits=True))
    return bce + soft_dice_loss(targets, logits)


def predict_masks(model, images, batch_size=32, threshold=0.5):
    """Boolean ``(N, H, W, K)`` masks ``σ(model(images)) > threshold`` (inference mode)."""
    logits = np.asarray(model.predict(np.asarray(images, "float32"), batch_size=batch_size, verbose=0))
    return logits > math.log(threshold / (1.0 - threshold))


def _check(name, images, masks):
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[:3] != images.shape[:3]:
        raise ValueError(f"Expected {name} images (N, H, W, C) and masks (N, H, W, K) of the same N, H, W. "
                         f"Received: {images.shape} and {masks.shape}")


def finetune_segmentation(encoder, images, masks, test_images, test_masks, structure_names=None, groups=None,
                          epochs=30, batch_size=8, learning_rate=1e-3, warmup_epochs=1, weight_decay=0.05,
                          channels=32, train_encoder=True, seed=0, n_resamples=N_RESAMPLES):
    """Fine-tune ``UperNet(copy of encoder)`` on ``(images, masks)`` and score Dice on the test split.

    AdamW with a linear warm-up then cosine decay per step (ACE §A.4's form), mini-batches reshuffled every
    epoch; Python, NumPy, Keras and the backend seeded with ``seed``. The caller's encoder is not modified.

    Args:
        encoder: a ``VisionTransformer`` or a ``ResNet``.
        images, test_images: ``(N, H, W, C)`` float images in [0, 1].
        masks, test_masks: ``(N, H, W, K)`` 0/1 masks, one channel per structure.
        structure_names: the ``K`` structure names (default ``"0" .. "K-1"``).
        groups: ``(N_test,)`` bootstrap groups of the test images (the study); None: each image its own.
        epochs, batch_size, learning_rate, warmup_epochs, weight_decay: the optimisation.
        channels: the decoder's width.
        train_encoder: False freezes the encoder copy (decoder only).
        seed: seed of the initialisation, shuffling and bootstrap.
        n_resamples: bootstrap resamples of the intervals.

    Returns:
        dict: ``per_image_dice`` ``(N_test, K)``; ``mean_dice`` (mean over structures of the per-structure
        means over test images) and ``per_structure`` means; ``mean_dice_ci`` (``Interval`` of the mean over
        images of each image's mean Dice over structures, equal to ``mean_dice``) and ``per_structure_ci``;
        ``model`` (the fine-tuned ``UperNet``).
    """
    images, masks = np.asarray(images, "float32"), np.asarray(masks, "float32")
    test_images, test_masks = np.asarray(test_images, "float32"), np.asarray(test_masks).astype(bool)
    _check("training", images, masks)
    _check("test", test_images, test_masks)
    if masks.shape[-1] != test_masks.shape[-1]:
        raise ValueError(f"Expected the same structures in training and test masks. Received: "
                         f"{masks.shape[-1]} and {test_masks.shape[-1]}")
    seed_everything(seed)
    copy = copy_encoder(encoder)
    copy.trainable = bool(train_encoder)
    if isinstance(copy, VisionTransformer):
        copy.norm.trainable = False  # the decoder reads block outputs before the final LayerNorm
    model = UperNet(copy, masks.shape[-1], channels=channels)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    schedule = warmup_cosine_schedule(learning_rate, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay), loss=segmentation_loss)
    model.fit(images, masks, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)

    predicted = predict_masks(model, test_images, batch_size=max(batch_size, 32))
    per_image = dice_per_image(predicted, test_masks)  # (N_test, K)
    names = [str(k) for k in range(per_image.shape[1])] if structure_names is None else list(structure_names)
    report = mean_dice(predicted, test_masks, names)
    interval = dict(n_resamples=n_resamples, seed=seed)
    return {
        "per_image_dice": per_image,
        "mean_dice": report["mean"],
        "per_structure": report["per_structure"],
        "mean_dice_ci": mean_interval(per_image.mean(axis=1), groups, **interval),
        "per_structure_ci": {name: mean_interval(per_image[:, k], groups, **interval) for k, name in enumerate(names)},
        "model": model,
    }
