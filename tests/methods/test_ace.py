"""ACE method (paper 004; SPEC §3.5): EMA teacher schedule, centre rule, heads' token layout, training."""

import math

import keras
import numpy as np
import pytest

from kmedssl.backbones import VisionTransformer
from kmedssl.backbones.layers import merge_2x2, split_2x2
from kmedssl.methods.ace import ACE
from kmedssl.views.ace import ACEViews, ace_matching_targets
from tests.helpers import assert_close, to_numpy

GRID, CELLS, PATCH = 4, 10, 8  # 32 px crops of an 80 px source, 4 x 4 tokens


def make_batch(size=4, seed=0):
    views, rng = ACEViews(grid=GRID, image_cells=CELLS), np.random.default_rng(seed)
    samples = [views(rng.uniform(size=(CELLS * PATCH,) * 2).astype(np.float32), rng) for _ in range(size)]
    return {key: np.stack([s[key] for s in samples]) for key in samples[0]}


def make_model(**overrides):
    encoder = VisionTransformer(image_size=GRID * PATCH, patch_size=PATCH, dim=32, depth=1, num_heads=2)
    config = dict(total_steps=100, head_dim=16, head_hidden_dim=32, head_bottleneck_dim=8)
    return ACE(encoder, **{**config, **overrides})


def student_weights(model):
    return [to_numpy(w) for w in model.encoder.weights + model.student_head.weights]


def teacher_weights(model):
    return [to_numpy(w) for w in model.teacher.weights + model.teacher_head.weights]


class RecordWeights(keras.callbacks.Callback):
    """Student and teacher weights before training and after every step."""

    def on_train_begin(self, logs=None):
        self.student, self.teacher = [student_weights(self.model)], [teacher_weights(self.model)]

    def on_train_batch_end(self, batch, logs=None):
        getattr(self.model, "jax_state_sync", lambda: None)()  # JAX keeps the state outside the variables
        self.student.append(student_weights(self.model))
        self.teacher.append(teacher_weights(self.model))


def fit_recording(model, steps=3):
    recorder = RecordWeights()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(make_batch(2 * steps), batch_size=2, epochs=1, shuffle=False, verbose=0,
                        callbacks=[recorder])
    return recorder, history


def assert_weights_equal(actual, expected, atol=0.0):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=0, atol=atol)


def test_fit_momentum_zero_teacher_is_previous_student_and_logs_every_term():
    recorder, history = fit_recording(make_model(teacher_momentum=0.0, teacher_momentum_final=0.0))
    student, teacher = recorder.student, recorder.teacher  # index k: after step k (0: before training)
    assert not np.allclose(student[1][2], student[2][2])  # the student does move
    for k in range(1, len(student)):
        assert_weights_equal(teacher[k], student[k - 1])  # step k is scored by the student after step k-1
    for term in ("loss", "global_loss", "composition_loss", "decomposition_loss"):
        assert np.isfinite(history.history[term]).all()


def test_teacher_starts_as_a_frozen_copy_of_the_student():
    model = make_model()
    assert_weights_equal(teacher_weights(model), student_weights(model))
    assert not model.teacher.trainable_weights and not model.teacher_head.trainable_weights
    trainable = {id(w) for w in model.trainable_weights}
    assert not trainable & {id(w) for w in model.teacher.weights + model.teacher_head.weights}
    assert id(model.logit_scale) in trainable
    assert_close(model.logit_scale, math.log(1 / 0.07))


def test_momentum_schedule_is_cosine_from_start_to_final():
    model = make_model(total_steps=10)
    values = [float(to_numpy(model.momentum(step))) for step in (0, 5, 10, 20)]
    np.testing.assert_allclose(values, [0.996, 0.998, 1.0, 1.0], rtol=0, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.5, 1.0])
def test_training_call_blends_teacher_and_current_student(momentum):
    """One training call: teacher <- m teacher + (1 - m) student; m = 1 never changes the teacher."""
    model = make_model(teacher_momentum=momentum, teacher_momentum_final=momentum)
    x = make_batch(2)
    initial_teacher = teacher_weights(model)
    for step in range(2):
        student = [w + 1.0 + step for w in student_weights(model)]
        for w, value in zip(model.encoder.weights + model.student_head.weights, student):
            w.assign(value)  # stands in for an optimizer step
        teacher = teacher_weights(model)
        model(x, training=True)
        expected = [momentum * t + (1.0 - momentum) * s for t, s in zip(teacher, student)]
        assert_weights_equal(teacher_weights(model), expected, atol=1e-6)
    if momentum == 1.0:
        assert_weights_equal(teacher_weights(model), initial_teacher)
    model(x, training=False)  # inference leaves the teacher and the step counter alone
    assert_weights_equal(teacher_weights(model), expected, atol=1e-6)
    assert int(to_numpy(model.ema_step)) == 2


