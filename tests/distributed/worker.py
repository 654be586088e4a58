"""Training steps of tiny methods, single-device or data-parallel, for the equivalence tests (test_equivalence.py).

Run as a script, one process per engine (XLA's device count, TensorFlow's logical devices and torchrun's process
group are fixed at start-up); each process runs every case, since starting an engine is the slow part:

    python tests/distributed/worker.py MODE OUT_DIR

MODE:
  single     one device, the global batch: gather "global" -> the plain loss; gather "local" -> the
             per-replica reference: the mean over the REPLICAS row chunks of the plain loss of each chunk
             (the embeddings of one forward pass on the global batch, so the masks and crops are those of
             every other mode; see kmedssl.distributed.replica_uniform)
  jax        keras.distribution.DataParallel over REPLICAS devices (XLA_FLAGS sets the host device count)
  tensorflow MirroredStrategy over REPLICAS logical CPU devices
  torch      DDP, one process per replica (under torchrun, gloo); each rank feeds its rows of every global
             batch (``engine.shard``, as pretrain does)

Cases, each built after ``keras.utils.set_random_seed(SEED)`` (identical initial weights in every mode):

- ``{method}-{gather}.npz`` for method in METHODS and gather in GATHERS: one SGD step on a global batch of
  GLOBAL_BATCH rows. Holds ``loss`` (the step's logged loss: the mean over the global batch), ``init{i}`` and
  ``w{i}`` (every trainable weight before and after the step, in ``model.trainable_weights`` order). Written by
  the main process.
- ``ace-rank{r}.npz`` from every process r (``ace-rank0.npz`` on one process): a tiny ACE (teacher EMA
  momentum 0.5) after ACE_STEPS SGD steps of ACE_BATCH global rows: ``loss`` (the epoch's), ``init{i}`` and
  ``w{i}`` (the trainable weights before and after), ``teacher_init{i}`` and ``teacher{i}`` (the teacher
  encoder's and head's weights before and after) and ``center`` (after; zeros before).
"""

import os
import sys

MODE, OUT_DIR = sys.argv[1:3]
REPLICAS, GLOBAL_BATCH, SIZE, LABELS, SEED = 2, 8, 16, 6, 11
# simclr_resnet: SimCLR on a ResNet, whose BatchNorm statistics must cover the global batch (SyncBatchNormalization)
METHODS, GATHERS = ("mvcon", "simclr", "simclr_resnet", "spcl", "mulsupcon"), ("global", "local")
ACE_GRID, ACE_CELLS, ACE_PATCH, ACE_BATCH, ACE_STEPS = 4, 10, 8, 4, 2  # 32 px crops of an 80 px source

