"""Multi-device training on the engines users already have (docs/distributed.md; SPEC §2).

- ``kmedssl.distributed.context``: the replica layout of the running step (``replica_count``,
  ``replica_index``, ``batch_groups``) and the collectives of the losses (``all_gather`` with its summed
  backward, ``all_reduce_mean``, ``scale_loss``) and the per-replica random draws (``replica_uniform``).
- ``kmedssl.distributed.strategy``: ``data_parallel(devices)`` sets up the active backend's engine (JAX
  ``keras.distribution.DataParallel``, TensorFlow ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy``,
  torch DDP under ``torchrun``).
"""

from kmedssl.distributed.context import (
    all_gather,
    all_reduce_mean,
    batch_groups,
    replica_count,
    replica_index,
    replica_rows,
    replica_uniform,
    scale_loss,
)

__all__ = [
    "all_gather",
    "all_reduce_mean",
    "batch_groups",
    "replica_count",
    "replica_index",
    "replica_rows",
    "replica_uniform",
    "scale_loss",
]
