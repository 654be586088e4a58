"""Contrastive losses across data-parallel replicas: ``gather="global"`` or ``"local"`` (docs/distributed.md).

With R replicas of b rows each (global batch B = R b):

- ``gather="global"``: every anchor is contrasted with the whole global batch. A replicated program
  (tf.distribute, torch DDP; ``kmedssl.distributed.replica_count() > 1``) computes the loss of its *local*
  anchors against the gathered rows of every replica (``gathered_paired_infonce``,
  ``gathered_jaccard_supcon``): the mean over replicas of these local means is the single-device loss of the
  concatenated batch, and, with ``all_gather``'s backward (sum over replicas, own slice), so is the gradient
  once the engine averages the replicas' gradients. JAX's global program already sees the global batch: the
  plain loss is this loss.
- ``gather="local"``: every replica contrasts its anchors with its own b rows only (the loss of the
  replica's batch, as if alone; negatives do not cross devices). A replicated program computes the plain
  loss of its rows; JAX's global program averages the plain loss of each device's row group
  (``grouped_mean``).

On one device both modes are the plain loss.
"""

from keras import ops

from kmedssl.distributed.context import all_gather, batch_groups, replica_count, replica_index
from kmedssl.losses.blocked import (
    blocked_jaccard_supcon,
    blocked_or_naive,
    blocked_paired_infonce,
    similarity,
)
from kmedssl.losses.common import logsumexp_excluding

GATHER_MODES = ("global", "local")


def validate_gather(gather):
    if gather not in GATHER_MODES:
        raise ValueError(f"Expected gather in {GATHER_MODES}. Received: gather={gather!r}")


def replica_path(gather):
    """How the running step computes a contrastive loss: ``"gathered"`` (local anchors vs the gathered global
    batch), ``"grouped"`` (the mean of per-device-group losses) or ``"plain"`` (the rows it sees)."""
    validate_gather(gather)
    if gather == "global" and replica_count() > 1:
        return "gathered"
    if gather == "local" and batch_groups() > 1:
        return "grouped"
    return "plain"


def grouped_mean(loss_fn, *tensors):
    """``mean_g loss_fn(*rows_g)``: each tensor split into ``batch_groups()`` equal row chunks (device g's rows)."""
    groups = batch_groups()
    if tensors[0].shape[0] % groups:
        raise ValueError(
            f"Expected a batch divisible by the {groups} devices of the mesh. Received: {tensors[0].shape[0]} rows"
        )
    chunks = [ops.split(t, groups, axis=0) for t in tensors]
    return ops.mean(ops.stack([loss_fn(*parts) for parts in zip(*chunks)]))


def _local_anchor_ids(num_local):
    """Global row ids of this replica's rows in the replica-major gathered matrix: ``r * n + [0, n)``."""
    offset = ops.cast(replica_index(), "int32") * num_local
    return offset + ops.cast(ops.arange(num_local), "int32")  # (n,)


def gathered_paired_infonce(z_local, scale, kappa=None, exclude_positive=False, block_size=None):
    """Paired InfoNCE of this replica's anchors against every replica's rows (module docstring, "global").

    Rows of replica s are ``[z_a^s; z_b^s]`` (2b); the positive of its row k is its row ``(k + b) mod 2b``;
    the denominator of an anchor is every gathered row but itself (and its positive, with
    ``exclude_positive``: paper 000, Eq. 2). With ``logits[k, j] = scale * sim(z_k . Z_j)`` (``sim`` the dot
    product, or T-SP with ``kappa``: paper 003, Eq. 1):

        loss = 1/(2b) sum_{k local} [ logsumexp_{j in den(k)} logits[k, j] - logits[k, pos(k)] ]

    The plain ``(2b, R 2b)`` logits, or above ``blocked.AUTO_BLOCKED_ROWS`` gathered rows (``block_size`` as in
    the losses) the row-blocked path over the gathered rows with this replica's rows as its anchors (memory
    O(block² + R b D); the tiles of the other replicas' anchors are computed and weighted 0).

    Args:
        z_local: ``(2b, D)`` float32 unit rows of this replica. scale, kappa: as in ``tsp_infonce``.

    Returns:
        float32 scalar: this replica's share (its local mean); the engine averages the replicas.
    """
    num_local = ops.shape(z_local)[0]  # 2b (a tensor when the batch is unknown while tracing)
    candidates = all_gather(z_local)  # (R 2b, D), replica-major
    return blocked_or_naive(
        candidates,
        block_size,
        naive_fn=lambda: _plain_gathered_paired(z_local, candidates, scale, kappa, exclude_positive),
        blocked_fn=lambda block: _blocked_gathered_paired(candidates, num_local, scale, kappa, exclude_positive,
                                                          block),
    )


