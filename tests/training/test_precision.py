"""Mixed precision (``precision="bf16"|"fp16"``, ``--precision``): layers compute in the low precision, weights
and optimizer state stay float32, fp16 scales the loss, the loss tracks the float32 run's, the saved encoder is
float32, a resume keeps the precision, and the global dtype policy is left as it was."""

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kmedssl import recipes
from kmedssl.cli import main
from kmedssl.ops.runtime import float16_training_error
from kmedssl.recipes.registry import make_recipe
from kmedssl.training import runs
from kmedssl.training.checkpoints import load_model_file
from kmedssl.training.precision import float32_copy, precision_scope

TINY = dict(epochs=1, steps_per_epoch=3, batch_size=8, image_size=32, patch_size=8, data_size=40)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """``{precision: PretrainResult}`` of the same tiny S-PCL run (seed 0) in each precision."""
    folder = tmp_path_factory.mktemp("precision")
    precisions = ("fp32", "bf16") + (() if float16_training_error() else ("fp16",))
    return {precision: recipes.pretrain("spcl", output_dir=folder / precision, verbose=0, precision=precision,
                                        seed=0, **TINY)
            for precision in precisions}


@pytest.mark.parametrize("precision, compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_low_precision_runs_compute_low_keep_float32_weights_and_track_the_float32_loss(pretrained, precision,
                                                                                        compute):
    if precision not in pretrained:
        pytest.skip(float16_training_error())
    result, reference = pretrained[precision], pretrained["fp32"]
    assert result.encoder.compute_dtype == compute and result.model.compute_dtype == compute
    assert {w.dtype for w in result.model.trainable_weights} == {"float32"}
    optimizer = result.model.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "fp16")
    assert {v.dtype for v in optimizer.variables if "float" in v.dtype} <= {"float32"}
    if precision == "bf16":  # same seed, data and initial weights: the 3 steps' loss agrees to bf16's rounding
        np.testing.assert_allclose(result.history["loss"], reference.history["loss"], rtol=0.02)
    else:  # dynamic loss scaling starts at 2^15 and skips the steps whose float16 gradients overflow
        assert np.isfinite(result.history["loss"]).all()
        assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) < 2.0 ** 15
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    saved = load_model_file(result.run_dir / runs.ENCODER_FILE)  # what evaluate and export read
    assert saved.compute_dtype == "float32"
    for a, b in zip(saved.get_weights(), result.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_resume_keeps_the_runs_precision(pretrained, tmp_path):
    result = recipes.pretrain("spcl", output_dir=pretrained["bf16"].run_dir, resume=True, verbose=0,
                              precision="bf16", seed=0, **TINY)
    assert result.resumed_from is not None and result.encoder.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"precision='fp32' \(the run has 'bf16'\)"):
        recipes.pretrain("spcl", output_dir=pretrained["bf16"].run_dir, resume=True, verbose=0, precision="fp32",
                         seed=0, **TINY)


def test_fp16_where_the_backend_cannot_train_in_it_is_refused_before_anything_is_written(tmp_path):
    if float16_training_error() is None:
        pytest.skip("this backend and device train in float16")
    with pytest.raises(ValueError, match="^precision='fp16' cannot train on jax's CPU backend"):
        recipes.pretrain("spcl", output_dir=tmp_path / "run", verbose=0, precision="fp16", **TINY)
    assert not (tmp_path / "run").exists()


@pytest.mark.backend_free
def test_an_unknown_precision_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^Expected precision in \('fp32', 'bf16', 'fp16'\). Received: "
                                         r"precision='fp8'$"):
        make_recipe("spcl", "phantom", precision="fp8")
    result = CliRunner().invoke(main, ["pretrain", "spcl", "--precision", "fp8"])
    assert result.exit_code == 2 and "'fp8' is not one of 'fp32', 'bf16', 'fp16'" in result.output


def test_float32_copy_has_the_same_outputs_in_float32():
    with precision_scope("bf16"):
        encoder = make_recipe("spcl", "phantom", **TINY).build_encoder()
    copy = float32_copy(encoder)
    assert copy.compute_dtype == "float32" and float32_copy(copy) is copy
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    low = keras.ops.convert_to_numpy(keras.ops.cast(encoder.features(x), "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(copy.features(x)), low, atol=0.05, rtol=0.05)
