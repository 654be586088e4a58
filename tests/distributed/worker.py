"""One training step of a tiny contrastive method, single-device or data-parallel, for the equivalence tests.

Run as a script (each engine needs its own process: XLA's device count, TensorFlow's logical devices and
torchrun's process group are fixed at start-up):

    python tests/distributed/worker.py MODE METHOD GATHER OUT.npz

MODE:
  single     one device, the global batch: gather "global" -> the plain loss; gather "local" -> the
             per-replica reference: the mean over the REPLICAS row chunks of the plain loss of each chunk
             (the embeddings of one forward pass on the global batch, so the masks and crops are those of
             every other mode; see kmedssl.distributed.replica_uniform)
  jax        keras.distribution.DataParallel over REPLICAS devices (XLA_FLAGS sets the host device count)
  tensorflow MirroredStrategy over REPLICAS logical CPU devices
  torch      DDP, one process per replica (under torchrun, gloo); rank 0 writes OUT

Writes ``loss`` (the step's logged loss: the mean over the global batch) and ``w0 ... wN`` (every trainable
weight after the step, in ``model.trainable_weights`` order).
"""

import os
import sys

MODE, METHOD, GATHER, OUT = sys.argv[1:5]
REPLICAS, GLOBAL_BATCH, SIZE, LABELS = 2, 8, 16, 6

os.environ["KERAS_BACKEND"] = {"single": os.environ.get("KERAS_BACKEND", "jax")}.get(MODE, MODE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if MODE == "jax":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={REPLICAS}"
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    if MODE == "tensorflow":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
    tf.config.experimental.enable_tensor_float_32_execution(False)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from kmedssl.backbones import VisionTransformer  # noqa: E402
from kmedssl.distributed.strategy import data_parallel  # noqa: E402
from kmedssl.losses import jaccard_supcon, multiview_infonce, nt_xent, tsp_infonce  # noqa: E402
from kmedssl.methods.mulsupcon import MulSupCon  # noqa: E402
from kmedssl.methods.mvcon import MVCon  # noqa: E402
from kmedssl.methods.simclr import SimCLR  # noqa: E402
from kmedssl.methods.spcl import SPCL  # noqa: E402


def tiny_vit():
    return VisionTransformer(image_size=SIZE, patch_size=4, channels=1, dim=16, depth=1, num_heads=2, seed=3)


def build(method, gather):
    if method == "mvcon":
        return MVCon(tiny_vit(), temperature=0.5, gather=gather)
    if method == "spcl":
        return SPCL(tiny_vit(), seed=5, gather=gather)
    cls = SimCLR if method == "simclr" else MulSupCon
    extra = {} if method == "simclr" else {"threshold": 0.3}
    return cls(tiny_vit(), projection_dim=8, hidden_dim=16, crop_scale=(0.5, 1.0), seed=5, gather=gather, **extra)


def global_batch(method):
    rng = np.random.default_rng(7)

    def images():
        return rng.random((GLOBAL_BATCH, SIZE, SIZE, 1)).astype("float32")

    if method == "mvcon":
        return {"frontal": images(), "lateral": images()}
    batch = {"image": images()}
    if method == "mulsupcon":
        batch["metadata"] = (rng.random((GLOBAL_BATCH, LABELS)) < 0.4).astype("float32")
    return batch


def chunk_mean(loss_fn, *tensors):
    """``mean_r loss_fn(*rows_r)`` over REPLICAS equal row chunks (the per-replica computation)."""
    chunks = [ops.split(t, REPLICAS, axis=0) for t in tensors]
    return ops.mean(ops.stack([loss_fn(*parts) for parts in zip(*chunks)]))


def per_replica_loss(model, x, y_pred):
    """The reference of gather="local": each replica's loss of its own rows, averaged over the replicas."""
    if METHOD == "mvcon":
        return chunk_mean(lambda f, l: multiview_infonce(f, l, model.temperature), y_pred["z_frontal"],
                          y_pred["z_lateral"])
    if METHOD == "spcl":
        return chunk_mean(lambda a, b: tsp_infonce(a, b, kappa=model.kappa, scale=model.scale()), y_pred["z_1"],
                          y_pred["z_2"])
    if METHOD == "simclr":
        return chunk_mean(lambda a, b: nt_xent(a, b, model.temperature), y_pred["z_1"], y_pred["z_2"])
    features = ops.stack([y_pred["z_1"], y_pred["z_2"]], axis=1)
    return chunk_mean(lambda f, y: jaccard_supcon(f, y, model.temperature, model.threshold, model.base_temperature),
                      features, x["metadata"])


def main():
    keras.utils.set_random_seed(11)
    engine = data_parallel(REPLICAS) if MODE != "single" else None
    scope = engine.scope() if engine is not None else keras.name_scope("single")
    batch = global_batch(METHOD)
    with scope:
        model = build(METHOD, GATHER)
        if MODE == "single" and GATHER == "local":
            compute_loss = model.compute_loss

            def reference_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
                compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
                return per_replica_loss(model, x, y_pred)

            model.compute_loss = reference_loss
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
        model(batch, training=False)  # build every variable before DDP wraps the model
        if engine is not None:
            engine.prepare(model)
        rows, batch_size = batch, GLOBAL_BATCH
        if MODE == "torch":  # each process feeds its rank's rows, as ProcessRows does in pretrain
            import torch.distributed as dist

            batch_size = GLOBAL_BATCH // REPLICAS
            rows = {k: v[dist.get_rank() * batch_size:(dist.get_rank() + 1) * batch_size] for k, v in batch.items()}
        history = model.fit(rows, batch_size=batch_size, epochs=1, verbose=0, shuffle=False).history
    if engine is None or engine.is_main:
        weights = {f"w{i}": ops.convert_to_numpy(v.value) for i, v in enumerate(model.trainable_weights)}
        np.savez(OUT, loss=np.float64(history["loss"][0]), **weights)


if __name__ == "__main__":
    main()
