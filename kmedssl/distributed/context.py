"""The replica layout of the running train step, and the collectives the losses need (backend-specific).

Two ways a data-parallel step can see its batch (docs/distributed.md):

- **Replicated programs** (TensorFlow ``tf.distribute`` replicas, torch DDP processes): each replica runs the
  step on its own rows. ``replica_count()`` is the number of replicas, ``replica_index()`` this one's
  index, and ``all_gather`` brings every replica's rows together.
- **One global program** (JAX under ``keras.distribution.DataParallel``): the step is one ``jit`` over the
  global batch, sharded over a device mesh, and XLA inserts the collectives. ``replica_count()`` is 1 and
  ``batch_groups()`` is the size of the mesh's batch axis: rows ``[g * B / G, (g + 1) * B / G)`` of the
  global batch live on device g.

Outside any of these (one device, or a cross-replica context such as Keras's symbolic build) the layout is
one replica and one group, and every function below is the identity.

Gradients (``all_gather``): the forward pass concatenates the replicas' rows (replica-major); the backward
pass sums the incoming gradient over the replicas and hands each replica the slice of its own rows, so each
embedding receives the gradient of every replica's loss terms that used it.
"""

import keras
from keras import ops


def _backend():
    return keras.backend.backend()


def _tf_replica_context():
    """The tf.distribute replica context of a replica of several, else None."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _torch_process_group_size():
    """The world size of an initialised torch.distributed process group, else 1."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def replica_count():
    """Replicas whose rows this program does not see: tf.distribute replicas in sync, the torch process group's
    world size, else 1 (always 1 on JAX, where one program sees the global batch)."""
    backend = _backend()
    if backend == "tensorflow":
        context = _tf_replica_context()
        return 1 if context is None else context.num_replicas_in_sync
    if backend == "torch":
        return _torch_process_group_size()
    return 1


def replica_index():
    """This replica's index in ``[0, replica_count())``: an int32 scalar tensor on TensorFlow (the replica id is
    a tensor inside ``strategy.run``), else a Python int."""
    backend = _backend()
    if backend == "tensorflow":
        context = _tf_replica_context()
        return 0 if context is None else context.replica_id_in_sync_group
    if backend == "torch" and _torch_process_group_size() > 1:
        import torch.distributed as dist

        return dist.get_rank()
    return 0


def batch_groups():
    """Device groups of the global batch seen by one JAX program under ``keras.distribution.DataParallel``
    (the size of the mesh's batch axis), else 1."""
    if _backend() != "jax":
        return 1
    distribution = keras.distribution.distribution()
    if not isinstance(distribution, keras.distribution.DataParallel):
        return 1
    mesh = distribution.device_mesh
    return int(mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)])


def all_gather(x):
    """Rows of every replica, concatenated replica-major along axis 0: ``(b, ...) -> (replica_count() * b, ...)``.

    Every replica must pass the same shape. Differentiable: the gradient of replica r's input is the sum over
    the replicas of the gradient of rows ``[r b, (r + 1) b)`` of the output. The identity on one replica.
    """
    backend = _backend()
    if backend == "tensorflow":
        context = _tf_replica_context()
        if context is None:
            return x
        # ReplicaContext.all_gather's gradient all-reduces (sums) the upstream gradient and slices this replica's
        # rows: the semantics above. Its result has no static shape; restore it.
        gathered = context.all_gather(x, axis=0)
        rows = None if x.shape[0] is None else x.shape[0] * context.num_replicas_in_sync
        gathered.set_shape((rows,) + tuple(x.shape[1:]))
        return gathered
    if backend == "torch" and _torch_process_group_size() > 1:
        from kmedssl.distributed.torch_collectives import gather_rows

        return gather_rows(x)
    return x


def all_reduce_mean(x):
    """The mean of ``x`` over the replicas; the identity on one replica. Differentiable: the gradient is the mean
    over the replicas of their upstream gradients (TensorFlow's all-reduce gradient; the torch function likewise),
    as every replica's loss uses the mean."""
    backend = _backend()
    if backend == "tensorflow":
        context = _tf_replica_context()
        if context is None:
            return x
        import tensorflow as tf

        return context.all_reduce(tf.distribute.ReduceOp.MEAN, x)
    if backend == "torch" and _torch_process_group_size() > 1:
        from kmedssl.distributed.torch_collectives import mean_over_processes

        return mean_over_processes(x)
    return x


def metric_mean(x):
    """A logged value as the mean over the replicas: the mean over the processes of a torch process group, whose
    metrics Keras does not aggregate; ``x`` elsewhere (tf.distribute aggregates metric variables itself, and
    JAX's program already computes global means)."""
    if _backend() == "torch" and _torch_process_group_size() > 1:
        from kmedssl.distributed.torch_collectives import mean_over_processes

        return mean_over_processes(ops.stop_gradient(x))
    return x


def scale_loss(loss):
    """The loss a replica hands to its optimizer, so that the engine's gradient reduction gives the gradient of
    the mean over replicas: ``loss / replica_count()`` on TensorFlow (tf.distribute sums the replicas'
    gradients), ``loss`` elsewhere (torch DDP averages them; JAX's program already holds the global mean)."""
    if _backend() == "tensorflow":
        replicas = replica_count()
        if replicas > 1:
            return loss / ops.cast(replicas, loss.dtype)
    return loss


def replica_rows(x, replicas=None):
    """Rows ``[r b, (r + 1) b)`` of ``x`` (``(replicas * b, ...)``) for this replica r; ``x`` on one replica.

    Used with a random draw made for the global batch on every replica (same seed state): each replica keeps its
    own rows, so the draws differ across replicas and equal those of one device running the global batch.
    """
    replicas = replica_count() if replicas is None else replicas
    if replicas == 1:
        return x
    rows = ops.shape(x)[0] // replicas
    start = ops.cast(replica_index(), "int32") * rows
    return ops.slice(x, [start] + [0] * (len(x.shape) - 1), [rows] + list(ops.shape(x)[1:]))


def replica_uniform(shape, minval=0.0, maxval=1.0, seed=None):
    """``keras.random.uniform`` for the rows of this replica: one draw for the global batch
    ``(replica_count() * shape[0], ...)``, of which this replica keeps its rows (``replica_rows``).

    Every replica draws from the same seed state, so the draws differ across replicas, are reproducible, and
    equal those of one device running the global batch. On one replica: ``keras.random.uniform(shape, ...)``.
    """
    replicas = replica_count()
    global_shape = (shape[0] * replicas,) + tuple(shape[1:])
    return replica_rows(keras.random.uniform(global_shape, minval=minval, maxval=maxval, seed=seed), replicas)
