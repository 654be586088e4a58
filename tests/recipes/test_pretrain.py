"""``kmedssl.recipes.pretrain`` on the phantom data (SPEC §9); every method's run and resume: test_resume.py."""

import dataclasses
import math
import pathlib

import keras
import numpy as np
import pytest

from kmedssl import recipes
from kmedssl.training import runs
from kmedssl.recipes.base import computed_argument_names, method_parameters
from kmedssl.training.callbacks import NonFiniteLossError, NonFiniteLossGuard
from kmedssl.recipes.mvcon import MVConRecipe
from kmedssl.recipes.registry import RECIPES, make_recipe
from tests.reliability.harness import invoke

METHODS = ["ace", "mulsupcon", "mvcon", "mvmae", "simclr", "spcl", "supervised"]


def test_list_methods():
    assert recipes.list_methods() == METHODS


def test_overrides_reach_the_model(tmp_path):
    result = recipes.pretrain("spcl", epochs=1, steps_per_epoch=1, batch_size=8, mask_ratio=0.5, kappa=8.0,
                              output_dir=tmp_path / "run", verbose=0)
    assert result.model.mask_ratio == 0.5 and result.model.kappa == 8.0
    assert result.recipe.batch_size == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="nope"), r"Expected a method name in \['ace'"),
        (dict(name="spcl", size="huge"), "Expected size"),
        (dict(name="spcl", not_a_field=1), r"Unknown recipe field\(s\) \['not_a_field'\]"),
        (dict(name="spcl", kappa="abc"), "Expected kappa to be of type float"),
        (dict(name="spcl", image_size=62), "divisible by patch_size"),
        (dict(name="spcl", batch_size=100000), "Expected at least batch_size=100000"),
        (dict(name="spcl", backend="not-the-active-one"), "Expected backend"),
    ],
)
def test_user_mistakes_raise_value_error(kwargs, message, tmp_path):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        recipes.pretrain(name, output_dir=tmp_path / "run", verbose=0, **kwargs)


def test_missing_data_path_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="/no/such/path: no such file"):
        recipes.pretrain("spcl", data="/no/such/path", output_dir=tmp_path / "run", verbose=0)


def test_existing_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        recipes.pretrain("spcl", epochs=1, steps_per_epoch=1, batch_size=8, output_dir=tmp_path / "run", verbose=0)
    assert (tmp_path / "run" / "keep.txt").read_text() == "precious"


def test_the_non_finite_loss_guard_works_as_a_plain_keras_callback():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(keras.ops.log(y - 2.0) + p))
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at epoch 1, step 1 of the epoch: loss=nan"):
        model.fit(x, y, batch_size=4, epochs=2, callbacks=[NonFiniteLossGuard()], verbose=0)


