"""Checks shared by every backbone test (keras-hub's ``run_backbone_test`` pattern).

``run_backbone_checks`` builds a backbone from ``init_kwargs`` and verifies, on the current backend: the
output shape, deterministic inference, a compiled call (``jax.jit`` / ``tf.function`` with an unknown batch
dimension) equal to the eager one, the ``get_config``/``from_config`` round trip, save to ``.keras`` and
load with identical outputs (on torch also in a fresh process that imports only ``kmedssl.backbones``),
gradients reaching every trainable weight, and one ``model.fit`` step (every trainable weight moves,
BatchNorm statistics move, fixed weights such as sin-cos positions stay).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np

from tests.helpers import assert_close, to_numpy

_LOAD_SCRIPT = """
import sys
import keras
import numpy as np
import kmedssl.backbones  # registration only
path, data = sys.argv[1], np.load(sys.argv[2])
model = keras.saving.load_model(path)
assert type(model).__name__ == data["class_name"], type(model)
args = [data[f"arg_{i}"] for i in range(int(data["num_args"]))]
kwargs = {name[len("kwarg_"):]: data[name] for name in data.files if name.startswith("kwarg_")}
output = keras.ops.convert_to_numpy(model(*args, training=False, **kwargs))
np.testing.assert_allclose(output, data["expected"], rtol=1e-6, atol=1e-6)
# Only the backbones and the leaf module of replica collectives they use (SyncBatchNormalization, DropPath).
allowed = ("kmedssl.backbones", "kmedssl.distributed", "kmedssl.distributed.context")
loaded = [m for m in sys.modules if m.startswith("kmedssl.") and not m.startswith(allowed)]
assert not loaded, loaded
"""


def run_backbone_checks(cls, init_kwargs, inputs, expected_output_shape, tmp_path, call_kwargs=None):
    """Run every shared check; ``inputs`` are the positional NumPy arrays of ``call``, ``call_kwargs`` the
    keyword arrays (e.g. ``token_indices``)."""
    call_kwargs = call_kwargs or {}
    model = cls(**init_kwargs)
    output = model(*inputs, training=False, **call_kwargs)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert np.all(np.isfinite(to_numpy(output)))
    assert_close(model(*inputs, training=False, **call_kwargs), to_numpy(output), rtol=0, atol=0)
    assert_close(_compiled_call(model, inputs, call_kwargs), to_numpy(output), rtol=1e-5, atol=1e-5)
    _check_config_round_trip(cls, model, inputs, call_kwargs, output)
    _check_saving(cls, model, inputs, call_kwargs, output, tmp_path)
    _check_gradients(model, inputs, call_kwargs)
    _check_fit_step(model, inputs, call_kwargs)
    return model


def trainable_gradients(model, inputs, call_kwargs, loss_of_output):
    """Gradients of ``loss_of_output(model(*inputs, training=True, **call_kwargs))`` w.r.t.
    ``model.trainable_variables``, as NumPy arrays (None where no gradient arrives)."""
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            output, _ = model.stateless_call(trainable, non_trainable, *inputs, training=True, **call_kwargs)
            return loss_of_output(output)

        grads = jax.jit(jax.grad(loss))([v.value for v in variables])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_of_output(model(*inputs, training=True, **call_kwargs))
        grads = tape.gradient(value, variables)
    else:
        import torch

        value = loss_of_output(model(*inputs, training=True, **call_kwargs))
        grads = torch.autograd.grad(value, [v.value for v in variables], allow_unused=True)
    return [None if g is None else to_numpy(g) for g in grads]


def _compiled_call(model, inputs, call_kwargs):
    """Inference through the backend's compiler (eager on torch), with the batch dimension unknown on TF."""
    backend = keras.backend.backend()
    names = list(call_kwargs)
    arrays = [*inputs, *call_kwargs.values()]

    def call(*tensors):
        kwargs = dict(zip(names, tensors[len(inputs):]))
        return model(*tensors[: len(inputs)], training=False, **kwargs)

    if backend == "jax":
        import jax

        def stateless(trainable, non_trainable, *tensors):
            kwargs = dict(zip(names, tensors[len(inputs):]))
            return model.stateless_call(trainable, non_trainable, *tensors[: len(inputs)], training=False, **kwargs)[0]

        values = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        return jax.jit(stateless)(*values, *arrays)
    if backend == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)) for a in arrays]
        return tf.function(call, input_signature=signature)(*arrays)
    return call(*arrays)