def test_center_update_rule_and_loss_terms():
    model = make_model(center_momentum=0.9)
    x = make_batch(2)
    x["mask_2"][0] = 1.0  # C2 inside C1 for sample 0: its C2 "rest" region is empty
    x["mask_2"][1] = 0.0  # and sample 1 pools C2 over nothing
    c0 = np.random.default_rng(1).normal(size=(16,)).astype(np.float32)
    model.center.assign(c0)
    y_pred = model(x, training=False)
    out = {k: to_numpy(v).astype(np.float64) for k, v in y_pred.items()}
    loss = model.compute_loss(x=x, y_pred=y_pred, training=True)

    rows = [out["teacher_1"], out["teacher_2"][:1], out["teacher_1_rest"], out["teacher_2_rest"][1:]]
    expected_center = 0.9 * c0 + 0.1 * np.concatenate(rows).mean(axis=0)
    assert_close(model.center, expected_center, rtol=1e-5, atol=1e-6)
    terms = {name: to_numpy(tracker.result()) for name, tracker in model.loss_trackers.items()}
    assert_close(loss, 0.1 * terms["global"] + terms["composition"] + terms["decomposition"])

    model.compute_loss(x=x, y_pred=y_pred, training=False)  # evaluation leaves the centre alone
    assert_close(model.center, expected_center, rtol=1e-5, atol=1e-6)


def _normalized(tokens):
    tokens = to_numpy(tokens).astype(np.float64)
    return tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)


def _dense_matching_loss(teacher, student, scale, target, alpha):
    """The former dense path in float64: exp(s) n(t) @ student^T against ``ace_matching_targets`` rows."""
    logits = scale * _normalized(teacher) @ to_numpy(student).astype(np.float64).transpose(0, 2, 1)
    bce = np.logaddexp(0.0, logits) - target * logits
    return np.mean((alpha * target + (1 - alpha) * (1 - target)) * bce)


