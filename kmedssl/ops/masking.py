"""Token masking from per-token noise: MAE's random masking (SPEC §3.1) and S-PCL's partition (SPEC §3.4).

Both take ``noise (B, N)`` (e.g. ``keras.random.uniform`` from a seed generator) and rank tokens by it, so
every random choice comes from the caller's noise. Written with ``keras.ops``; N must be static. On the torch
backend with CUDA tensors (``kmedssl.ops.kernels.use_triton``) the fused kernels of
``kmedssl_kernels.partition`` give the same integers without sorting (ties broken by index, as a stable
argsort).
"""

import numbers

from keras import ops

from kmedssl.ops.kernels import fused_op, use_triton


def _validate(noise, mask_ratio):
    """Return the static token count N of ``noise (B, N)`` after checking the arguments."""
    if not isinstance(mask_ratio, numbers.Real) or not 0 <= mask_ratio < 1:
        raise ValueError(f"Expected mask_ratio in [0, 1). Received: mask_ratio={mask_ratio}")
    if len(noise.shape) != 2 or noise.shape[1] is None:
        raise ValueError(f"Expected noise of shape (B, N) with a static N. Received: noise.shape={tuple(noise.shape)}")
    return int(noise.shape[1])


def random_partition(noise, mask_ratio):
    """Mask tokens, then split the visible ones into two disjoint parts (S-PCL, paper 003 §2.2).

        ids     = argsort(noise)                      # ascending noise
        n_mask  = int(N * mask_ratio);  V = N - n_mask
        masked  = ids[:, :n_mask]
        part_1  = ids[:, n_mask : n_mask + V // 2]    # visible[:V // 2]
        part_2  = ids[:, n_mask + V // 2 :]           # visible[V // 2:]

    each then sorted ascending along the last axis.

    Args:
        noise: ``(B, N)`` float noise.
        mask_ratio: fraction of tokens masked, in [0, 1) (paper: 0.6); both parts must be non-empty (V >= 2).

    Returns:
        ``(masked (B, n_mask), part_1 (B, V // 2), part_2 (B, V - V // 2))``, int32 token indices.
    """
    noise = ops.convert_to_tensor(noise)
    num_tokens = _validate(noise, mask_ratio)
    num_masked = int(num_tokens * mask_ratio)
    num_visible = num_tokens - num_masked
    if num_visible < 2:
        raise ValueError(
            "Expected at least 2 visible tokens so that both parts are non-empty. "
            f"Received: N={num_tokens}, mask_ratio={mask_ratio} (visible: {num_visible})"
        )
    if use_triton(noise):
        return fused_op("partition", "random_partition")(noise, mask_ratio)
    ids = ops.cast(ops.argsort(noise, axis=-1), "int32")  # (B, N)
    split = num_masked + num_visible // 2
    masked = ops.sort(ids[:, :num_masked], axis=-1)  # (B, n_mask)
    part_1 = ops.sort(ids[:, num_masked:split], axis=-1)  # (B, V // 2)
    part_2 = ops.sort(ids[:, split:], axis=-1)  # (B, V - V // 2)
    return masked, part_1, part_2


def mae_masking(noise, mask_ratio):
    """MAE's per-sample random masking (He et al. 2022; SPEC §3.1): keep the smallest-noise tokens.

        ids_shuffle = argsort(noise);  ids_restore = argsort(ids_shuffle)
        len_keep    = int(N * (1 - mask_ratio))
        ids_keep    = ids_shuffle[:, :len_keep]        # shuffled order, as MAE
        mask[b, j]  = 1 if ids_restore[b, j] >= len_keep else 0

    Args:
        noise: ``(B, N)`` float noise.
        mask_ratio: fraction of tokens removed, in [0, 1); at least one token must be kept.

    Returns:
        ``(ids_keep (B, len_keep) int32, mask (B, N) float32 with 1 = removed, ids_restore (B, N) int32)``.
    """
    noise = ops.convert_to_tensor(noise)
    num_tokens = _validate(noise, mask_ratio)
    len_keep = int(num_tokens * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(
            f"Expected at least 1 kept token. Received: N={num_tokens}, mask_ratio={mask_ratio} (kept: {len_keep})"
        )
    if use_triton(noise):
        return fused_op("partition", "mae_masking")(noise, mask_ratio)
    ids_shuffle = ops.cast(ops.argsort(noise, axis=-1), "int32")  # (B, N)
    ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=-1), "int32")  # (B, N)
    ids_keep = ids_shuffle[:, :len_keep]  # (B, len_keep)
    mask = ops.cast(ids_restore >= len_keep, "float32")  # (B, N)
    return ids_keep, mask, ids_restore
