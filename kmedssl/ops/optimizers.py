"""Adam and AdamW as ``keras.optimizers`` give them, with an in-place update on the torch backend.

Keras's torch Adam (``keras/src/backend/torch/optimizers/torch_adam.py``) builds five parameter-sized
temporary tensors per step; for a 21 M-parameter ViT-S that made the optimizer step 2.5x slower than
``torch.optim.AdamW`` (benchmarks/torch_overhead.py, docs/performance.md). The torch classes here compute
the same update (Kingma & Ba 2015, Alg. 1, in Keras's form) with one temporary list:

    m <- b1 m + (1 - b1) g                 (lerp)
    v <- b2 v + (1 - b2) g^2
    w <- w - alpha m / (sqrt(v) + eps),    alpha = lr sqrt(1 - b2^t) / (1 - b1^t)

Decoupled weight decay (AdamW) and gradient clipping stay Keras's. On the other backends, and with
``amsgrad=True``, ``adam``/``adamw`` return Keras's own optimizers.
"""

import keras

if keras.backend.backend() == "torch":
    import torch
    from keras.src.backend.torch.optimizers import torch_adam, torch_adamw

    class _InPlaceAdamUpdate:
        """``_parallel_update_step`` of Keras's torch Adam, written with in-place foreach ops."""

        def _parallel_update_step(self, grads, variables, learning_rate):
            keras_variables = variables
            variables = [v.value for v in variables]
            dtype = variables[0].dtype
            step = keras.ops.cast(self.iterations + 1, dtype)
            beta_1_power = keras.ops.power(keras.ops.cast(self.beta_1, dtype), step)
            beta_2_power = keras.ops.power(keras.ops.cast(self.beta_2, dtype), step)
            alpha = keras.ops.cast(learning_rate, dtype) * keras.ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            m_list = [self._momentums[self._get_variable_index(v)].value for v in keras_variables]
            v_list = [self._velocities[self._get_variable_index(v)].value for v in keras_variables]
            torch._foreach_lerp_(m_list, grads, 1 - self.beta_1)
            torch._foreach_mul_(v_list, self.beta_2)
            torch._foreach_addcmul_(v_list, grads, grads, value=1 - self.beta_2)
            denominator = torch._foreach_sqrt(v_list)  # the one temporary list
            torch._foreach_add_(denominator, self.epsilon)
            torch._foreach_div_(denominator, alpha)
            torch._foreach_addcdiv_(variables, m_list, denominator, value=-1.0)

    @keras.saving.register_keras_serializable(package="kmedssl")
    class InPlaceAdam(_InPlaceAdamUpdate, torch_adam.Adam):
        """Keras's Adam with the in-place torch update (see the module docstring)."""

    @keras.saving.register_keras_serializable(package="kmedssl")
    class InPlaceAdamW(_InPlaceAdamUpdate, torch_adamw.AdamW):
        """Keras's AdamW with the in-place torch update (see the module docstring)."""


def adam(learning_rate, **kwargs):
    """``keras.optimizers.Adam(learning_rate, **kwargs)``; in place on torch (module docstring)."""
    if keras.backend.backend() == "torch" and not kwargs.get("amsgrad"):
        return InPlaceAdam(learning_rate, **kwargs)
    return keras.optimizers.Adam(learning_rate, **kwargs)


def adamw(learning_rate, **kwargs):
    """``keras.optimizers.AdamW(learning_rate, **kwargs)``; in place on torch (module docstring)."""
    if keras.backend.backend() == "torch" and not kwargs.get("amsgrad"):
        return InPlaceAdamW(learning_rate, **kwargs)
    return keras.optimizers.AdamW(learning_rate, **kwargs)