def test_matching_losses_from_pairs_equal_the_dense_targets_path():
    """The views' pairs give the losses of the dense Gaussian targets of ``ace_matching_targets`` (composition
    with teacher C1 vs composed student C2, decomposition with teacher C2 vs decomposed student C1)."""
    model = make_model(decomp_kernel=5, sigma=0.8)
    x = make_batch(2)
    out = model(x, training=False)
    scale = math.exp(float(to_numpy(model.logit_scale)))
    t_1, t_2 = model.teacher(x["crop_1"])[:, 1:], model.teacher(x["crop_2"])[:, 1:]
    composed = model.composer(model.encoder(x["crop_2"])[:, 1:])
    decomposed = model.decomposer(model.encoder(x["crop_1"])[:, 1:])
    for key, expected in (("teacher_tokens_1", t_1), ("teacher_tokens_2", t_2), ("composed", composed),
                          ("decomposed", decomposed)):
        assert_close(out[key], to_numpy(expected), rtol=1e-4, atol=1e-5)
    assert tuple(out["composed"].shape) == (2, GRID**2 // 4, 32)
    assert tuple(out["decomposed"].shape) == (2, 4 * GRID**2, 32)

    targets = [ace_matching_targets(m_1, m_2, grid=GRID, comp_kernel=3, decomp_kernel=5, sigma=0.8)
               for m_1, m_2 in zip(x["mask_1"], x["mask_2"])]
    target_comp, target_decomp = (np.stack(t).astype(np.float64) for t in zip(*targets))
    model.compute_loss(x=x, y_pred=out, training=False)
    terms = {name: to_numpy(tracker.result()) for name, tracker in model.loss_trackers.items()}
    assert_close(terms["composition"], _dense_matching_loss(t_1, composed, scale, target_comp, 0.9), rtol=1e-5)
    assert_close(terms["decomposition"], _dense_matching_loss(t_2, decomposed, scale, target_decomp, 0.99),
                 rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the Triton kernels run on the torch backend only")
def test_matching_losses_take_the_fused_kernel_and_agree(monkeypatch):
    """KMEDSSL_KERNELS=triton: both matching terms run kmedssl_kernels.ace_matching (Triton's interpreter on
    CPU) and give the keras.ops path's loss and gradients (logit scale, composer, decomposer, student)."""
    pytest.importorskip("triton")
    import torch
    from kmedssl_kernels import ace_matching

    calls = []
    kernel_loss = ace_matching.ace_matching_loss
    monkeypatch.setattr(ace_matching, "ace_matching_loss", lambda *a: calls.append(1) or kernel_loss(*a))
    model = make_model(decomp_kernel=5)
    x = make_batch(2)
    weights = [model.logit_scale, *model.composer.trainable_weights, *model.decomposer.trainable_weights,
               *model.encoder.trainable_weights[:2]]
    results = {}
    for mode in ("off", "triton"):
        monkeypatch.setenv("KMEDSSL_KERNELS", mode)
        loss = model.compute_loss(x=x, y_pred=model(x, training=False), training=False)
        results[mode] = [loss, *torch.autograd.grad(loss, [w.value for w in weights])]
    assert len(calls) == 2
    for got, want in zip(results["triton"], results["off"]):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-7)


def test_merge_and_split_2x2_are_channel_major_and_inverse():
    g, c = 4, 3
    tokens = np.random.default_rng(0).normal(size=(2, g * g, c)).astype(np.float32)
    merged = to_numpy(merge_2x2(tokens))
    grid = tokens.reshape(2, g, g, c)
    expected = np.zeros((2, g // 2, g // 2, 4 * c), np.float32)
    for i, j, ch, di, dj in np.ndindex(g // 2, g // 2, c, 2, 2):
        expected[:, i, j, 4 * ch + 2 * di + dj] = grid[:, 2 * i + di, 2 * j + dj, ch]
    np.testing.assert_array_equal(merged, expected.reshape(2, -1, 4 * c))
    np.testing.assert_array_equal(to_numpy(split_2x2(merged.reshape(2, (g // 2) ** 2, 4 * c))), tokens)


def test_config_round_trip_and_validation():
    model = make_model(alpha_comp=0.8, lambda_global=0.2, decomp_kernel=5, sigma=0.5)
    config = model.get_config()
    clone = ACE.from_config(config)
    assert clone.get_config() == config
    assert clone.alpha_comp == 0.8 and clone.lambda_global == 0.2 and clone.total_steps == 100
    assert (clone.comp_kernel, clone.decomp_kernel, clone.sigma) == (3, 5, 0.5)
    with pytest.raises(ValueError, match="decomp_kernel"):
        make_model(decomp_kernel=4)
    with pytest.raises(ValueError, match="sigma"):
        make_model(sigma=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        make_model(total_steps=0)
    with pytest.raises(ValueError, match="teacher_momentum"):
        make_model(teacher_momentum=1.5)
    with pytest.raises(ValueError, match="student_temperature"):
        make_model(student_temperature=0.0)


def test_jitter_augments_each_crop_in_training_only():
    """``jitter`` > 0: the paper's photometric T_1, T_2 -- each crop jittered independently while training (the
    teacher then sees other pixels than without jitter), never in inference; same encoders and EMA otherwise."""
    batch = {key: value for key, value in make_batch(4).items() if key.startswith(("crop", "mask"))}
    plain = make_model()
    jittered = make_model(jitter=0.4, seed=3)
    jittered.set_weights(plain.get_weights())
    jittered.augment.probability = 1.0  # every sample jittered, so the check cannot pass by chance
    for training in (False, True):
        a, b = plain(batch, training=training), jittered(batch, training=training)
        for key in ("teacher_tokens_1", "teacher_tokens_2"):
            difference = np.abs(to_numpy(a[key]) - to_numpy(b[key])).max()
            assert (difference > 1e-4) if training else (difference == 0), (key, training, difference)
    assert jittered.get_config()["jitter"] == 0.4 and ACE.from_config(jittered.get_config()).augment is not None
    assert plain.augment is None
    with pytest.raises(ValueError, match="Expected jitter >= 0. Received: jitter=-0.1"):
        make_model(jitter=-0.1)
