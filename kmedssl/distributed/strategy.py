"""Data-parallel engines for ``pretrain(..., devices=N)`` / ``kmedssl pretrain --devices N`` (docs/distributed.md).

One engine per backend, each the backend's own:

- **jax**: ``keras.distribution.DataParallel`` over N devices (one program, the global batch sharded over a
  1-D mesh; several hosts join through ``keras.distribution.initialize`` and its ``KERAS_DISTRIBUTION_*``
  variables).
- **tensorflow**: ``tf.distribute.MirroredStrategy`` over N GPUs (N logical CPU devices on a machine without
  GPU), or ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes several workers.
- **torch**: DDP, one process per device started by ``torchrun`` (``WORLD_SIZE`` processes; gloo on CPU,
  NCCL on GPUs); ``fit``'s forward pass runs through the DDP wrapper (``kmedssl.distributed.torch_ddp``).

The recipe's ``batch_size`` is the global batch: each replica trains on ``batch_size / N`` rows of it.
"""

import contextlib
import json
import os

import keras

from kmedssl.distributed.tf_devices import split_host_cpu


class DataParallelEngine:
    """The engine of the active backend for ``replicas`` devices.

    Attributes:
        replicas: devices (replicas) in the data-parallel group, over every host.
        description: what runs, for logs, e.g. ``"tensorflow MirroredStrategy over 2 CPU devices"``.
        is_main: whether this process writes the run directory (process / worker / rank 0).
        ddp: torch's ``DistributedDataParallel`` wrapper once ``prepare`` ran with several processes, else None.
    """

    def __init__(self, replicas, description, is_main=True, scope=None, process_rank=0, processes=1):
        self.replicas = int(replicas)
        self.description = description
        self.is_main = bool(is_main)
        self._scope = scope
        self._process_rank = int(process_rank)
        self._processes = int(processes)
        self.ddp = None

    def scope(self):
        """Context for building, compiling and training the model (the strategy's or distribution's scope)."""
        return self._scope() if self._scope is not None else contextlib.nullcontext()

    def check_batch_size(self, batch_size):
        if batch_size % self.replicas:
            raise ValueError(
                f"Expected a global batch_size divisible by the {self.replicas} devices (each trains on "
                f"batch_size / {self.replicas} rows). Received: batch_size={batch_size}"
            )

    def barrier(self):
        """Wait for every process of a multi-process torch group (a no-op for single-process engines)."""
        if keras.backend.backend() == "torch" and self._processes > 1:
            import torch.distributed as dist

            dist.barrier()

    def prepare(self, model):
        """After the model, its optimizer and any restored state exist: torch wraps the model in DDP."""
        if keras.backend.backend() == "torch" and self._processes > 1:
            from kmedssl.distributed.torch_ddp import attach_ddp

            self.ddp = attach_ddp(model)

    def shard(self, batches):
        """The rows of each global batch this process feeds: the process's rows when several processes feed
        one step (torch DDP ranks, JAX hosts, each assembling the global batch from its part), loaded by this
        process alone (``batches.process_rows(rank, processes)``, e.g. ``EpochBatches.process_rows``); the
        whole batch for one process, whose engine splits it over its devices (TensorFlow, single-host JAX)."""
        if self._processes > 1:
            return batches.process_rows(self._process_rank, self._processes)
        return batches

    def gather_lists(self, items):
        """The concatenation, in process order, of every process's list of JSON-able ``items`` (e.g. the data
        items each process skipped while loading its rows); ``items`` itself with one process."""
        if self._processes == 1:
            return list(items)
        if keras.backend.backend() == "torch":
            import torch.distributed as dist

            gathered = [None] * self._processes
            dist.all_gather_object(gathered, list(items))
            return [item for part in gathered for item in part]
        import numpy as np
        from jax.experimental import multihost_utils

        payload = np.frombuffer(json.dumps(list(items)).encode(), np.uint8)
        lengths = multihost_utils.process_allgather(np.asarray([payload.size]))
        padded = np.zeros(int(np.max(lengths)), np.uint8)
        padded[:payload.size] = payload
        parts = multihost_utils.process_allgather(padded)
        return [item for part, length in zip(parts, np.ravel(lengths))
                for item in json.loads(bytes(part[:int(length)]).decode())]


