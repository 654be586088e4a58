"""Full fine-tuning: learns a toy task, leaves the caller's encoder alone, is seeded; the recipes per method
family, layer-wise learning-rate decay (exact, every backend), drop path on the copy, the schedules."""

import dataclasses
import math

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kmedssl.backbones import ResNet18, SwinTransformer, VisionTransformer
from kmedssl.ops.optimizers import LayerDecayAdamW
from kmedssl.eval.finetune import (
    RESNET_FINETUNE,
    RESNET_FINETUNE_PHANTOM,
    VIT_FINETUNE,
    VIT_FINETUNE_PHANTOM,
    FineTuneClassifier,
    FineTuneRecipe,
    build_optimizer,
    copy_encoder,
    finetune_recipe,
    fit_finetune,
    layer_decay_scales,
    no_weight_decay_paths,
    step_lr_schedule,
    swin_layer_ids,
    vit_layer_ids,
    warmup_cosine_schedule,
)
from tests.helpers import to_numpy

FIT = {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3}


def toy(n, seed):
    """16x16 images; label 0 = top half brighter, label 1 = left half brighter (independent)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 2)).astype("float32")
    images = rng.normal(0.0, 0.5, size=(n, 16, 16, 1)).astype("float32")
    images[:, :8, :, 0] += labels[:, :1, None]
    images[:, :, :8, 0] += labels[:, 1:, None]
    return images, labels


def tiny_vit(depth=1, **kwargs):
    return VisionTransformer(image_size=16, patch_size=8, dim=16, depth=depth, num_heads=2, **kwargs)


def tiny_resnet():
    return ResNet18(width=4)


def tiny_swin(depths=(2, 1)):
    """16 px, 2 px patches: stage 0 (by default two blocks, the second shifted) on 8 x 8 tokens of width 4 in four
    windows, merging, stage 1 on 4 x 4 tokens of width 8 in one window."""
    return SwinTransformer(image_size=16, patch_size=2, embed_dim=4, depths=depths, num_heads=(1, 2), window_size=4)


@pytest.fixture(scope="module")
def fitted():
    """One encoder, two fits with seed 0 and one with seed 1, test images and their predictions."""
    keras.utils.set_random_seed(0)
    encoder = tiny_vit()
    before = [w.copy() for w in encoder.get_weights()]
    (train_x, train_y), (test_x, test_y) = toy(64, 0), toy(64, 1)
    predicts = [fit_finetune(encoder, train_x, train_y, seed=s, **FIT) for s in (0, 0, 1)]
    return {"encoder": encoder, "before": before, "test_y": test_y, "predicts": predicts,
            "predictions": [predict(test_x) for predict in predicts]}


def test_learns_a_toy_task(fitted):
    scores = fitted["predictions"][0]
    assert scores.shape == (64, 2) and np.all((scores >= 0) & (scores <= 1))
    for k in range(2):
        assert roc_auc_score(fitted["test_y"][:, k], scores[:, k]) > 0.7


def test_callers_encoder_is_unchanged(fitted):
    after = fitted["encoder"].get_weights()
    assert len(after) == len(fitted["before"])
    for old, new in zip(fitted["before"], after):
        np.testing.assert_array_equal(old, new)
    assert fitted["encoder"].drop_path_rate == 0.0


def test_reproducible_with_a_seed(fitted):
    first, again, other = fitted["predictions"]
    np.testing.assert_allclose(first, again, rtol=1e-6, atol=1e-7)
    assert np.abs(first - other).max() > 1e-4


def test_fit_uses_the_vit_recipe_with_its_drop_path(fitted):
    predict = fitted["predicts"][0]
    expected = VIT_FINETUNE_PHANTOM.replace(**FIT)
    assert predict.recipe == expected and predict.recipe.learning_rate == pytest.approx(3e-3)
    copy = predict.model.encoder
    assert copy is not fitted["encoder"] and copy.drop_path_rate == expected.drop_path
    assert isinstance(predict.model.optimizer, LayerDecayAdamW)


# === Recipes ===

def test_recipe_is_chosen_by_encoder_family():
    vit, resnet = tiny_vit(), tiny_resnet()
    assert finetune_recipe(vit) is VIT_FINETUNE_PHANTOM and finetune_recipe(resnet) is RESNET_FINETUNE_PHANTOM
    assert finetune_recipe(vit, "paper") is VIT_FINETUNE and finetune_recipe(resnet, "paper") is RESNET_FINETUNE
    with pytest.raises(ValueError, match="scale"):
        finetune_recipe(vit, "huge")


def test_paper_recipes():
    # Medical MAE ViT-S/16 (FINETUNE.md): blr 2.5e-4 at 8 x 128 images, layer decay 0.55, drop path 0.2.
    assert VIT_FINETUNE.learning_rate == pytest.approx(1e-3)
    assert (VIT_FINETUNE.optimizer, VIT_FINETUNE.weight_decay, VIT_FINETUNE.layer_decay, VIT_FINETUNE.drop_path,
            VIT_FINETUNE.epochs, VIT_FINETUNE.warmup_epochs, VIT_FINETUNE.schedule,
            VIT_FINETUNE.min_learning_rate) == ("adamw", 0.05, 0.55, 0.2, 75, 5, "cosine", 1e-5)
    assert (VIT_FINETUNE.beta_1, VIT_FINETUNE.beta_2, VIT_FINETUNE.label_smoothing, VIT_FINETUNE.pooling) == (
        0.9, 0.999, 0.0, "mean")
    # main_finetune_chestxray.py (as MAE's main_finetune.py): trunc_normal_(model.head.weight, std=2e-5).
    assert VIT_FINETUNE.head_init_std == 2e-5
    # The phantom recipes keep Glorot heads (docs/evaluation.md, "The eighth round"); ResNets have no such rule.
    assert VIT_FINETUNE_PHANTOM.head_init_std is None
    assert RESNET_FINETUNE.head_init_std is None and RESNET_FINETUNE_PHANTOM.head_init_std is None
    # Paper 001 Table 3: Adam 1e-4, batch 32, 10 epochs, StepLR(5, 0.1).
    assert RESNET_FINETUNE.learning_rate == pytest.approx(1e-4)
    assert (RESNET_FINETUNE.optimizer, RESNET_FINETUNE.batch_size, RESNET_FINETUNE.epochs, RESNET_FINETUNE.schedule,
            RESNET_FINETUNE.step_size, RESNET_FINETUNE.gamma, RESNET_FINETUNE.layer_decay) == (
        "adam", 32, 10, "step", 5, 0.1, 1.0)
    # The phantom recipes keep each family's form.
    for paper, phantom in ((VIT_FINETUNE, VIT_FINETUNE_PHANTOM), (RESNET_FINETUNE, RESNET_FINETUNE_PHANTOM)):
        assert (phantom.optimizer, phantom.schedule) == (paper.optimizer, paper.schedule)


def test_recipe_learning_rate_and_replace():
    recipe = FineTuneRecipe("r", base_learning_rate=1e-3, batch_size=64, epochs=3)
    assert recipe.learning_rate == pytest.approx(2.5e-4)
    assert recipe.replace(learning_rate=1e-3).base_learning_rate == pytest.approx(4e-3)
    assert recipe.replace(learning_rate=1e-3, batch_size=32).base_learning_rate == pytest.approx(8e-3)
    assert recipe.replace(batch_size=128).learning_rate == pytest.approx(5e-4)  # MAE's scaling rule
    with pytest.raises(ValueError, match="layer_decay"):
        recipe.replace(layer_decay=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        recipe.replace(optimizer="adam", weight_decay=0.05)
    with pytest.raises(ValueError, match="schedule"):
        recipe.replace(schedule="linear")
    with pytest.raises(ValueError, match="head_init_std"):
        recipe.replace(head_init_std=0.0)
    with pytest.raises(TypeError):
        recipe.replace(momentum=0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.epochs = 5


# === Schedules ===

def test_warmup_cosine_schedule_values():
    lr, minimum, total, warmup = 1e-3, 1e-5, 20, 5
    schedule = warmup_cosine_schedule(lr, total, warmup, minimum)
    values = np.asarray([float(to_numpy(schedule(step))) for step in range(total + 3)])
    expected = [lr * t / warmup if t < warmup
                else minimum + (lr - minimum) * 0.5 * (1 + math.cos(math.pi * min(t - warmup, total - warmup)
                                                                      / (total - warmup)))
                for t in range(total + 3)]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-10)
    assert values[0] == 0.0 and values[warmup] == pytest.approx(lr) and values[total] == pytest.approx(minimum)
    no_warmup = warmup_cosine_schedule(lr, 10, 0)
    assert float(to_numpy(no_warmup(0))) == pytest.approx(lr) and float(to_numpy(no_warmup(10))) == pytest.approx(0.0)


def test_recipe_schedule_counts_steps_per_epoch():
    recipe = FineTuneRecipe("r", base_learning_rate=256e-4, batch_size=10, epochs=4, warmup_epochs=1)
    schedule = recipe.learning_rate_schedule(steps_per_epoch=3)  # peak 1e-3 at step 3, 12 steps in all
    assert [round(float(to_numpy(schedule(t))) * 3e3, 5) for t in range(4)] == [0.0, 1.0, 2.0, 3.0]
    short = recipe.replace(epochs=1, warmup_epochs=5).learning_rate_schedule(steps_per_epoch=4)  # warm-up: 2 steps
    np.testing.assert_allclose([float(to_numpy(short(t))) for t in range(3)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    step = recipe.replace(schedule="step", step_size=2, gamma=0.5).learning_rate_schedule(steps_per_epoch=3)
    np.testing.assert_allclose([float(to_numpy(step(t))) for t in (0, 5, 6, 11)], [1e-3, 1e-3, 5e-4, 5e-4],
                               rtol=1e-6)


def test_step_lr_schedule_decays_at_epoch_step_size():
    steps_per_epoch = 3
    schedule = step_lr_schedule(1e-4, step_size=5, gamma=0.1, epochs=10, steps_per_epoch=steps_per_epoch)
    values = np.asarray([float(to_numpy(schedule(step))) for step in range(10 * steps_per_epoch)])
    epochs = np.arange(10 * steps_per_epoch) // steps_per_epoch  # epoch of every optimizer step
    np.testing.assert_allclose(values[epochs < 5], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(values[epochs >= 5], 1e-5, rtol=1e-6)
    short = step_lr_schedule(1e-4, step_size=5, gamma=0.1, epochs=3, steps_per_epoch=2)
    np.testing.assert_allclose([float(to_numpy(short(s))) for s in range(6)], 1e-4, rtol=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        step_lr_schedule(1e-4, step_size=5, gamma=0.0, epochs=10, steps_per_epoch=3)


# === Layer-wise learning-rate decay ===

def test_vit_layer_ids_follow_mae():
    model = FineTuneClassifier(tiny_vit(depth=2), num_classes=3)
    ids, top = vit_layer_ids(model)
    assert top == 3
    encoder = model.encoder
    assert {ids[v.path] for v in (encoder.cls_token, *encoder.patch_embedding.trainable_variables)} == {0}
    for i, block in enumerate(encoder.blocks):
        assert {ids[v.path] for v in block.trainable_variables} == {i + 1}
    assert {ids[v.path] for v in (*encoder.norm.trainable_variables, *model.head.trainable_variables)} == {3}
    scales = layer_decay_scales(model, 0.5)
    assert sorted(set(scales.values())) == [0.125, 0.25, 0.5, 1.0]
    exempt = set(no_weight_decay_paths(model))
    assert encoder.cls_token.path in exempt and model.head.trainable_variables[1].path in exempt
    assert model.head.trainable_variables[0].path not in exempt  # the head's kernel is decayed


def test_swin_layer_ids_number_blocks_in_order_with_each_merging_in_the_next_stage():
    swin = tiny_swin()  # fine-tuned with the ViT recipe: AdamW, warm-up + cosine, layer-wise decay
    assert finetune_recipe(swin) is VIT_FINETUNE_PHANTOM and finetune_recipe(swin, "paper") is VIT_FINETUNE
    model = FineTuneClassifier(swin, num_classes=3, pooling="mean")
    ids, top = swin_layer_ids(model)
    encoder = model.encoder
    assert top == 4  # 3 blocks + 1
    patch = (*encoder.patch_embedding.trainable_variables, *encoder.patch_norm.trainable_variables)
    assert {ids[v.path] for v in patch} == {0}
    for i, block in enumerate(encoder.blocks):
        assert {ids[v.path] for v in block.trainable_variables} == {i + 1}
    assert {ids[v.path] for v in encoder.merges[0].trainable_variables} == {3}  # with stage 1's first block
    last = (*encoder.norm.trainable_variables, *model.fc_norm.trainable_variables, *model.head.trainable_variables)
    assert {ids[v.path] for v in last} == {4}
    assert set(ids) == {v.path for v in model.trainable_variables}
    assert sorted(set(layer_decay_scales(model, 0.5).values())) == [0.0625, 0.125, 0.25, 0.5, 1.0]
    exempt = set(no_weight_decay_paths(model))  # Microsoft's Swin: no weight decay on the bias tables
    tables = [block.attention.relative_position_bias_table.path for block in encoder.blocks]
    assert set(tables) <= exempt and encoder.merges[0].reduction.kernel.path not in exempt


def test_fit_finetune_runs_on_a_swin_and_cls_pooling_reads_token_0():
    swin, (images, labels) = tiny_swin(depths=(1, 1)), toy(8, 0)  # one block per stage: a short compile on JAX
    predict = fit_finetune(swin, images, labels, epochs=1, batch_size=8)
    probabilities = predict(images[:5])
    assert probabilities.shape == (5, 2) and probabilities.dtype == np.float32
    assert np.all((probabilities > 0) & (probabilities < 1))
    assert predict.recipe.layer_decay == VIT_FINETUNE_PHANTOM.layer_decay != 1.0
    model = predict.model  # the phantom ViT recipe pools "cls": the head on the Swin's token 0
    assert model.pooling == "cls" and isinstance(model.encoder, SwinTransformer)
    head = model.head(keras.ops.cast(model.encoder(images[:5])[:, 0], "float32"))
    np.testing.assert_allclose(to_numpy(model(images[:5])), to_numpy(head), rtol=1e-5, atol=1e-6)


def adam_reference(weights, grads_per_step, lrs, scales, decayed, weight_decay, beta_1=0.9, beta_2=0.999,
                   epsilon=1e-7):
    """Keras's Adam with decoupled weight decay (w -= s lr wd w first), per-variable rate s lr, in float64."""
    weights = [w.astype("float64") for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for i, g in enumerate(grads):
            rate = lr * scales[i]
            if decayed[i]:
                weights[i] = weights[i] - rate * weight_decay * weights[i]
            m[i] = m[i] + (g - m[i]) * (1 - beta_1)
            v[i] = v[i] + (g * g - v[i]) * (1 - beta_2)
            alpha = rate * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            weights[i] = weights[i] - alpha * m[i] / (np.sqrt(v[i]) + epsilon)
    return weights


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_layer_decay_scales_each_variables_update_exactly(weight_decay):
    """One step: a variable of layer l moves by lr · decay^(L − l) · g / (|g| + ε / sqrt(1 − β2)) (Adam's first
    step), after its decoupled weight decay at the same rate; then two more steps against a float64 Adam."""
    model = FineTuneClassifier(tiny_vit(depth=2), num_classes=3, seed=0)
    recipe = FineTuneRecipe("t", base_learning_rate=0.02 * 256 / 8, batch_size=8, epochs=1, layer_decay=0.5,
                            weight_decay=weight_decay)
    recipe = dataclasses.replace(recipe, schedule="step", step_size=1, gamma=1.0)  # constant 0.02
    optimizer = build_optimizer(model, recipe, steps_per_epoch=10)
    variables = model.trainable_variables
    ids, top = vit_layer_ids(model)
    scales = [0.5 ** (top - ids[v.path]) for v in variables]
    exempt = set(no_weight_decay_paths(model))
    decayed = [bool(weight_decay) and v.path not in exempt for v in variables]
    rng = np.random.default_rng(1)
    before = [to_numpy(v).astype("float64") for v in variables]
    grads = [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(3)]

    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads[0]], variables)
    for v, w, g, scale, decay in zip(variables, before, grads[0], scales, decayed):
        rate = 0.02 * scale
        expected = w * (1 - rate * weight_decay * decay) - rate * g / (np.abs(g) + 1e-7 / math.sqrt(1 - 0.999))
        np.testing.assert_allclose(to_numpy(v), expected, rtol=2e-5, atol=1e-7, err_msg=v.path)
    for step in grads[1:]:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step], variables)
    expected = adam_reference(before, grads, [0.02] * 3, scales, decayed, weight_decay)
    for v, w in zip(variables, expected):  # float32 rounding of m / sqrt(v): ~1e-7 on steps of 1e-3 to 2e-2
        np.testing.assert_allclose(to_numpy(v), w, rtol=2e-5, atol=1e-6, err_msg=v.path)


