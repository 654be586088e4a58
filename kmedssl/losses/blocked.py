"""The row-blocked engine of the contrastive losses: memory O(block² + R·D) instead of O(R²), on every backend.

``kmedssl.losses.contrastive`` declares each loss (a positive structure and a similarity) and decides which
path runs; this module computes its one form over R rows of unit vectors z (R, D) in tiles:

    L[i, j]  = scale * sim(z_i . z_j)                    sim(c) = c, or T-SP (paper 003, Eq. 1)
    lse_i    = log sum_{j in den(i)} exp(L[i, j])        den(i): the denominator set of anchor i (never i itself)
    loss     = 1/R sum_i coef_i * (w_i * lse_i - sum_j W[i, j] L[i, j])

with target weights W (w_i = sum_j W[i, j]) and coef_i = 1 / max(|P(i)|, 1), |P(i)| the number of
positives of anchor i. W, P and den come from the loss's positive structure (``targets``), sim and its
derivatives from its similarity (``contrastive.CosineSimilarity``, ``contrastive.TSPSimilarity``).

Forward: (block x block) tiles of L, an online log-sum-exp across the column tiles of each row block
(running max m and sum s: ``s <- s * exp(m - m') + sum exp(L - m')``). The (R, R) matrix never exists.

Backward (``keras.ops.custom_gradient``): the tiles are recomputed from z and the saved lse_i. With
P[i, j] = exp(L[i, j] - lse_i) on den(i) and G = dloss/dL = (1/R) * (coef_i w_i P[i, j] - coef_i W[i, j]),
every mask and W is symmetric, so

    dloss/dz_i   = sum_j (G[i, j] + G[j, i]) * scale * sim'(c_ij) * z_j
    dloss/dscale = 1/2 sum_ij (G[i, j] + G[j, i]) * sim(c_ij)
    dloss/dkappa = 1/2 sum_ij (G[i, j] + G[j, i]) * scale * dsim/dkappa (c_ij)

and each row block's gradient needs only its own row of tiles. With ``anchors`` (a data-parallel replica's
local anchors among the gathered rows, ``kmedssl.losses.replicas``) ``coef_i`` is 0 for the other rows and
the mean runs over the anchors; the formulas are unchanged. ``scale`` (and ``kappa``) are tensors of the
custom-gradient function, so S-PCL's trainable scale receives its gradient through this path.

The losses' ``block_size`` argument chooses this path (``contrastive``): ``None`` (auto) takes it when
R > ``AUTO_BLOCKED_ROWS`` (decided when the function runs if R is unknown while tracing, as in a TensorFlow
train step), ``0`` never, an int >= 1 always, with tiles of that many rows.
"""

import numbers

from keras import ops

from kmedssl.losses.common import EXCLUDED_LOGIT

# Auto mode takes the blocked path above this many rows: a (R, R) float32 matrix of 64 MiB, of which the
# naive path holds several (logits, masks, exp, softmax and their gradients).
AUTO_BLOCKED_ROWS = 4096
# Rows (and columns) of one tile: a 4 MiB float32 tile; the tile temporaries stay in the tens of MiB.
DEFAULT_BLOCK_SIZE = 1024


def validate_block_size(block_size):
    """``block_size`` must be None (auto), 0 (plain matrices) or an int >= 1 (rows of a tile)."""
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 0
    ):
        raise ValueError(
            f"Expected block_size=None (auto), 0 (plain matrices) or an int >= 1 (rows of a tile). "
            f"Received: block_size={block_size!r}"
        )


# === Entry point ===


def blocked_loss(z, scale, kappa, labels, targets, similarity, block_size, anchors=None):
    """The loss of the module docstring over the rows z, in tiles, with its custom gradient.

    Args:
        z: ``(R, D)`` float32 unit rows. scale: ``()`` float32 tensor. kappa: ``()`` float32 tensor (a
            similarity with a concentration, T-SP) or None.
        labels: ``(R, K)`` float32 label rows (a label-weighted positive structure) or None.
        targets: ``targets(rows_i, rows_j, labels_i, labels_j) -> (W, is_positive, in_denominator)`` of a tile,
            from the row ids (int32) and label rows of its rows and columns (``contrastive``'s positive
            structures).
        similarity: ``similarity.function(cosine, kappa)`` and ``similarity.derivatives(cosine, sim, kappa) ->
            (dsim/dc, dsim/dkappa)``.
        block_size: rows of a tile (clamped to R when R is static).
        anchors: None (every row is an anchor) or ``(R,)`` float32 0/1: the loss is the mean over the rows
            marked 1 (``coef_i`` is 0 elsewhere), every row still a candidate and receiving its gradient
            (a data-parallel replica's local anchors against the gathered batch).

    Returns:
        float32 scalar.
    """
    return _blocked_loss(z, scale, kappa, labels, targets, similarity, block_size, anchors)


