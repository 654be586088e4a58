"""Jaccard-weighted multi-label supervised contrastive loss of ModAn-MulSupCon (paper 001, Eq. 3).

``jaccard_supcon`` declares Jaccard-weighted positives and the cosine similarity; ``kmedssl.losses.contrastive``
computes it.
"""

import numbers

import keras

from kmedssl.losses import contrastive
from kmedssl.losses.blocked import validate_block_size
from kmedssl.losses.common import validate_positive
from kmedssl.losses.replicas import validate_gather


def _validate_arguments(temperature, threshold, base_temperature):
    validate_positive(temperature=temperature, base_temperature=base_temperature)
    if isinstance(threshold, numbers.Real) and not 0 <= threshold <= 1:
        raise ValueError(f"Expected threshold in [0, 1]. Received: threshold={threshold}")


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

    ``contrastive.contrastive_loss`` with ``JaccardPositives(threshold)`` (``contrastive.jaccard_matrix``),
    ``CosineSimilarity(temperature)`` and the factor ``T / T_base``. Three paths give the same value and
    gradients (docs/kernels.md): the Triton fused kernel (``kmedssl_kernels.jaccard_supcon``) when
    ``kmedssl.ops.kernels.use_triton`` allows it (torch tensors on CUDA) and the three hyper-parameters are
    numbers; else the row-blocked ``keras.ops`` path (``kmedssl.losses.blocked``, memory O(block² + VB·(D + K)))
    when ``block_size >= 1`` or, with ``block_size=None``, when VB > ``blocked.AUTO_BLOCKED_ROWS``; else the
    plain ``(VB, VB)`` matrices.

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
            global batch of several replicas takes the plain ``(Vb, RVb)`` matrices of this replica's anchors,
            or the row-blocked path over the gathered rows (same rule on the RVb gathered rows); no Triton
            kernel.

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
    if features.shape[0] is not None and features.shape[0] * features.shape[1] < 2:
        raise ValueError(f"Expected at least 2 rows (B * V >= 2). Received: features.shape={tuple(features.shape)}")
    views = [features[:, v] for v in range(features.shape[1])]  # V x (B, D)
    return contrastive.contrastive_loss(
        views, contrastive.JaccardPositives(threshold), contrastive.CosineSimilarity(temperature), labels=labels,
        factor=temperature / base_temperature, block_size=block_size, gather=gather,
    )


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
