"""Every non-ACE method trains with model.fit on the active backend (tiny encoders, random data)."""

import keras
import numpy as np
import pytest

from kmedssl.backbones import MAEDecoder, ResNet18, VisionTransformer
from kmedssl.methods.mulsupcon import MulSupCon
from kmedssl.methods.mvcon import MVCon
from kmedssl.losses.mvmae import mae_reconstruction
from kmedssl.methods.mvmae import MVMAE
from kmedssl.methods.simclr import SimCLR
from kmedssl.methods.spcl import SPCL
from kmedssl.methods.supervised import Supervised

B, SIZE = 8, 32


def tiny_vit():
    return VisionTransformer(image_size=SIZE, patch_size=8, channels=1, dim=32, depth=1, num_heads=2)


def images(rng, n=B):
    return rng.random((n, SIZE, SIZE, 1)).astype("float32")


def fit(model, x, y=None, steps=2):
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    return model.fit(x, y, batch_size=B, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False).history


def build_case(name, rng):
    """(model, x, y) of one method on random data."""
    n = 2 * B
    if name == "spcl":
        return SPCL(tiny_vit(), seed=1), {"image": images(rng, n)}, None
    if name in ("mvmae", "mvmae_pooled"):
        encoder = tiny_vit()
        decoder = MAEDecoder(num_patches=16, patch_dim=64, encoder_dim=32, dim=16, depth=1, num_heads=2)
        alignment = "pooled" if name == "mvmae_pooled" else "tokens"
        return MVMAE(encoder, decoder, alignment=alignment, seed=1), {"frontal": images(rng, n), "lateral": images(rng, n)}, None
    if name in ("mvcon", "mvcon_projection"):
        projection_dim = 8 if name == "mvcon_projection" else None
        views = {"frontal": images(rng, n), "lateral": images(rng, n)}
        return MVCon(tiny_vit(), projection_dim=projection_dim), views, None
    if name == "simclr":
        return SimCLR(ResNet18(width=4), projection_dim=8, hidden_dim=16, seed=1), {"image": images(rng, n)}, None
    if name == "mulsupcon":
        metadata = np.eye(4, dtype="float32")[rng.integers(0, 4, n)]
        return MulSupCon(ResNet18(width=4), projection_dim=8, hidden_dim=16, seed=1), {"image": images(rng, n), "metadata": metadata}, None
    if name == "supervised":
        labels = (rng.random((n, 3)) < 0.4).astype("float32")
        return Supervised(tiny_vit(), num_classes=3), {"image": images(rng, n)}, labels
    raise KeyError(name)


CASES = ("spcl", "mvmae", "mvmae_pooled", "mvcon", "mvcon_projection", "simclr", "mulsupcon", "supervised")


@pytest.fixture(scope="module")
def trained():
    """Each method fitted once for two steps (compiling a step is the slow part on JAX): name -> (model, x, history)."""
    cache = {}

    def get(name):
        if name not in cache:
            model, x, y = build_case(name, np.random.default_rng(0))
            initial_scale = float(keras.ops.convert_to_numpy(model.scale())) if name == "spcl" else None
            cache[name] = (model, x, fit(model, x, y), initial_scale)
        return cache[name]

    return get


@pytest.mark.parametrize("name", CASES)
def test_fit_logs_every_loss_term(name, trained):
    model, _, history, _ = trained(name)
    expected = {"loss"} | {f"{term}_loss" for term in model.loss_terms}
    assert expected <= set(history)
    for key in expected:
        assert np.all(np.isfinite(history[key])), (key, history[key])


@pytest.mark.parametrize("name", ("spcl",))
def test_same_seed_same_loss(name):
    losses = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        model, x, y = build_case(name, np.random.default_rng(3))
        losses.append(fit(model, x, y, steps=1)["loss"][0])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_spcl_scale_is_trainable_and_clamped(trained):
    model, _, _, before = trained("spcl")
    after = float(keras.ops.convert_to_numpy(model.scale()))
    assert before == pytest.approx(1 / 0.07, rel=1e-5)
    assert after != before
    clamped = SPCL(tiny_vit())
    clamped.log_scale.assign(10.0)
    assert float(keras.ops.convert_to_numpy(clamped.scale())) == pytest.approx(100.0)