def _plain_gathered_paired(z_local, candidates, scale, kappa, exclude_positive):
    num_local = ops.shape(z_local)[0]
    logits = scale * similarity(ops.matmul(z_local, ops.transpose(candidates)), kappa)  # (2b, R 2b)
    anchor_ids = _local_anchor_ids(num_local)  # (2b,)
    positive_ids = anchor_ids - (anchor_ids % num_local) + (anchor_ids % num_local + num_local // 2) % num_local
    columns = ops.arange(ops.shape(candidates)[0], dtype="int32")[None, :]
    is_self = anchor_ids[:, None] == columns  # (2b, R 2b)
    is_positive = positive_ids[:, None] == columns
    excluded = ops.logical_or(is_self, is_positive) if exclude_positive else is_self
    positive_logit = ops.sum(ops.where(is_positive, logits, 0.0), axis=1)  # (2b,)
    return ops.mean(logsumexp_excluding(logits, excluded) - positive_logit)


def _blocked_gathered_paired(candidates, num_local, scale, kappa, exclude_positive, block):
    """The blocked path over the gathered rows in view-major order ``[Z_a; Z_b]`` (positive of row i:
    ``(i + R b) mod 2 R b``, as ``blocked_paired_infonce`` expects), this replica's rows marked as anchors."""
    replicas, dim = replica_count(), ops.shape(candidates)[1]
    half = num_local // 2  # b
    by_view = ops.reshape(ops.transpose(ops.reshape(candidates, (replicas, 2, -1, dim)), (1, 0, 2, 3)), (-1, dim))
    rows = ops.arange(ops.shape(by_view)[0], dtype="int32")  # (2 R b,)
    replica_of_row = (rows % (replicas * half)) // half
    anchors = ops.cast(replica_of_row == ops.cast(replica_index(), "int32"), "float32")
    return blocked_paired_infonce(by_view, scale, kappa=kappa, exclude_positive=exclude_positive, block_size=block,
                                  anchors=anchors)


def gathered_jaccard_supcon(z_local, labels_local, temperature, threshold, block_size=None):
    """Jaccard SupCon (paper 001, Eq. 3, without T / T_base) of this replica's anchors against every replica's rows.

    With the gathered rows Z and labels Y, for a local anchor a: ``J[a, p]`` the Jaccard overlap of their label
    rows, ``P(a) = {p != a : J[a, p] >= threshold}``, and

        loss = -1/n sum_{a local} 1/max(|P(a)|, 1) sum_{p in P(a)} J[a, p] log_softmax_{k != a}(z_a . Z_k / T)[p]

    from the plain ``(n, R n)`` matrices, or the row-blocked path above ``blocked.AUTO_BLOCKED_ROWS`` gathered rows
    (as ``gathered_paired_infonce``).

    Args:
        z_local: ``(n, D)`` float32 unit rows of this replica (view-major). labels_local: ``(n, K)`` float32.

    Returns:
        float32 scalar: this replica's local mean.
    """
    candidates = all_gather(z_local)  # (R n, D)
    labels = ops.stop_gradient(all_gather(labels_local))  # (R n, K)

    def blocked(block):
        rows = ops.arange(ops.shape(candidates)[0], dtype="int32")
        anchors = ops.cast(rows // ops.shape(z_local)[0] == ops.cast(replica_index(), "int32"), "float32")
        return blocked_jaccard_supcon(candidates, labels, 1.0 / temperature, threshold, block_size=block,
                                      anchors=anchors)

    return blocked_or_naive(
        candidates, block_size,
        naive_fn=lambda: _plain_gathered_jaccard(z_local, labels_local, candidates, labels, temperature, threshold),
        blocked_fn=blocked,
    )


def _plain_gathered_jaccard(z_local, labels_local, candidates, labels, temperature, threshold):
    intersection = ops.matmul(labels_local, ops.transpose(labels))  # (n, R n)
    union = ops.sum(labels_local, axis=1)[:, None] + ops.sum(labels, axis=1)[None, :] - intersection
    jaccard = ops.divide_no_nan(intersection, union)
    anchor_ids = _local_anchor_ids(ops.shape(z_local)[0])
    is_self = anchor_ids[:, None] == ops.arange(ops.shape(candidates)[0], dtype="int32")[None, :]
    is_positive = ops.logical_and(jaccard >= threshold, ops.logical_not(is_self))
    weights = ops.where(is_positive, jaccard, 0.0)  # (n, R n)
    num_positives = ops.sum(ops.cast(is_positive, "float32"), axis=1)  # (n,)
    logits = ops.matmul(z_local, ops.transpose(candidates)) / temperature  # (n, R n)
    log_prob = logits - logsumexp_excluding(logits, is_self)[:, None]
    return -ops.mean(ops.sum(weights * log_prob, axis=1) / ops.maximum(num_positives, 1.0))