def test_layer_decay_needs_a_vit_and_known_paths():
    with pytest.raises(ValueError, match="layer_decay=1"):
        build_optimizer(FineTuneClassifier(tiny_resnet(), 2), RESNET_FINETUNE.replace(layer_decay=0.5), 4)
    model = FineTuneClassifier(tiny_vit(), 2)
    optimizer = LayerDecayAdamW(1e-3, learning_rate_scales={"no/such/weight": 0.5})
    with pytest.raises(ValueError, match="unknown paths"):
        optimizer.build(model.trainable_variables)
    config = LayerDecayAdamW(1e-3, weight_decay=0.1, learning_rate_scales={"a": 0.5},
                             no_weight_decay=["b"]).get_config()
    assert config["learning_rate_scales"] == {"a": 0.5} and config["no_weight_decay"] == ["b"]


# === Drop path ===

def test_copy_gets_the_fine_tuning_drop_path():
    encoder = tiny_vit(depth=3)
    copy = copy_encoder(encoder, drop_path_rate=0.2)
    assert copy.drop_path_rate == 0.2 and encoder.drop_path_rate == 0.0
    np.testing.assert_allclose([block.drop_path_rate for block in copy.blocks], [0.0, 0.1, 0.2])
    assert all(block.drop_path_rate == 0.0 for block in encoder.blocks)
    for old, new in zip(encoder.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert copy_encoder(encoder).drop_path_rate == 0.0
    with pytest.raises(ValueError, match="drop_path_rate"):
        copy_encoder(tiny_resnet(), drop_path_rate=0.1)


def test_copy_is_trainable_with_equal_weights():
    encoder = tiny_vit()
    encoder.trainable = False
    copy = copy_encoder(encoder)
    assert copy.trainable and copy is not encoder
    for old, new in zip(encoder.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(old, new)


# === End to end ===

def test_resnet_fine_tunes_with_its_recipe():
    images, labels = toy(16, 3)
    predict = fit_finetune(tiny_resnet(), images, labels, epochs=1, batch_size=8)
    assert predict.recipe == RESNET_FINETUNE_PHANTOM.replace(epochs=1, batch_size=8)
    assert predict(images[:3]).shape == (3, 2)


def test_softmax_predictions_are_distributions():
    images, labels = toy(16, 2)
    one_hot = np.eye(2, dtype="float32")[labels[:, 0].astype(int)]
    predict = fit_finetune(tiny_vit(), images, one_hot, recipe="paper", epochs=1, batch_size=8, multi_label=False,
                           label_smoothing=0.1)
    assert predict.recipe == VIT_FINETUNE.replace(epochs=1, batch_size=8, label_smoothing=0.1)
    assert predict.model.pooling == "mean" and predict.model.encoder.drop_path_rate == 0.2
    scores = predict(images[:5])
    assert scores.shape == (5, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_config_round_trip(pooling):
    model = FineTuneClassifier(tiny_vit(), num_classes=3, seed=4, pooling=pooling, head_init_std=2e-5)
    clone = FineTuneClassifier.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    assert clone.num_classes == 3 and clone.seed == 4 and clone.pooling == pooling and clone.head_init_std == 2e-5
    np.testing.assert_allclose(to_numpy(clone(images)), to_numpy(model(images)), rtol=1e-6, atol=1e-6)


def test_head_initialisation():
    """MAE's head: truncated normal (cut at 2σ) with σ = head_init_std, zero bias; None: Glorot uniform,
    U(±sqrt(6 / (fan_in + fan_out))). The encoder's weights are the same either way."""
    encoder = tiny_vit()
    near_zero = FineTuneClassifier(encoder, num_classes=32, seed=1, head_init_std=2e-5)
    kernel, bias = (to_numpy(w).astype("float64") for w in near_zero.head.weights)
    assert kernel.shape == (16, 32) and np.all(bias == 0) and np.abs(kernel).max() <= 2 * 2e-5 * (1 + 1e-6)
    assert 0.7 * 2e-5 < kernel.std() < 0.95 * 2e-5  # a normal cut at 2σ keeps 0.88 σ
    glorot = to_numpy(FineTuneClassifier(encoder, num_classes=32, seed=1).head.kernel).astype("float64")
    limit = math.sqrt(6 / (16 + 32))
    assert np.abs(glorot).max() <= limit and glorot.std() > 0.5 * limit / math.sqrt(3)
    predict = fit_finetune(tiny_vit(), *toy(8, 0), recipe=VIT_FINETUNE.replace(epochs=1, batch_size=8))
    assert predict.model.head_init_std == 2e-5
    with pytest.raises(ValueError, match="head_init_std"):
        FineTuneClassifier(encoder, num_classes=3, head_init_std=-1.0)


def test_mean_pooling_reads_the_patch_tokens():
    model = FineTuneClassifier(tiny_vit(depth=2), num_classes=3, pooling="mean")
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    tokens = to_numpy(model.encoder(images)).astype("float64")[:, 1:].mean(axis=1)  # (2, dim)
    normed = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-6)
    kernel, bias = (to_numpy(w) for w in model.head.weights)
    np.testing.assert_allclose(to_numpy(model(images)), normed @ kernel + bias, rtol=1e-4, atol=1e-5)
    ids, top = vit_layer_ids(model)
    assert {ids[v.path] for v in model.fc_norm.trainable_variables} == {top}
    with pytest.raises(ValueError, match="pooling"):
        FineTuneClassifier(tiny_resnet(), num_classes=3, pooling="mean")


def test_rejects_bad_inputs():
    images, labels = toy(8, 0)
    with pytest.raises(ValueError, match="labels of shape"):
        fit_finetune(tiny_vit(), images, labels[:4])
    with pytest.raises(ValueError, match="one-hot"):
        fit_finetune(tiny_vit(), images, labels, multi_label=False)
    with pytest.raises(ValueError, match="FineTuneRecipe"):
        fit_finetune(tiny_vit(), images, labels, recipe=3)
