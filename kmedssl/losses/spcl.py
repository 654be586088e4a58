"""S-PCL loss (paper 003): T-SP similarity (Eq. 1) inside an InfoNCE over two token partitions (Eq. 2).

``tsp_infonce`` declares paired positives and the T-SP similarity; ``kmedssl.losses.contrastive`` computes it.
"""

import numbers

import keras
from keras import ops

from kmedssl.losses import contrastive
from kmedssl.losses.blocked import validate_block_size
from kmedssl.losses.common import l2_normalize, validate_pair, validate_positive
from kmedssl.losses.replicas import validate_gather


def _validate_kappa(kappa):
    if isinstance(kappa, numbers.Real) and not kappa >= 0:
        raise ValueError(f"Expected kappa >= 0. Received: kappa={kappa}")


def tsp_similarity(a, b, kappa):
    """T-distributed spherical (T-SP) similarity (paper 003, Eq. 1).

    With ``c = n(a) . n(b)`` (cosine similarity of every row of a with every row of b):

        sim_tsp = 0.5 * (1 + c) / (1 + (1 - c) * kappa)          in [0, 1]

    (= (t-vMF + 1) / 2 of Kobayashi 2021). kappa = 0 gives (1 + c) / 2; larger kappa sharpens it.

    Args:
        a: ``(M, D)``; b: ``(K, D)`` (float32 or bfloat16).
        kappa: concentration >= 0 (paper: kappa > 0, default 16).

    Returns:
        ``(M, K)`` float32.
    """
    _validate_kappa(kappa)
    a, b = l2_normalize(a), l2_normalize(b)
    if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Expected a (M, D) and b (K, D). Received: a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}"
        )
    return contrastive.tsp(ops.matmul(a, ops.transpose(b)), kappa)  # (M, K)


def tsp_infonce(z_1, z_2, kappa=16.0, scale=1 / 0.07, block_size=None, gather="global"):
    """S-PCL InfoNCE with T-SP similarity (paper 003, Eq. 2).

    Anchors are the 2B rows of ``z = [z_1; z_2]``; row i's positive is row ``(i + B) mod 2B``:

        loss = mean_i -log( exp(scale * sim_tsp(z_i, z_pos(i))) / sum_{j != i} exp(scale * sim_tsp(z_i, z_j)) )

    (denominator: all 2B - 1 other rows, positive included; ``sim_tsp`` of Eq. 1, ``tsp_similarity``).

    ``contrastive.contrastive_loss`` with ``PairedPositives()`` and ``TSPSimilarity(kappa, scale)``. Three
    paths give the same value and gradients (docs/kernels.md): the Triton fused kernel
    (``kmedssl_kernels.tsp_infonce``) when ``kmedssl.ops.kernels.use_triton`` allows it (torch tensors on
    CUDA) and ``kappa`` is a number; else the row-blocked ``keras.ops`` path (``kmedssl.losses.blocked``,
    memory O(block² + B·D)) when ``block_size >= 1`` or, with ``block_size=None``, when
    2B > ``blocked.AUTO_BLOCKED_ROWS``; else the plain ``(2B, 2B)`` logits.

    Args:
        z_1, z_2: ``(B, D)`` CLS embeddings of the two visible-token partitions (float32 or bfloat16).
        kappa: T-SP concentration >= 0 (paper: 16).
        scale: logit scale (paper's tau; init 1/0.07). A Python number (> 0) or a scalar tensor: the S-PCL
            model passes its trainable, clamped scale, which receives gradients through this function.
        block_size: None (auto, see above), 0 (always the plain matrices) or the rows of one tile of
            the row-blocked path.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from this
            replica's rows only); the same on one device (``kmedssl.losses.replicas``). The gathered global
            batch of several replicas takes the plain ``(2b, 2Rb)`` logits of this replica's anchors, or the
            row-blocked path over the gathered rows (same rule on the 2Rb gathered rows); no Triton kernel.

    Returns:
        float32 scalar.
    """
    validate_positive(scale=scale)
    _validate_kappa(kappa)
    validate_pair(z_1, z_2, names=("z_1", "z_2"))
    validate_block_size(block_size)
    return contrastive.contrastive_loss(
        (z_1, z_2), contrastive.PairedPositives(), contrastive.TSPSimilarity(kappa, scale), block_size=block_size,
        gather=gather,
    )


@keras.saving.register_keras_serializable(package="kmedssl")
class TSPInfoNCE(keras.losses.Loss):
    """``tsp_infonce`` with a fixed scale as a Keras loss. ``y_pred``: ``(B, 2, D)``, the two partitions
    stacked on axis 1; ``y_true`` is ignored (pass any tensor, e.g. zeros). A trainable scale lives in the
    S-PCL model, which calls ``tsp_infonce`` directly."""

    def __init__(self, kappa=16.0, scale=1 / 0.07, block_size=None, gather="global", name="tsp_infonce", **kwargs):
        super().__init__(name=name, **kwargs)
        _validate_kappa(kappa)
        validate_positive(scale=scale)
        validate_block_size(block_size)
        validate_gather(gather)
        self.kappa = kappa
        self.scale = scale
        self.block_size = block_size
        self.gather = gather

    def call(self, y_true, y_pred):
        return tsp_infonce(
            y_pred[:, 0], y_pred[:, 1], kappa=self.kappa, scale=self.scale, block_size=self.block_size,
            gather=self.gather,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "kappa": self.kappa,
            "scale": self.scale,
            "block_size": self.block_size,
            "gather": self.gather,
        }
