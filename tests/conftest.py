"""Test set-up shared by every test module.

Triton must be imported before TensorFlow (SPEC §10: both register the same LLVM options and the second
import aborts the process), so it is imported first when it is installed.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Triton kernels run on CPU through Triton's interpreter (SPEC §10); set TRITON_INTERPRET=0 on a GPU machine.
# It must be set before Triton is imported. The library's auto mode still takes the keras.ops path on CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
if "KERAS_BACKEND" not in os.environ:
    raise RuntimeError("Set KERAS_BACKEND=torch|tensorflow|jax explicitly (see the README's test command).")

try:
    import triton  # noqa: F401  (must precede tensorflow)
except ImportError:
    pass

import keras
import numpy as np
import pytest

if keras.backend.backend() == "torch":
    import torch

    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = False
elif keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_tensor_float_32_execution(False)


@pytest.fixture(autouse=True)
def _seed_everything():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