# === The blocked loss ===


def _pad_rows(x, multiple):
    """Append zero rows so that the row count is a multiple of ``multiple``: ``(R, K) -> (R_pad, K)``."""
    padding = (-ops.shape(x)[0]) % multiple
    return ops.concatenate([x, ops.zeros((padding, ops.shape(x)[1]), x.dtype)], axis=0)


def _blocked_loss(z, scale, kappa, labels, targets, similarity, block_size, anchors=None):
    """``blocked_loss`` (same arguments, all positional)."""
    num_rows, dim = ops.shape(z)[0], ops.shape(z)[1]
    if isinstance(num_rows, int):
        block_size = min(block_size, num_rows)
    num_blocks = (num_rows + block_size - 1) // block_size
    has_kappa, has_labels, has_anchors = kappa is not None, labels is not None, anchors is not None

    def loss_with_gradient(*args):
        z, scale, *rest = args
        kappa = rest.pop(0) if has_kappa else None
        labels = rest.pop(0) if has_labels else None
        anchors = rest.pop(0) if has_anchors else None
        num_anchors = ops.sum(anchors) if has_anchors else ops.cast(num_rows, "float32")
        z_pad = _pad_rows(z, block_size)  # (R_pad, D)
        labels_pad = _pad_rows(labels, block_size) if has_labels else None  # (R_pad, K)
        if has_anchors:
            anchors_pad = ops.reshape(_pad_rows(anchors[:, None], block_size), (-1,))  # (R_pad,)
        # Loops are ops.scan over the block ids, not fori_loop: scan runs its iterations one after another on
        # every backend, while tf.while_loop (fori_loop on tensorflow) runs up to 10 at once, 10x the tiles.
        block_ids = ops.arange(num_blocks)

        def rows(x, start):
            return ops.slice(x, [start, 0], [block_size, ops.shape(x)[1]])  # (b, ...)

        def tile(start_i, start_j):
            """Tile (rows start_i + [0, b), columns start_j + [0, b)) of everything both passes need."""
            rows_i = start_i + ops.arange(block_size)  # (b,)
            rows_j = start_j + ops.arange(block_size)
            labels_i, labels_j = (rows(labels_pad, start_i), rows(labels_pad, start_j)) if has_labels else (None, None)
            weights, is_positive, in_denominator = targets(rows_i, rows_j, labels_i, labels_j)
            valid = ops.logical_and((rows_i < num_rows)[:, None], (rows_j < num_rows)[None, :])  # (b, b)
            cosine = ops.matmul(rows(z_pad, start_i), ops.transpose(rows(z_pad, start_j)))  # (b, b)
            similarities = similarity.function(cosine, kappa)
            logits = scale * similarities  # L
            in_denominator = ops.logical_and(in_denominator, valid)
            return {
                "weights": ops.where(valid, weights, 0.0),  # W
                "is_positive": ops.logical_and(is_positive, valid),
                "in_denominator": in_denominator,
                "logits": logits,
                "masked_logits": ops.where(in_denominator, logits, EXCLUDED_LOGIT),
                "cosine": cosine,
                "similarity": similarities,
            }

        # === Forward: online log-sum-exp over the column tiles of each row block ===
        def forward_row_block(carry, i):
            start_i = i * block_size

            def column_tile(state, j):
                peak, summed, weighted_logits, weight_sum, count = state  # each (b,)
                t = tile(start_i, j * block_size)
                new_peak = ops.maximum(peak, ops.max(t["masked_logits"], axis=1))
                exp_logits = ops.where(t["in_denominator"], ops.exp(t["masked_logits"] - new_peak[:, None]), 0.0)
                summed = summed * ops.exp(peak - new_peak) + ops.sum(exp_logits, axis=1)
                weighted_logits = weighted_logits + ops.sum(t["weights"] * t["logits"], axis=1)
                weight_sum = weight_sum + ops.sum(t["weights"], axis=1)
                count = count + ops.sum(ops.cast(t["is_positive"], "float32"), axis=1)
                return (new_peak, summed, weighted_logits, weight_sum, count), None

            zeros = ops.zeros((block_size,), "float32")
            state = (ops.full((block_size,), EXCLUDED_LOGIT, "float32"), zeros, zeros, zeros, zeros)
            (peak, summed, weighted_logits, weight_sum, count), _ = ops.scan(column_tile, state, block_ids)
            lse = peak + ops.log(ops.where(summed > 0.0, summed, 1.0))  # (b,); padded rows have no terms
            is_row = ops.cast(start_i + ops.arange(block_size) < num_rows, "float32")
            if has_anchors:
                is_row = is_row * ops.slice(anchors_pad, [start_i], [block_size])
            coef = is_row / ops.maximum(count, 1.0)  # (b,), 0 on padded rows
            carry = (carry[0] + ops.sum(coef * (weight_sum * lse - weighted_logits)), lse, coef, coef * weight_sum)
            return carry, carry  # the per-block statistics are stacked as (nb, b)

        zeros = ops.zeros((block_size,), "float32")
        state = (ops.zeros((), "float32"), zeros, zeros, zeros)
        (total, _, _, _), per_block = ops.scan(forward_row_block, state, block_ids)
        lse_all, coef_all, coef_weight_all = (ops.reshape(x, (-1,)) for x in per_block[1:])  # each (R_pad,)
        loss = total / num_anchors

        # === Backward: recompute the tiles; R * (G + G^T) from the saved per-row statistics ===
        def grad(*grad_args, upstream=None):
            if upstream is None:  # tensorflow and jax call grad(upstream), torch grad(*args, upstream=...)
                (upstream,) = grad_args

            def stats(start, axis):
                """lse, coef, coef * w of rows start + [0, b), as a column (axis 1) or a row (axis 0)."""
                return [ops.expand_dims(ops.slice(x, [start], [block_size]), axis)
                        for x in (lse_all, coef_all, coef_weight_all)]

            def backward_row_block(carry, i):
                start_i = i * block_size
                lse_i, coef_i, coef_weight_i = stats(start_i, 1)  # (b, 1)

                def column_tile(state, j):
                    dz_i, d_scale, d_kappa = state
                    start_j = j * block_size
                    t = tile(start_i, start_j)
                    lse_j, coef_j, coef_weight_j = stats(start_j, 0)  # (1, b)
                    in_denominator = ops.cast(t["in_denominator"], "float32")
                    softmax_ij = in_denominator * ops.exp(t["masked_logits"] - lse_i)  # P[i, j]
                    softmax_ji = in_denominator * ops.exp(t["masked_logits"] - lse_j)  # P[j, i]: L, den symmetric
                    g_sym = (
                        coef_weight_i * softmax_ij + coef_weight_j * softmax_ji - (coef_i + coef_j) * t["weights"]
                    )  # (b, b) = R * (G + G^T)
                    d_cosine, d_sim_kappa = similarity.derivatives(t["cosine"], t["similarity"], kappa)
                    dz_i = dz_i + ops.matmul(g_sym * (scale * d_cosine), rows(z_pad, start_j))  # (b, D)
                    d_scale = d_scale + 0.5 * ops.sum(g_sym * t["similarity"])
                    if has_kappa:
                        d_kappa = d_kappa + 0.5 * ops.sum(g_sym * (scale * d_sim_kappa))
                    return (dz_i, d_scale, d_kappa), None

                state = (ops.zeros((block_size, dim), "float32"), carry[1], carry[2])
                carry, _ = ops.scan(column_tile, state, block_ids)
                return carry, carry  # dz of the row block is stacked as (nb, b, D)

            scalar = ops.zeros((), "float32")
            state = (ops.zeros((block_size, dim), "float32"), scalar, scalar)
            (_, d_scale, d_kappa), (dz_blocks, _, _) = ops.scan(backward_row_block, state, block_ids)
            dz_all = ops.reshape(dz_blocks, (-1, dim))  # (R_pad, D)
            factor = ops.cast(upstream, "float32") / num_anchors
            grads = [factor * ops.slice(dz_all, [0, 0], [num_rows, dim]), factor * d_scale]
            if has_kappa:
                grads.append(factor * d_kappa)
            if has_labels:
                grads.append(ops.zeros_like(labels))
            if has_anchors:
                grads.append(ops.zeros_like(anchors))
            return tuple(grads)

        return loss, grad

    args = [z, scale] + ([kappa] if has_kappa else []) + ([labels] if has_labels else []) + (
        [ops.cast(anchors, "float32")] if has_anchors else [])
    return ops.custom_gradient(loss_with_gradient)(*args)
