"""MVMAE losses (paper 000, §3): masked-patch reconstruction per view and latent alignment (Eq. 1).

Both are plain functions, with no ``keras.losses.Loss`` class: the reconstruction needs a third input (the
mask) and the alignment compares two model outputs, neither of which fits Keras's ``(y_true, y_pred)``
convention. The MVMAE model combines them as ``0.5 * (rec_f + rec_l) + beta * align``.
"""

from keras import ops

from kmedssl.losses.common import l2_normalize

_ALIGNMENT_MODES = ("tokens", "pooled")


def mae_reconstruction(target, pred, mask, norm_pix=False):
    """MAE reconstruction loss on the masked patches (He et al. 2022; paper 000's L_Rec).

        err[b, l] = mean_p (pred[b, l, p] - target[b, l, p])^2
        loss      = sum_{b,l} err[b, l] * mask[b, l] / sum_{b,l} mask[b, l]

    a masked mean over the whole batch (0 when nothing is masked). With ``norm_pix=True`` each target patch
    is first normalised by its own mean and unbiased variance: ``(t - mean) / sqrt(var + 1e-6)``.

    Args:
        target, pred: ``(B, L, P)`` patchified images (row-major patches, each flattened as (p, p, C)),
            float32 or bfloat16.
        mask: ``(B, L)``, 1 = masked (reconstructed), 0 = visible.
        norm_pix: normalise target patches (needs P >= 2).

    Returns:
        float32 scalar.
    """
    target, pred = ops.cast(target, "float32"), ops.cast(pred, "float32")
    mask = ops.cast(mask, "float32")
    shapes_match = tuple(target.shape) == tuple(pred.shape) and tuple(mask.shape) == tuple(target.shape[:2])
    if len(target.shape) != 3 or not shapes_match:
        raise ValueError(
            "Expected target and pred (B, L, P) and mask (B, L). Received: "
            f"target.shape={tuple(target.shape)}, pred.shape={tuple(pred.shape)}, mask.shape={tuple(mask.shape)}"
        )
    if norm_pix:
        num_pixels = target.shape[-1]
        if num_pixels is not None and num_pixels < 2:
            raise ValueError(f"Expected P >= 2 with norm_pix=True. Received: target.shape={tuple(target.shape)}")
        mean = ops.mean(target, axis=-1, keepdims=True)  # (B, L, 1)
        variance = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (num_pixels - 1)  # unbiased
        target = (target - mean) / ops.sqrt(variance + 1e-6)
    error = ops.mean(ops.square(pred - target), axis=-1)  # (B, L)
    return ops.sum(error * mask) / ops.maximum(ops.sum(mask), 1e-12)


def latent_alignment(tokens_f, tokens_l, mode="tokens"):
    """Latent alignment between the encoder outputs of the two views (paper 000, Eq. 1).

    ``mode="tokens"`` (paper, Eq. 1: a sum over tokens of the per-token MSE, averaged over the batch):

        loss = mean_b sum_t mean_d (f[b, t, d] - l[b, t, d])^2

    Both views must then be encoded with the same token positions (a shared mask).
    ``mode="pooled"`` (the authors' released default): mean-pool all tokens (CLS included), normalise:

        loss = mean_b 0.5 * mean_d (n(mean_t f[b]) - n(mean_t l[b]))_d^2

    Args:
        tokens_f, tokens_l: ``(B, T, D)`` encoder outputs (CLS first), float32 or bfloat16.
        mode: ``"tokens"`` or ``"pooled"``.

    Returns:
        float32 scalar.
    """
    if mode not in _ALIGNMENT_MODES:
        raise ValueError(f"Expected mode in {_ALIGNMENT_MODES}. Received: mode={mode!r}")
    tokens_f, tokens_l = ops.cast(tokens_f, "float32"), ops.cast(tokens_l, "float32")
    if len(tokens_f.shape) != 3 or tuple(tokens_f.shape) != tuple(tokens_l.shape):
        raise ValueError(
            "Expected tokens_f and tokens_l of the same shape (B, T, D). Received: "
            f"tokens_f.shape={tuple(tokens_f.shape)}, tokens_l.shape={tuple(tokens_l.shape)}"
        )
    if mode == "tokens":
        per_token = ops.mean(ops.square(tokens_f - tokens_l), axis=-1)  # (B, T)
        return ops.mean(ops.sum(per_token, axis=-1))
    pooled_f = l2_normalize(ops.mean(tokens_f, axis=1))  # (B, D)
    pooled_l = l2_normalize(ops.mean(tokens_l, axis=1))  # (B, D)
    return 0.5 * ops.mean(ops.square(pooled_f - pooled_l))
