"""kmedssl's Adam/AdamW follow Keras's own update exactly (the torch classes update in place)."""

import keras
import numpy as np
import pytest

from kmedssl.ops.optimizers import adam, adamw


def run_steps(optimizer, grads_per_step, initial):
    variables = [keras.Variable(w) for w in initial]
    for grads in grads_per_step:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize("make, keras_class, kwargs", [
    (adamw, keras.optimizers.AdamW, dict(weight_decay=0.05, global_clipnorm=1.0)),
    (adam, keras.optimizers.Adam, dict()),
])
def test_update_matches_keras_optimizer(rng, make, keras_class, kwargs):
    initial = [rng.normal(size=(7, 5)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in initial] for _ in range(4)]
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=10, warmup_target=1e-2, warmup_steps=2)
    ours = make(schedule, **kwargs)
    reference = keras_class(keras.optimizers.schedules.CosineDecay.from_config(schedule.get_config()), **kwargs)
    for got, expected in zip(run_steps(ours, grads, initial), run_steps(reference, grads, initial)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    if keras.backend.backend() == "torch":
        assert type(ours).__name__.startswith("InPlace")
    assert isinstance(ours, keras_class)


def test_amsgrad_falls_back_to_keras():
    assert type(adam(1e-3, amsgrad=True)).__name__ in ("Adam",)
