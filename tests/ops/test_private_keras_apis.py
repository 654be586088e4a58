"""The private Keras APIs kmedssl relies on (pyproject pins keras below the next minor version for them).

Each test names the API and the kmedssl code that uses it, so an upgrade that changes one fails here, loudly,
before it breaks training in a subtler way.
"""

import inspect

import keras
import numpy as np
import pytest

from kmedssl.ops.runtime import seed_everything


def require(condition, api, used_by):
    if not condition:
        pytest.fail(f"Keras {keras.__version__} changed the private API {api} (used by {used_by}); "
                    f"re-check that code before raising the keras pin in pyproject.toml")


def test_global_seed_state_of_seed_everything():
    """``keras.src.backend.common.global_state`` and ``keras.src.random.seed_generator.GLOBAL_SEED_GENERATOR``
    (``kmedssl/ops/runtime.py::seed_everything``): seeding through them draws what ``set_random_seed`` draws."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    api = "keras.src.backend.common.global_state / keras.src.random.seed_generator.GLOBAL_SEED_GENERATOR"
    require(hasattr(global_state, "set_global_attribute") and hasattr(seed_generator, "GLOBAL_SEED_GENERATOR"),
            api, "kmedssl.ops.runtime.seed_everything")
    keras.utils.set_random_seed(7)
    expected = keras.ops.convert_to_numpy(keras.random.normal((5,)))
    keras.utils.set_random_seed(1)
    keras.random.normal((5,))
    seed_everything(7)
    received = keras.ops.convert_to_numpy(keras.random.normal((5,)))
    require(np.array_equal(expected, received), api, "kmedssl.ops.runtime.seed_everything")


def test_batch_normalization_moments_hook():
    """``keras.layers.BatchNormalization._moments(inputs, mask)`` and ``_reduction_axes``
    (``kmedssl/backbones/layers.py::SyncBatchNormalization``)."""
    layer = keras.layers.BatchNormalization()
    api = "keras.layers.BatchNormalization._moments(inputs, mask)"
    require(hasattr(layer, "_moments") and list(inspect.signature(layer._moments).parameters) == ["inputs", "mask"],
            api, "kmedssl.backbones.layers.SyncBatchNormalization")
    layer.build((2, 3))
    mean, variance = layer._moments(keras.ops.convert_to_tensor(np.arange(6.0, dtype="float32").reshape(2, 3)), None)
    require(np.allclose(keras.ops.convert_to_numpy(mean), [1.5, 2.5, 3.5]) and hasattr(layer, "_reduction_axes"),
            api, "kmedssl.backbones.layers.SyncBatchNormalization")


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the in-place Adam exists on torch only")
def test_torch_adam_update_hook():
    """``keras.src.backend.torch.optimizers.torch_adam.Adam`` / ``torch_adamw.AdamW`` and the members their
    ``_parallel_update_step`` override reads (``kmedssl/ops/optimizers.py``)."""
    from keras.src.backend.torch.optimizers import torch_adam, torch_adamw

    api = "keras.src.backend.torch.optimizers.torch_adam.Adam._parallel_update_step(grads, variables, learning_rate)"
    for cls in (torch_adam.Adam, torch_adamw.AdamW):
        require(list(inspect.signature(cls._parallel_update_step).parameters) == ["self", "grads", "variables",
                                                                                  "learning_rate"],
                api, "kmedssl.ops.optimizers")
    optimizer = torch_adam.Adam(0.1)
    variable = keras.Variable(np.ones(3, dtype="float32"))
    optimizer.build([variable])
    require(all(hasattr(optimizer, name) for name in ("_momentums", "_velocities", "_get_variable_index")),
            "keras Adam's _momentums, _velocities, _get_variable_index", "kmedssl.ops.optimizers")