def test_mvmae_token_alignment_shares_the_mask(rng):
    model, x, _ = build_case("mvmae", rng)
    out = model(x, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out["mask_frontal"]),
                                  keras.ops.convert_to_numpy(out["mask_lateral"]))
    mask = keras.ops.convert_to_numpy(out["mask_frontal"])
    assert mask.sum(axis=1).tolist() == [16 - int(16 * 0.25)] * len(mask)  # 75 % of 16 patches removed
    pooled, x, _ = build_case("mvmae_pooled", rng)
    out = pooled(x, training=True)
    assert not np.array_equal(keras.ops.convert_to_numpy(out["mask_frontal"]),
                              keras.ops.convert_to_numpy(out["mask_lateral"]))


def test_mvmae_sigmoid_beta_anneals(rng):
    encoder = tiny_vit()
    decoder = MAEDecoder(num_patches=16, patch_dim=64, encoder_dim=32, dim=16, depth=1, num_heads=2)
    model = MVMAE(encoder, decoder, beta_schedule="sigmoid", beta_max=2.0, total_steps=10)
    start = float(keras.ops.convert_to_numpy(model.current_beta()))
    model.step.assign(10)
    end = float(keras.ops.convert_to_numpy(model.current_beta()))
    assert start == pytest.approx(2 / (1 + np.exp(5)), rel=1e-5)
    assert end == pytest.approx(2 / (1 + np.exp(-5)), rel=1e-5)


@pytest.mark.parametrize("name", ("spcl", "simclr", "supervised"))
def test_encoder_round_trips_through_keras_file(name, trained, tmp_path):
    model, x, _, _ = trained(name)
    path = tmp_path / "encoder.keras"
    keras.saving.save_model(model.encoder, path)
    loaded = keras.saving.load_model(path)
    probe = x["image"][:4]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.features(probe)),
                               keras.ops.convert_to_numpy(model.encoder.features(probe)), rtol=1e-5, atol=1e-6)


