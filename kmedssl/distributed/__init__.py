"""Multi-device training on the engines users already have (docs/distributed.md; SPEC §2).

- ``kmedssl.distributed.context``: the replica layout of the running step (``replica_count``,
  ``replica_index``, ``batch_groups``), the collectives of the losses (``all_gather`` with its summed
  backward, ``all_reduce_mean``, ``scale_loss``, ``metric_mean``) and the per-replica random draws
  (``replica_uniform``).
- ``kmedssl.distributed.strategy``: ``data_parallel(devices)`` sets up the active backend's engine (JAX
  ``keras.distribution.DataParallel``, TensorFlow ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy``,
  torch DDP under ``torchrun``).
- ``kmedssl.distributed.tf_devices``: TensorFlow's CPU as N logical devices (Keras-free, so it can run before
  Keras starts TensorFlow; this package imports Keras only when one of the names below is used).
"""

import importlib

_CONTEXT_NAMES = (
    "all_gather",
    "all_reduce_mean",
    "batch_groups",
    "metric_mean",
    "replica_count",
    "replica_index",
    "replica_rows",
    "replica_uniform",
    "scale_loss",
)

__all__ = [*_CONTEXT_NAMES, "data_parallel"]


def __getattr__(name):
    if name in _CONTEXT_NAMES:
        return getattr(importlib.import_module("kmedssl.distributed.context"), name)
    if name == "data_parallel":
        return importlib.import_module("kmedssl.distributed.strategy").data_parallel
    raise AttributeError(f"module 'kmedssl.distributed' has no attribute {name!r}")
