"""Process-level runtime set-up that depends on the active backend (the only backend-aware code besides
kernel dispatch lives in ``kmedssl/ops/``)."""

import os
import random
import weakref

import keras
import numpy as np


def seed_everything(seed):
    """Seed Python, NumPy, Keras's global seed generator and the backend, as ``keras.utils.set_random_seed``.

    ``keras.utils.set_random_seed`` imports TensorFlow whenever it is installed (slow, noisy, and fatal if
    Triton is imported later, SPEC §10), so on the torch and jax backends the same state is set without it.
    """
    seed = int(seed)
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    global_state.set_global_attribute("global_random_seed", seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def configure_threads(num_threads=None):
    """Limit intra-op threads (small machines: oversubscribed threads slow small steps, SPEC §10)."""
    num_threads = int(num_threads or os.environ.get("OMP_NUM_THREADS", 0) or os.cpu_count() or 1)
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(num_threads)


def device_description():
    """A short description of the device the backend computes on, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda:0 ({torch.cuda.get_device_name(0)})"
        return "cpu"
    if backend == "jax":
        import jax

        return ", ".join(str(d) for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"{len(gpus)} GPU(s)" if gpus else "cpu"
    return backend


def float16_training_error():
    """Why the active backend cannot train in float16 here (one line), or None when it can: XLA's CPU backend
    has no float16 x float16 -> float32 ``dot_general``, which JAX's gradients of a float16 matmul need."""
    if keras.backend.backend() == "jax":
        import jax

        if jax.default_backend() == "cpu":
            return ("precision='fp16' cannot train on jax's CPU backend (XLA has no float16 matrix products with "
                    "float32 accumulation there); use precision='bf16', or fp16 on a GPU")
    return None


def compile_error():
    """Why the backend cannot compile a training step here (one line), or None when it can. torch: a tiny
    ``torch.compile`` is run (on a CPU, Inductor needs a C++ toolchain); JAX and TensorFlow compile with XLA,
    which ships with them."""
    if keras.backend.backend() != "torch":
        return None
    import torch

    try:
        torch.compile(lambda x: x * 2.0 + 1.0)(torch.ones(4))
    except Exception as error:  # any failure of the compiler stack means: train eagerly
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return f"torch.compile cannot compile here ({type(error).__name__}: {first_line})"
    return None


_INFERENCE_FUNCTIONS = weakref.WeakKeyDictionary()  # layer -> its compiled ``features`` (JAX)


def inference_features(layer):
    """``layer.features`` (its inference mode) as this backend runs it fastest outside ``fit``: on JAX one
    ``jax.jit`` per layer, with the layer's variables passed in as arguments (``keras.StatelessScope``, as Keras's
    own JAX trainer does), so new weights need no recompilation and each input shape compiles once; eager op by op,
    JAX compiles every primitive for every new shape. Eager on torch and TensorFlow. For layers whose features
    depend on their variables alone (kmedssl's backbones): Python state read by ``features`` is traced once."""
    if keras.backend.backend() != "jax":
        return layer.features
    if layer not in _INFERENCE_FUNCTIONS:
        import jax

        variables = list(layer.variables)

        @jax.jit
        def run(values, images):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return layer.features(images)

        _INFERENCE_FUNCTIONS[layer] = lambda images: run([variable.value for variable in variables], images)
    return _INFERENCE_FUNCTIONS[layer]
