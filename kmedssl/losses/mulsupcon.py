"""Jaccard-weighted multi-label supervised contrastive loss of ModAn-MulSupCon (paper 001, Eq. 3)."""

import numbers

import keras
from keras import ops

from kmedssl.losses.common import l2_normalize, logsumexp_excluding, validate_positive


def _validate_arguments(temperature, threshold, base_temperature):
    validate_positive(temperature=temperature, base_temperature=base_temperature)
    if isinstance(threshold, numbers.Real) and not 0 <= threshold <= 1:
        raise ValueError(f"Expected threshold in [0, 1]. Received: threshold={threshold}")


def jaccard_supcon(features, labels, temperature=0.07, threshold=0.3, base_temperature=0.07):
    """Jaccard-weighted SupCon (paper 001, Eq. 3) over V views of B images with multi-hot labels.

    Rows are stacked view-major (all of view 0, then view 1, ...): anchors a = 0..VB-1, z_a normalised,
    y_a the label row of its image. With A(a) = all VB - 1 rows other than a:

        J[a, p]  = |y_a and y_p| / |y_a or y_p|        (0 when both rows are empty)
        P(a)     = {p in A(a) : J[a, p] >= threshold}
        loss_a   = -(T / T_base) * 1/|P(a)| * sum_{p in P(a)} J[a, p] * log_softmax_{k in A(a)}(z_a.z_k / T)[p]
        loss     = mean_a loss_a

    The normaliser is the count |P(a)| (not the sum of weights); an anchor without positives contributes 0
    and is still counted in the mean over VB. ``T / T_base`` is SupCon's rescaling (1 at the defaults;
    Eq. 3 of the paper has no such factor).

    Args:
        features: ``(B, V, D)`` embeddings (float32 or bfloat16), normalised inside; VB >= 2.
        labels: ``(B, K)`` multi-hot 0/1 labels (any numeric or bool dtype).
        temperature: T > 0 (paper: 0.07).
        threshold: tau in [0, 1] (paper: 0.3).
        base_temperature: T_base > 0.

    Returns:
        float32 scalar.
    """
    _validate_arguments(temperature, threshold, base_temperature)
    features = l2_normalize(features)  # (B, V, D)
    labels = ops.cast(labels, "float32")  # (B, K)
    if len(features.shape) != 3 or len(labels.shape) != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            "Expected features (B, V, D) and labels (B, K) with the same B. "
            f"Received: features.shape={tuple(features.shape)}, labels.shape={tuple(labels.shape)}"
        )
    num_views, dim = features.shape[1], features.shape[2]
    if features.shape[0] is not None and features.shape[0] * num_views < 2:
        raise ValueError(f"Expected at least 2 rows (B * V >= 2). Received: features.shape={tuple(features.shape)}")

    # === View-major stacking ===
    z = ops.reshape(ops.transpose(features, (1, 0, 2)), (-1, dim))  # (VB, D)
    y = ops.tile(labels, (num_views, 1))  # (VB, K)

    # === Jaccard weights and positives ===
    intersection = ops.matmul(y, ops.transpose(y))  # (VB, VB)
    sizes = ops.sum(y, axis=1)  # (VB,)
    union = sizes[:, None] + sizes[None, :] - intersection  # (VB, VB)
    jaccard = ops.divide_no_nan(intersection, union)  # (VB, VB), 0 where both rows are empty
    rows = ops.arange(ops.shape(z)[0])
    is_self = rows[:, None] == rows[None, :]  # (VB, VB)
    is_positive = ops.logical_and(jaccard >= threshold, ops.logical_not(is_self))  # (VB, VB)
    weights = ops.where(is_positive, jaccard, 0.0)  # (VB, VB)
    num_positives = ops.sum(ops.cast(is_positive, "float32"), axis=1)  # (VB,)

    # === Log-softmax over A(a) ===
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (VB, VB)
    log_prob = logits - logsumexp_excluding(logits, is_self)[:, None]  # (VB, VB)

    weighted = ops.sum(weights * log_prob, axis=1) / ops.maximum(num_positives, 1.0)  # (VB,)
    return -(temperature / base_temperature) * ops.mean(weighted)


@keras.saving.register_keras_serializable(package="kmedssl")
class JaccardSupCon(keras.losses.Loss):
    """``jaccard_supcon`` as a Keras loss: ``y_true`` = labels ``(B, K)``, ``y_pred`` = features ``(B, V, D)``."""

    def __init__(
        self, temperature=0.07, threshold=0.3, base_temperature=0.07, name="jaccard_supcon", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        _validate_arguments(temperature, threshold, base_temperature)
        self.temperature = temperature
        self.threshold = threshold
        self.base_temperature = base_temperature

    def call(self, y_true, y_pred):
        return jaccard_supcon(
            y_pred,
            y_true,
            temperature=self.temperature,
            threshold=self.threshold,
            base_temperature=self.base_temperature,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "threshold": self.threshold,
            "base_temperature": self.base_temperature,
        }