def test_method_config_round_trip(rng):
    model, _, _ = build_case("spcl", rng)
    clone = SPCL.from_config(model.get_config())
    assert clone.mask_ratio == model.mask_ratio and clone.kappa == model.kappa
    assert (clone.crop_scale, clone.jitter) == (model.crop_scale, model.jitter) == ((1.0, 1.0), 0.0)
    assert clone.encoder.get_config() == model.encoder.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SPCL(tiny_vit(), mask_ratio=1.0), "mask_ratio"),
        (lambda: SPCL(tiny_vit(), kappa=0.0), "kappa"),
        (lambda: SPCL(tiny_vit(), jitter=-0.1), "jitter"),
        (lambda: MVCon(tiny_vit(), temperature=0.0), "temperature"),
        (lambda: MVCon(tiny_vit(), jitter=-0.1), "jitter"),
        (lambda: MVCon(tiny_vit(), projection_dim=0), "projection_dim"),
        (lambda: MVMAE(tiny_vit(), None, jitter=-0.1), "jitter"),
        (lambda: MulSupCon(ResNet18(width=4), threshold=1.5), "threshold"),
        (lambda: Supervised(tiny_vit(), num_classes=0), "num_classes"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_input_shape_raises(rng):
    model, _, _ = build_case("spcl", rng)
    with pytest.raises(ValueError, match="Expected"):
        model({"image": rng.random((2, 48, 48, 1)).astype("float32")})


def encoder_inputs(model, x, monkeypatch):
    """The images ``model``'s encoder is called on, in one training call and in one evaluation call on ``x``."""
    seen = []
    original = type(model.encoder).call

    def recording(self, images, *args, **kwargs):
        seen.append(keras.ops.convert_to_numpy(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(type(model.encoder), "call", recording)
    model(x, training=True)
    training_images = list(seen)
    seen.clear()
    model(x, training=False)
    monkeypatch.undo()
    return training_images, list(seen)


def test_spcl_reads_each_part_from_its_own_augmented_copy_only_when_asked(rng, monkeypatch):
    """Paper 003: both parts come from the one image; with ``crop_scale``/``jitter`` each part is read from its own
    augmented copy (the encoder sees two different images), and evaluation (training=False) sees the image."""
    x = {"image": images(rng, 4)}
    for model in (SPCL(tiny_vit(), seed=1), SPCL(tiny_vit(), seed=1, crop_scale=(0.3, 1.0), jitter=0.4)):
        training_images, evaluation_images = encoder_inputs(model, x, monkeypatch)
        if model.jitter == 0:
            assert model.augment is None
            assert all(np.array_equal(image, x["image"]) for image in training_images)
        else:
            assert model.augment is not None and not np.allclose(training_images[0], training_images[1])
            assert not np.allclose(training_images[0], x["image"])
        np.testing.assert_allclose(evaluation_images[0], x["image"], atol=1e-5)
        np.testing.assert_allclose(evaluation_images[1], x["image"], atol=1e-5)


def test_mvcon_augments_each_view_independently_in_training_only(rng, monkeypatch):
    """Paper 000 §4 ("random resize cropping [...] and jitter"): with ``crop_scale``/``jitter`` the encoder sees an
    independently augmented copy of each view while training, and the views themselves in evaluation; without
    them (the default) the views unchanged."""
    x = {"frontal": images(rng, 4), "lateral": images(rng, 4)}
    for model in (MVCon(tiny_vit(), seed=1), MVCon(tiny_vit(), seed=1, crop_scale=(0.3, 1.0), jitter=0.4)):
        training_images, evaluation_images = encoder_inputs(model, x, monkeypatch)
        views = (x["frontal"], x["lateral"])
        if model.jitter == 0:
            assert model.augment is None
            assert all(np.array_equal(seen_image, view) for seen_image, view in zip(training_images, views))
        else:
            assert model.augment is not None and model.augment.built
            assert not any(np.allclose(seen_image, view) for seen_image, view in zip(training_images, views))
        for seen_image, view in zip(evaluation_images, views):
            np.testing.assert_allclose(seen_image, view, atol=1e-5)
    clone = MVCon.from_config(model.get_config())
    assert (clone.crop_scale, clone.jitter, clone.seed) == ((0.3, 1.0), 0.4, 1)


def test_mvcon_projection_head_embeds_the_cls_token(trained):
    """``projection_dim``: the loss compares ``projection(CLS)`` (Dense -> BN -> ReLU -> Dense), the probes still read
    the CLS token; None (the default, paper 000's Eq. 2) compares the CLS tokens themselves."""
    model, x, _, _ = trained("mvcon_projection")
    out = model(x, training=False)
    cls = model.encoder(x["frontal"], training=False)[:, 0]
    assert tuple(out["z_frontal"].shape) == (len(x["frontal"]), 8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["z_frontal"]),
                               keras.ops.convert_to_numpy(model.projection(cls, training=False)), rtol=1e-5, atol=1e-5)
    moving_mean = keras.ops.convert_to_numpy(model.projection.norm.moving_mean)
    assert np.abs(moving_mean).max() > 0  # the two training steps updated the head's batch statistics
    clone = MVCon.from_config(model.get_config())
    assert clone.projection_dim == 8 and clone.projection.batch_norm and clone.projection.output_dim == 8
    plain = MVCon(tiny_vit())
    assert plain.projection is None and plain.get_config()["projection_dim"] is None


def test_mvmae_reconstructs_the_augmented_views(rng):
    """With ``crop_scale``/``jitter`` (paper 000 §4) each view is replaced by its own augmented copy, which is also
    what the decoder must reconstruct; evaluation sees the views unchanged."""
    model, x, _ = build_case("mvmae_pooled", rng)
    augmented = MVMAE(model.encoder, model.decoder, alignment="pooled", seed=1, crop_scale=(0.3, 1.0), jitter=0.4)
    out = augmented(x, training=True)
    for view in ("frontal", "lateral"):
        assert not np.allclose(keras.ops.convert_to_numpy(out[f"image_{view}"]), x[view])
    _, terms = augmented.compute_loss_terms(x, None, out, training=False)
    expected = keras.ops.convert_to_numpy(mae_reconstruction(
        model.encoder.patchify(out["image_frontal"]), out["pred_frontal"], out["mask_frontal"], False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(terms["reconstruction_frontal"]), expected, rtol=1e-6)
    evaluation = augmented(x, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(evaluation["image_lateral"]), x["lateral"], atol=1e-5)
    clone = MVMAE.from_config(augmented.get_config())
    assert (clone.crop_scale, clone.jitter) == ((0.3, 1.0), 0.4)
