"""Which rows a contrastive loss contrasts across data-parallel replicas: ``gather="global"`` or ``"local"``
(docs/distributed.md).

With R replicas of b samples each (global batch B = R b):

- ``gather="global"``: every anchor is contrasted with the whole global batch. A replicated program
  (tf.distribute, torch DDP; ``kmedssl.distributed.replica_count() > 1``) takes the ``"gathered"`` path: its
  *local* rows are the anchors and the rows of every replica, gathered replica-major (``gather_rows``), the
  candidates. The mean over replicas of these local means is the single-device loss of the concatenated
  batch, and, with ``all_gather``'s backward (sum over replicas, own slice), so is the gradient once the
  engine averages the replicas' gradients. JAX's global program already sees the global batch: it takes the
  ``"plain"`` path, whose loss is this loss.
- ``gather="local"``: every replica contrasts its anchors with its own b samples only (the loss of the
  replica's batch, as if alone; negatives do not cross devices). A replicated program takes the
  ``"plain"`` path on its rows; JAX's global program the ``"grouped"`` one, the mean of the plain loss of
  each device's row group (``grouped_mean``).

On one device both modes are the plain loss. ``kmedssl.losses.contrastive`` computes the loss of each path.
"""

from keras import ops

from kmedssl.distributed.context import all_gather, batch_groups, replica_count, replica_index

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


def gather_rows(z_local, labels_local=None):
    """This replica's rows among every replica's (the ``"gathered"`` path).

    Args:
        z_local: ``(n, D)`` rows of this replica. labels_local: ``(n, K)`` their label rows, or None.

    Returns:
        ``(z_all, labels_all, offset)``: ``z_all = all_gather(z_local)`` ``(R n, D)``, replica-major;
        ``labels_all`` the gathered label rows without gradient (or None); ``offset = r n`` (int32), so that
        this replica's rows are ``z_all[offset : offset + n]``.
    """
    z_all = all_gather(z_local)  # (R n, D)
    labels_all = None if labels_local is None else ops.stop_gradient(all_gather(labels_local))  # (R n, K)
    offset = ops.cast(replica_index(), "int32") * ops.shape(z_local)[0]
    return z_all, labels_all, offset
