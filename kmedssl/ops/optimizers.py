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

``LayerDecayAdamW`` (fine-tuning's layer-wise learning-rate decay, ``kmedssl.eval.finetune``) is AdamW with a
learning-rate scale per variable, written on Keras's per-variable update and, on torch, with the same foreach ops.
"""

import math

import keras
from keras import ops

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


@keras.saving.register_keras_serializable(package="kmedssl")
class LayerDecayAdamW(keras.optimizers.Adam):
    """Adam with decoupled weight decay (AdamW) and a learning-rate scale per variable.

    Variable ``w`` (matched by ``w.path``) with scale ``s`` is updated as Keras's Adam with learning rate
    ``s · lr`` after ``w ← w − s · lr · weight_decay · w`` (``torch.optim.AdamW``'s order), the decay skipped
    for the paths in ``no_weight_decay``. Written on Keras's per-variable ``update_step`` (keras.ops), so the
    same on every backend; on torch the same arithmetic runs as multi-tensor (``torch._foreach_*``) ops, which
    the tests compare with a float64 reference. Single-device: the TensorFlow distribution hooks of Keras's
    weight decay are not used.

    Args:
        learning_rate: a float or schedule (the scale-1 rate).
        weight_decay: decoupled weight decay (None or 0: none).
        learning_rate_scales: ``{variable path: scale}``; other variables get 1.
        no_weight_decay: variable paths without weight decay.
        beta_1, beta_2, epsilon, and Keras optimizer arguments: as ``keras.optimizers.Adam``.
    """

    def __init__(self, learning_rate=0.001, weight_decay=None, learning_rate_scales=None, no_weight_decay=(),
                 beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="layer_decay_adamw", **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         weight_decay=weight_decay or None, name=name, **kwargs)
        self.learning_rate_scales = {str(k): float(v) for k, v in (learning_rate_scales or {}).items()}
        self.no_weight_decay = tuple(sorted(no_weight_decay))
        bad = {k: v for k, v in self.learning_rate_scales.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"Expected finite learning-rate scales >= 0. Received: {bad}")

    def build(self, var_list):
        if self.built:
            return
        paths = [v.path for v in var_list]
        if len(set(paths)) != len(paths):
            raise ValueError(f"Expected distinct variable paths. Received duplicates: "
                             f"{sorted({p for p in paths if paths.count(p) > 1})}")
        unknown = sorted((set(self.learning_rate_scales) | set(self.no_weight_decay)) - set(paths))
        if unknown:
            raise ValueError(f"Expected learning_rate_scales and no_weight_decay to name trained variables. "
                             f"Received unknown paths: {unknown}")
        super().build(var_list)
        self._scales = [self.learning_rate_scales.get(p, 1.0) for p in paths]  # by _get_variable_index
        exempt = set(self.no_weight_decay)
        self._decayed = [p not in exempt for p in paths]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate if scale == 1.0 else learning_rate * scale)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() != "torch":
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # The same update with torch's multi-tensor ops: Keras's per-variable loop costs ~25 ms a step for
        # the phantom ViT's 55 variables on one CPU core, these ~3 ms (the tests hold every backend's path
        # to one float64 AdamW).
        import torch

        with torch.no_grad():
            indices = [self._get_variable_index(v) for v in trainable_variables]
            variables = [v.value for v in trainable_variables]
            grads = [ops.cast(g, v.dtype) for g, v in zip(grads, variables)]
            step = float(ops.convert_to_numpy(self.iterations)) + 1
            alpha = (float(ops.convert_to_numpy(learning_rate)) * math.sqrt(1 - self.beta_2**step)
                     / (1 - self.beta_1**step))
            momentums = [self._momentums[i].value for i in indices]
            velocities = [self._velocities[i].value for i in indices]
            torch._foreach_lerp_(momentums, grads, 1 - self.beta_1)
            torch._foreach_mul_(velocities, self.beta_2)
            torch._foreach_addcmul_(velocities, grads, grads, value=1 - self.beta_2)
            denominators = torch._foreach_sqrt(velocities)
            torch._foreach_add_(denominators, self.epsilon)
            torch._foreach_addcdiv_(variables, momentums, denominators, [-alpha * self._scales[i] for i in indices])

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        if keras.backend.backend() == "torch":
            import torch

            rate = float(ops.convert_to_numpy(self.learning_rate)) * self.weight_decay
            decayed = [(v.value, 1 - rate * self._scales[i]) for v in variables
                       for i in [self._get_variable_index(v)] if self._decayed[i]]
            if decayed:
                with torch.no_grad():
                    torch._foreach_mul_([v for v, _ in decayed], [factor for _, factor in decayed])
            return
        for variable in variables:
            index = self._get_variable_index(variable)
            if self._decayed[index]:
                rate = ops.cast(self.learning_rate, variable.dtype) * self._scales[index]
                variable.assign(variable - variable * (ops.cast(self.weight_decay, variable.dtype) * rate))

    def get_config(self):
        return {**super().get_config(), "learning_rate_scales": dict(self.learning_rate_scales),
                "no_weight_decay": list(self.no_weight_decay)}