os.environ["KERAS_BACKEND"] = {"single": os.environ.get("KERAS_BACKEND", "jax")}.get(MODE, MODE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA (JAX, and TensorFlow's jit-compiled train step) compiles every case's step once: a cheap CPU compile
# halves the run time, and every mode compiles the same way.
XLA_FLAGS = ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]
if MODE == "jax":
    XLA_FLAGS.append(f"--xla_force_host_platform_device_count={REPLICAS}")
os.environ["XLA_FLAGS"] = " ".join(XLA_FLAGS)
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    if MODE == "tensorflow":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
    tf.config.experimental.enable_tensor_float_32_execution(False)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from kmedssl.backbones import ResNet18, VisionTransformer  # noqa: E402
from kmedssl.distributed.strategy import data_parallel  # noqa: E402
from kmedssl.losses import jaccard_supcon, multiview_infonce, nt_xent, tsp_infonce  # noqa: E402
from kmedssl.methods.ace import ACE  # noqa: E402
from kmedssl.methods.mulsupcon import MulSupCon  # noqa: E402
from kmedssl.methods.mvcon import MVCon  # noqa: E402
from kmedssl.methods.simclr import SimCLR  # noqa: E402
from kmedssl.methods.spcl import SPCL  # noqa: E402
from kmedssl.views.ace import ACEViews  # noqa: E402


def tiny_vit():
    return VisionTransformer(image_size=SIZE, patch_size=4, channels=1, dim=16, depth=1, num_heads=2, seed=3)


def build(method, gather):
    if method == "mvcon":
        return MVCon(tiny_vit(), temperature=0.5, gather=gather)
    if method == "spcl":
        return SPCL(tiny_vit(), seed=5, gather=gather)
    if method == "simclr_resnet":
        encoder = ResNet18(channels=1, stem="cifar", width=4)
        return SimCLR(encoder, projection_dim=8, hidden_dim=16, crop_scale=(0.5, 1.0), seed=5, gather=gather)
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


def per_replica_loss(method, model, x, y_pred):
    """The reference of gather="local": each replica's loss of its own rows, averaged over the replicas."""
    if method == "mvcon":
        return chunk_mean(lambda f, l: multiview_infonce(f, l, model.temperature), y_pred["z_frontal"],
                          y_pred["z_lateral"])
    if method == "spcl":
        return chunk_mean(lambda a, b: tsp_infonce(a, b, kappa=model.kappa, scale=model.scale()), y_pred["z_1"],
                          y_pred["z_2"])
    if method.startswith("simclr"):
        return chunk_mean(lambda a, b: nt_xent(a, b, model.temperature), y_pred["z_1"], y_pred["z_2"])
    features = ops.stack([y_pred["z_1"], y_pred["z_2"]], axis=1)
    return chunk_mean(lambda f, y: jaccard_supcon(f, y, model.temperature, model.threshold, model.base_temperature),
                      features, x["metadata"])


def use_per_replica_reference(method, model):
    """Make ``model`` train on ``per_replica_loss`` (its own ``compute_loss`` still runs, for its trackers)."""
    compute_loss = model.compute_loss

    def reference_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        return per_replica_loss(method, model, x, y_pred)

    model.compute_loss = reference_loss


class GlobalBatches(keras.utils.PyDataset):
    """Consecutive global batches of ``size`` rows of a dict of arrays (what pretrain's loader yields)."""

    def __init__(self, arrays, size, part=(0, 1)):
        super().__init__()
        self.arrays = arrays
        self.size = size
        self.part = part

    def __len__(self):
        return len(next(iter(self.arrays.values()))) // self.size

    def __getitem__(self, index):
        rows = self.size // self.part[1]
        first = index * self.size + self.part[0] * rows
        return {k: v[first:first + rows] for k, v in self.arrays.items()}

    def process_rows(self, rank, processes):  # engine.shard's protocol, as EpochBatches has it
        return GlobalBatches(self.arrays, self.size, (rank, processes))


def train(engine, model, arrays, size):
    """Compile ``model`` (SGD), build it and train it for one epoch over the global batches of ``size`` rows of
    ``arrays``. Returns the logged loss of the epoch and the trainable weights before training."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    model(GlobalBatches(arrays, size)[0], training=False)  # every variable, before DDP wraps the model
    initial = numpy_weights("init", model.trainable_weights)
    if MODE == "torch":
        engine.prepare(model)
        # Each process feeds its rank's rows of every global batch, as pretrain does.
        history = model.fit(engine.shard(GlobalBatches(arrays, size)), epochs=1, verbose=0, shuffle=False)
    else:
        history = model.fit(arrays, batch_size=size, epochs=1, verbose=0, shuffle=False)
    return np.float64(history.history["loss"][0]), initial


def process_rank():
    """This process's rank under torchrun, else 0."""
    if MODE != "torch":
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def numpy_weights(prefix, variables):
    """``{prefix}{i}``: the value of ``variables[i]`` as a NumPy array."""
    return {f"{prefix}{i}": np.array(v.numpy()) for i, v in enumerate(variables)}


def engine_scope(engine):
    return engine.scope() if engine is not None else keras.name_scope("single")


def contrastive_case(engine, method, gather):
    keras.utils.set_random_seed(SEED)
    with engine_scope(engine):
        model = build(method, gather)
        if MODE == "single" and gather == "local":
            use_per_replica_reference(method, model)
        loss, initial = train(engine, model, global_batch(method), GLOBAL_BATCH)
    if process_rank() == 0:
        np.savez(os.path.join(OUT_DIR, f"{method}-{gather}.npz"), loss=loss, **initial,
                 **numpy_weights("w", model.trainable_weights))


def ace_batch():
    views, rng = ACEViews(grid=ACE_GRID, image_cells=ACE_CELLS), np.random.default_rng(0)
    samples = [views(rng.uniform(size=(ACE_CELLS * ACE_PATCH,) * 2).astype(np.float32), rng)
               for _ in range(ACE_BATCH * ACE_STEPS)]
    return {key: np.stack([s[key] for s in samples]) for key in samples[0]}


def ace_case(engine):
    keras.utils.set_random_seed(SEED)
    with engine_scope(engine):
        encoder = VisionTransformer(image_size=ACE_GRID * ACE_PATCH, patch_size=ACE_PATCH, dim=32, depth=1,
                                    num_heads=2)
        model = ACE(encoder, total_steps=ACE_STEPS, head_dim=16, head_hidden_dim=32, head_bottleneck_dim=8,
                    teacher_momentum=0.5, teacher_momentum_final=0.5)
        teacher = model.teacher.weights + model.teacher_head.weights
        teacher_initial = numpy_weights("teacher_init", teacher)
        loss, initial = train(engine, model, ace_batch(), ACE_BATCH)
    np.savez(os.path.join(OUT_DIR, f"ace-rank{process_rank()}.npz"), loss=loss, **initial, **teacher_initial,
             center=np.array(model.center.numpy()), **numpy_weights("w", model.trainable_weights),
             **numpy_weights("teacher", teacher))


def main():
    engine = data_parallel(REPLICAS) if MODE != "single" else None
    os.makedirs(OUT_DIR, exist_ok=True)
    for method in METHODS:
        for gather in GATHERS:
            contrastive_case(engine, method, gather)
    ace_case(engine)


if __name__ == "__main__":
    main()
