"""Jaccard-weighted multi-label supervised contrastive loss of ModAn-MulSupCon (paper 001, Eq. 3)."""

import numbers

import keras
from keras import ops

from kmedssl.losses.blocked import blocked_jaccard_supcon, blocked_or_naive, validate_block_size
from kmedssl.losses.common import l2_normalize, logsumexp_excluding, tensor_arguments, validate_positive
from kmedssl.losses.replicas import gathered_jaccard_supcon, grouped_mean, replica_path, validate_gather
from kmedssl.ops.kernels import fused_op, use_triton


def _validate_arguments(temperature, threshold, base_temperature):
    validate_positive(temperature=temperature, base_temperature=base_temperature)
    if isinstance(threshold, numbers.Real) and not 0 <= threshold <= 1:
        raise ValueError(f"Expected threshold in [0, 1]. Received: threshold={threshold}")


def _naive_jaccard_supcon(z, y, temperature, threshold):
    """``-mean_a 1/|P(a)| sum_p J[a, p] log_softmax_a(p)`` from the full ``(VB, VB)`` matrices (no T / T_base)."""
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
    return -ops.mean(ops.sum(weights * log_prob, axis=1) / ops.maximum(num_positives, 1.0))


def jaccard_supcon(
    features, labels, temperature=0.07, threshold=0.3, base_temperature=0.07, block_size=None, gather="global"
):
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

    Three paths give the same value and gradients (docs/kernels.md): the Triton fused kernel
    (``kmedssl_kernels.jaccard_supcon``) when ``kmedssl.ops.kernels.use_triton`` allows it (torch tensors
    on CUDA) and the three hyper-parameters are numbers; else the row-blocked ``keras.ops`` path
    (``kmedssl.losses.blocked``, memory O(block² + VB·(D + K))) when ``block_size >= 1`` or, with
    ``block_size=None``, when VB > ``blocked.AUTO_BLOCKED_ROWS``; else the plain ``(VB, VB)`` matrices.

    Args:
        features: ``(B, V, D)`` embeddings (float32 or bfloat16), normalised inside; VB >= 2.
        labels: ``(B, K)`` multi-hot 0/1 labels (any numeric or bool dtype).
        temperature: T > 0 (paper: 0.07).
        threshold: tau in [0, 1] (paper: 0.3).
        base_temperature: T_base > 0.
        block_size: None (auto, see above), 0 (always the plain matrices) or the rows of one tile of
            the row-blocked path.
        gather: ``"global"`` (positives and negatives from every data-parallel replica) or ``"local"``
            (from this replica's rows only); the same on one device (``kmedssl.losses.replicas``). The gathered
            global batch of several replicas takes the plain ``(Vb, R Vb)`` matrices.

    Returns:
        float32 scalar.
    """
    _validate_arguments(temperature, threshold, base_temperature)
    validate_block_size(block_size)
    if len(features.shape) != 3 or len(labels.shape) != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            "Expected features (B, V, D) and labels (B, K) with the same B. "
            f"Received: features.shape={tuple(features.shape)}, labels.shape={tuple(labels.shape)}"
        )
    num_views, dim = features.shape[1], features.shape[2]
    if features.shape[0] is not None and features.shape[0] * num_views < 2:
        raise ValueError(f"Expected at least 2 rows (B * V >= 2). Received: features.shape={tuple(features.shape)}")
    path = replica_path(gather)
    if path == "grouped":
        return grouped_mean(
            lambda f, y: _plain_jaccard_supcon(f, y, temperature, threshold, base_temperature, block_size),
            features,
            labels,
        )
    if path == "gathered":
        z, y = _view_major(features, labels)
        return (temperature / base_temperature) * gathered_jaccard_supcon(z, y, temperature, threshold, block_size)
    return _plain_jaccard_supcon(features, labels, temperature, threshold, base_temperature, block_size)


def _view_major(features, labels):
    """``(B, V, D), (B, K) -> z (VB, D)`` unit rows stacked view-major and their labels ``y (VB, K)`` float32."""
    num_views, dim = features.shape[1], features.shape[2]
    z = ops.reshape(ops.transpose(l2_normalize(features), (1, 0, 2)), (-1, dim))  # (VB, D)
    y = ops.tile(ops.cast(labels, "float32"), (num_views, 1))  # (VB, K)
    return z, y


def _plain_jaccard_supcon(features, labels, temperature, threshold, base_temperature, block_size):
    """``jaccard_supcon`` of the rows given: the Triton, row-blocked or plain path."""
    if not tensor_arguments(temperature, threshold, base_temperature) and use_triton(features, labels):
        return fused_op("jaccard_supcon")(
            features, labels, temperature=temperature, threshold=threshold, base_temperature=base_temperature
        )

    z, y = _view_major(features, labels)
    loss = blocked_or_naive(
        z,
        block_size,
        naive_fn=lambda: _naive_jaccard_supcon(z, y, temperature, threshold),
        blocked_fn=lambda block: blocked_jaccard_supcon(z, y, 1.0 / temperature, threshold, block_size=block),
    )
    return (temperature / base_temperature) * loss


@keras.saving.register_keras_serializable(package="kmedssl")
class JaccardSupCon(keras.losses.Loss):
    """``jaccard_supcon`` as a Keras loss: ``y_true`` = labels ``(B, K)``, ``y_pred`` = features ``(B, V, D)``."""

    def __init__(
        self, temperature=0.07, threshold=0.3, base_temperature=0.07, block_size=None, gather="global",
        name="jaccard_supcon", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        _validate_arguments(temperature, threshold, base_temperature)
        validate_block_size(block_size)
        validate_gather(gather)
        self.gather = gather
        self.temperature = temperature
        self.threshold = threshold
        self.base_temperature = base_temperature
        self.block_size = block_size

    def call(self, y_true, y_pred):
        return jaccard_supcon(
            y_pred,
            y_true,
            temperature=self.temperature,
            threshold=self.threshold,
            base_temperature=self.base_temperature,
            block_size=self.block_size,
            gather=self.gather,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "threshold": self.threshold,
            "base_temperature": self.base_temperature,
            "block_size": self.block_size,
            "gather": self.gather,
        }
