"""``model.fit`` under torch DDP (``torchrun``): the forward pass of each train step goes through
``torch.nn.parallel.DistributedDataParallel``, which averages the parameter gradients over the processes.

Keras's own torch train step calls ``model(x)``; DDP only synchronises gradients when the forward pass runs
through its wrapper (Keras's multi-GPU torch guide does this in a custom loop). ``attach_ddp`` keeps ``fit``
and gives the model a train step that is Keras's, with the forward pass through the wrapper; everything else
(callbacks, metrics, checkpoints) is untouched.
"""

import os

import keras
import torch
from torch.nn.parallel import DistributedDataParallel

from kmedssl.distributed.context import metric_mean


def local_device():
    """``cuda:LOCAL_RANK`` on a GPU machine (one GPU per process), else None (CPU, gloo)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return None


def attach_ddp(model):
    """Wrap a built, compiled Keras ``model`` in DDP and route ``fit``'s forward pass through the wrapper.

    DDP broadcasts rank 0's parameters and non-trainable state (EMA teacher, centre, seed generator states) to
    every process when it wraps the model, so every replica starts identical.

    Returns:
        The ``DistributedDataParallel`` wrapper (also kept by the new train step).
    """
    device = local_device()
    wrapper = DistributedDataParallel(model, device_ids=None if device is None else [device.index])

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = wrapper(x, training=True)
        model.zero_grad()
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        batch_size = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
        model._loss_tracker.update_state(metric_mean(loss), sample_weight=batch_size)  # the global batch's mean
        loss = model.optimizer.scale_loss(loss)
        loss.backward()  # DDP's hooks average the gradients over the processes here
        trainable = model.trainable_weights[:]
        with torch.no_grad():
            model.optimizer.apply([v.value.grad for v in trainable], trainable)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.train_step = train_step  # looked up by fit's train function at every step
    return wrapper