def data_parallel(devices=None):
    """The data-parallel engine of the active backend, or None for one device.

    Args:
        devices: devices to train on over every host (None: the ``torchrun`` world size on torch, else 1).

    Raises:
        ValueError: fewer devices than asked for, or torch without ``torchrun``.
    """
    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ValueError(f"Expected devices to be an int >= 1. Received: devices={devices!r}")
    backend = keras.backend.backend()
    if backend == "torch":
        return _torch_engine(devices)
    if devices in (None, 1) and not _tf_multi_worker(backend):
        return None
    if backend == "jax":
        return _jax_engine(devices)
    return _tensorflow_engine(devices)


def _jax_engine(devices):
    processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
    if processes > 1:
        keras.distribution.initialize()
    available = keras.distribution.list_devices()
    if len(available) < devices:
        raise ValueError(
            f"Expected at least {devices} JAX devices. Received: {len(available)} ({available}). On CPU, start "
            f"Python with XLA_FLAGS=--xla_force_host_platform_device_count={devices}."
        )
    distribution = keras.distribution.DataParallel(devices=available[:devices])
    import jax

    return DataParallelEngine(
        devices, f"jax keras.distribution.DataParallel over {devices} devices"
        + (f" ({jax.process_count()} processes)" if jax.process_count() > 1 else ""),
        is_main=jax.process_index() == 0, scope=distribution.scope, process_rank=jax.process_index(),
        processes=jax.process_count(),
    )


def _tf_multi_worker(backend):
    if backend != "tensorflow" or "TF_CONFIG" not in os.environ:
        return False
    return len(json.loads(os.environ["TF_CONFIG"]).get("cluster", {}).get("worker", [])) > 1


def _tensorflow_engine(devices):
    import tensorflow as tf

    if _tf_multi_worker("tensorflow"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        if devices is not None and strategy.num_replicas_in_sync != devices:
            raise ValueError(
                f"Expected --devices to match the {strategy.num_replicas_in_sync} replicas of TF_CONFIG's "
                f"workers. Received: devices={devices}"
            )
        return DataParallelEngine(
            strategy.num_replicas_in_sync,
            f"tensorflow MultiWorkerMirroredStrategy over {strategy.num_replicas_in_sync} replicas",
            is_main=task.get("index", 0) == 0, scope=strategy.scope,
        )
    if tf.config.list_physical_devices("GPU"):  # (logical devices would start the runtime before the CPU split)
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < devices:
            raise ValueError(f"Expected at least {devices} GPUs. Received: {len(gpus)}")
        names, kind = [d.name for d in gpus[:devices]], "GPU"
    else:
        split_host_cpu(devices)
        names, kind = [d.name for d in tf.config.list_logical_devices("CPU")[:devices]], "CPU"
    strategy = tf.distribute.MirroredStrategy(names)
    return DataParallelEngine(devices, f"tensorflow MirroredStrategy over {devices} {kind} devices",
                              scope=strategy.scope)


def _torch_engine(devices):
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        if devices not in (None, 1):
            raise ValueError(
                f"Expected a torchrun launch for devices={devices} on torch: one process per device, e.g. "
                f"`torchrun --nproc_per_node {devices} -m kmedssl.cli pretrain ... --devices {devices}` "
                "(docs/distributed.md)."
            )
        return None
    if devices is not None and devices != world_size:
        raise ValueError(
            f"Expected --devices to equal torchrun's world size {world_size} (one process per device). "
            f"Received: devices={devices}"
        )
    import torch
    import torch.distributed as dist

    from kmedssl.distributed.torch_ddp import local_device

    device = local_device()
    if device is not None:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device is not None else "gloo")
    rank = dist.get_rank()
    kind = "GPU" if device is not None else "CPU"
    return DataParallelEngine(
        world_size, f"torch DDP over {world_size} {kind} processes ({dist.get_backend()})", is_main=rank == 0,
        process_rank=rank, processes=world_size,
    )


def describe_data_parallel():
    """One line for ``kmedssl info``: what ``--devices N`` would use on the active backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        if all(d.startswith("cpu") for d in devices):
            return "--devices N makes N XLA host devices of the CPU (keras.distribution.DataParallel)"
        return f"--devices up to {len(devices)} ({devices[0].split(':')[0]}; keras.distribution.DataParallel)"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"--devices up to {len(gpus)} GPUs (tf.distribute.MirroredStrategy)"
        return "--devices N splits the CPU into N logical devices (tf.distribute.MirroredStrategy)"
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count()
    return (f"torchrun world size {world_size}; {gpus} CUDA devices; --devices N needs "
            "torchrun --nproc_per_node N (DDP)")