def test_skipped_data_items_are_listed_in_the_run_directory(tmp_path):
    from kmedssl.data.formats import read_dataset
    from kmedssl.data.phantom.writer import write_mimic_cxr

    data = write_mimic_cxr(tmp_path / "data", num_subjects=16, image_size=64, seed=0)
    records = read_dataset(data, "mimic-cxr").records
    missing, truncated = records[0].path, records[1].path
    pathlib.Path(missing).unlink()
    content = pathlib.Path(truncated).read_bytes()
    pathlib.Path(truncated).write_bytes(content[: len(content) // 3])

    with pytest.raises(ValueError, match="no such file|missing|not found"):
        recipes.pretrain("spcl", data=str(data), format="mimic-cxr", epochs=1, batch_size=8,
                         output_dir=tmp_path / "strict", verbose=0)
    result = recipes.pretrain("spcl", data=str(data), format="mimic-cxr", epochs=1, batch_size=8, on_error="skip",
                              output_dir=tmp_path / "run", verbose=0)
    listed = (result.run_dir / runs.SKIPPED_FILE).read_text()
    assert pathlib.Path(missing).name in listed  # skipped by the reader
    assert pathlib.Path(truncated).name in listed and "truncated" in listed  # skipped by the pipeline


def test_probe_monitor_logs_probe_auroc(tmp_path):
    result = recipes.pretrain("spcl", epochs=2, steps_per_epoch=1, batch_size=8, probe_every=2,
                              output_dir=tmp_path / "run", verbose=0)
    values = result.history["probe_auroc"]
    assert len(values) == 2 and math.isnan(values[0]) and 0.0 <= values[1] <= 1.0
    assert "probe_auroc" in (result.run_dir / runs.LOG_FILE).read_text().splitlines()[0]


# === Every method argument is a recipe field ===

# A value other than the default for every constructor argument the recipe does not compute.
METHOD_ARGUMENTS = {
    "ace": dict(head_dim=96, head_hidden_dim=32, head_bottleneck_dim=16, teacher_temperature=0.05,
                student_temperature=0.2, center_momentum=0.8, teacher_momentum=0.99, teacher_momentum_final=0.999,
                alpha_comp=0.8, alpha_decomp=0.95, lambda_global=0.2, lambda_comp=0.5, lambda_decomp=2.0,
                logit_scale_init=1.5, comp_kernel=5, decomp_kernel=7, sigma=1.5, jitter=0.3),
    "mulsupcon": dict(temperature=0.2, threshold=0.5, base_temperature=0.1, projection_dim=64, crop_size=24,
                      crop_scale=(0.3, 0.9), gather="local"),
    "mvcon": dict(temperature=0.2, exclude_positive=False, gather="local", crop_scale=(0.5, 0.9), jitter=0.2,
                  projection_dim=16),
    "mvmae": dict(mask_ratio=0.5, beta=0.5, beta_schedule="sigmoid", beta_max=3.0, alignment="pooled", norm_pix=True,
                  crop_scale=(0.5, 0.9), jitter=0.2),
    "simclr": dict(temperature=0.2, projection_dim=64, crop_size=24, crop_scale=(0.3, 0.9), gather="local"),
    "spcl": dict(mask_ratio=0.5, kappa=8.0, scale_init=10.0, scale_bounds=(2.0, 50.0), gather="local",
                 crop_scale=(0.5, 0.9), jitter=0.2),
    "supervised": dict(multi_label=False),
}
# Method arguments whose recipe default is not the method's: a paper value, explained where it is declared.
RECIPE_DEFAULTS = {"mulsupcon": {"base_temperature": None}}  # None: = temperature (paper 001 Eq. 3, no T / T_base)
SMALL = dict(image_size=32, patch_size=8)


def uncomputed_arguments(name):
    """``{argument: default}`` of the method of ``name`` that its recipe does not compute."""
    computed = computed_argument_names(RECIPES[name])
    return {key: value for key, value in method_parameters(RECIPES[name].method_class).items() if key not in computed}


@pytest.mark.backend_free
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_method_argument_is_a_recipe_field_with_the_method_default(name):
    fields = {field.name: field.default for field in dataclasses.fields(RECIPES[name])}
    arguments = uncomputed_arguments(name)
    assert set(arguments) <= set(fields)
    changed = {key: fields[key] for key, default in arguments.items() if fields[key] != default}
    assert changed == RECIPE_DEFAULTS.get(name, {})
    assert set(METHOD_ARGUMENTS[name]) == set(arguments), "METHOD_ARGUMENTS must cover every method argument"


@pytest.mark.backend_free
def test_a_recipe_that_repeats_the_method_default_is_refused():
    with pytest.raises(TypeError, match="repeats the default of MVCon"):
        @dataclasses.dataclass
        class Repeating(MVConRecipe):
            temperature: float = 0.1


@pytest.fixture
def recipes_made(monkeypatch):
    """The recipes ``pretrain`` makes; the run then stops with ``Error: stopped after the recipe``."""
    made = []

    def make_and_stop(*args, **kwargs):
        made.append(make_recipe(*args, **kwargs))
        raise ValueError("stopped after the recipe")

    monkeypatch.setattr(recipes, "make_recipe", make_and_stop)
    return made


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_method_argument_is_settable_with_set(name, recipes_made):
    """``kmedssl pretrain NAME --set arg=value`` for every argument: the recipe takes them all and the model
    built from it receives them (no data is read, nothing trained)."""
    values = METHOD_ARGUMENTS[name]
    sets = [item for key, value in {**values, **SMALL}.items() for item in ("--set", f"{key}={value}")]
    exit_code, output = invoke("pretrain", name, *sets)
    assert exit_code == 1 and output.strip() == "Error: stopped after the recipe", output
    recipe = recipes_made[0]
    assert {key: getattr(recipe, key) for key in values} == values
    encoder = recipe.build_encoder()
    model = recipe.build_model(encoder, total_steps=10, seed=0, num_labels=3)
    assert {key: getattr(model, key) for key in values} == values
    assert model.encoder is encoder
    computed = computed_argument_names(RECIPES[name]) & set(method_parameters(RECIPES[name].method_class))
    assert computed <= set(recipe.compute_arguments(encoder, total_steps=10, seed=0, num_labels=3))


@pytest.mark.backend_free
def test_ace_sigma_and_loss_weights_from_the_command_line(recipes_made):
    exit_code, output = invoke("pretrain", "ace", "--set", "sigma=1.5", "--set", "lambda_global=0.2")
    assert output.strip() == "Error: stopped after the recipe", output
    assert recipes_made[0].sigma == 1.5 and recipes_made[0].lambda_global == 0.2


@pytest.mark.backend_free
def test_the_computed_arguments_are_the_runs():
    recipe = make_recipe("mulsupcon", **SMALL)
    model = recipe.build_model(recipe.build_encoder(), total_steps=10, seed=5, num_labels=3)
    assert model.hidden_dim == model.encoder.dim and model.seed == 5 and model.base_temperature == model.temperature
    recipe = make_recipe("supervised", **SMALL)
    assert recipe.build_model(recipe.build_encoder(), total_steps=10, seed=0, num_labels=3).num_classes == 3


@pytest.mark.backend_free
def test_the_patch_size_check_is_the_vits_only():
    with pytest.raises(ValueError, match="Expected image_size divisible by patch_size"):
        make_recipe("spcl", image_size=30)
    assert make_recipe("simclr", image_size=30, patch_size=7).image_size == 30  # a ResNet has no patches
    with pytest.raises(ValueError, match="Expected encoder_size in"):
        make_recipe("spcl", encoder_size="huge")
