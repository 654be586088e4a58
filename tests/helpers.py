"""Small helpers shared by tests (kept free of kmedssl code under test)."""

import keras
import numpy as np


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected), rtol=rtol, atol=atol)


def value_and_grad(fn, *args):
    """Loss value and gradients of a scalar ``fn(*args)`` w.r.t. every argument, as float64 NumPy arrays."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        tensors = [torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=True) for a in args]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors)
        return float(value.detach()), [g.detach().numpy().astype(np.float64) for g in grads]
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.Variable(np.asarray(a), dtype=tf.float32) for a in args]
        with tf.GradientTape() as tape:
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        return float(value.numpy()), [np.asarray(g, dtype=np.float64) for g in grads]
    import jax
    import jax.numpy as jnp

    arrays = [jnp.asarray(np.asarray(a), dtype=jnp.float32) for a in args]
    value, grads = jax.value_and_grad(lambda *xs: fn(*xs), argnums=tuple(range(len(arrays))))(*arrays)
    return float(value), [np.asarray(g, dtype=np.float64) for g in grads]


def finite_difference_grad(fn64, args, eps=1e-6):
    """Central finite differences of a float64 NumPy function ``fn64(*args)`` w.r.t. every argument."""
    grads = []
    for i, a in enumerate(args):
        a = np.asarray(a, dtype=np.float64)
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus, minus = a.copy(), a.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args_p = list(args); args_p[i] = plus
            args_m = list(args); args_m[i] = minus
            g[idx] = (fn64(*args_p) - fn64(*args_m)) / (2 * eps)
        grads.append(g)
    return grads