def _check_config_round_trip(cls, model, inputs, call_kwargs, output):
    config = model.get_config()
    json.dumps(keras.saving.serialize_keras_object(model))
    restored = cls.from_config(config)
    assert restored.get_config() == config
    assert [w.shape for w in restored.weights] == [w.shape for w in model.weights]
    restored.set_weights(model.get_weights())
    assert_close(restored(*inputs, training=False, **call_kwargs), to_numpy(output), rtol=1e-6, atol=1e-6)


def _check_saving(cls, model, inputs, call_kwargs, output, tmp_path):
    path = os.path.join(tmp_path, "model.keras")
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls and loaded.get_config() == model.get_config()
    assert_close(loaded(*inputs, training=False, **call_kwargs), to_numpy(output), rtol=1e-6, atol=1e-6)
    if keras.backend.backend() == "torch":  # registration is backend-independent: prove it once, on the cheapest
        _check_fresh_process_load(model, inputs, call_kwargs, output, path, tmp_path)


def _check_fresh_process_load(model, inputs, call_kwargs, output, path, tmp_path):
    data_path = os.path.join(tmp_path, "data.npz")
    arrays = {f"arg_{i}": np.asarray(a) for i, a in enumerate(inputs)}
    arrays.update({f"kwarg_{name}": np.asarray(a) for name, a in call_kwargs.items()})
    np.savez(data_path, expected=to_numpy(output), num_args=len(inputs), class_name=type(model).__name__, **arrays)
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, path, data_path], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _check_gradients(model, inputs, call_kwargs):
    shape = model(*inputs, **call_kwargs).shape
    weights = keras.ops.convert_to_tensor(np.random.default_rng(1).normal(size=shape).astype("float32"))
    grads = trainable_gradients(model, inputs, call_kwargs, lambda out: keras.ops.sum(out * weights))
    for variable, grad in zip(model.trainable_variables, grads):
        assert grad is not None, f"no gradient reaches {variable.path}"
        assert np.all(np.isfinite(grad)) and np.any(grad != 0), f"zero or non-finite gradient for {variable.path}"


class Regressor(keras.Model):
    """Backbone -> mean over all but the batch and feature axes -> Dense(1); fed a dict of arrays."""

    def __init__(self, backbone, num_args, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_args = num_args
        self.head = keras.layers.Dense(1)

    def call(self, data, training=None):
        args = [data[f"arg_{i}"] for i in range(self.num_args)]
        kwargs = {name: data[name] for name in data if not name.startswith("arg_")}
        features = self.backbone(*args, training=training, **kwargs)
        axes = tuple(range(1, len(features.shape) - 1))
        return self.head(keras.ops.mean(features, axis=axes) if axes else features)


def _check_fit_step(model, inputs, call_kwargs):
    data = {f"arg_{i}": np.asarray(a) for i, a in enumerate(inputs)}
    data.update({name: np.asarray(a) for name, a in call_kwargs.items()})
    batch = len(inputs[0])
    regressor = Regressor(model, len(inputs), name="regressor")
    regressor.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {w.path: to_numpy(w) for w in model.weights}
    history = regressor.fit(data, np.ones((batch, 1), "float32"), batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for w in model.trainable_weights:
        assert not np.array_equal(to_numpy(w), before[w.path]), f"{w.path} did not move in fit"
    for w in model.non_trainable_weights:
        moved = not np.array_equal(to_numpy(w), before[w.path])
        assert moved == ("moving_" in w.path), f"{w.path}: moved={moved} in fit"
