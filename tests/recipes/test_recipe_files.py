"""Recipe files (SPEC §1, §7): the top-level ``recipes/`` folder, ``--recipe FILE`` / ``pretrain(recipe=FILE)``
over the defaults, their errors, and a run's ``recipe.toml`` fed back as a recipe file.

The recipe rules do not depend on the backend, so every test runs once (``backend_free``).
"""

import dataclasses
import pathlib
import tomllib

import pytest

from kmedssl.training import runs
from kmedssl.bench.phantom import step_recipe
from kmedssl.recipes.registry import RECIPES, RECIPES_DIR, make_recipe, read_recipe_file
from tests.reliability.harness import assert_one_line_error, invoke

pytestmark = pytest.mark.backend_free

FILES = sorted(RECIPES_DIR.rglob("*.toml"))
# What each authors'-code file changes from the paper's settings (docs/methods.md).
AUTHORS_CODE = {
    "mvmae": {"alignment": "pooled", "beta_schedule": "sigmoid", "mask_ratio": 0.93},
    "mvcon": {"exclude_positive": False, "temperature": 0.5},
    "ace": {"decomp_kernel": 5},
}
TINY_SPCL = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--image-size", "32",
             "--set", "patch_size=8", "--set", "data_size=40"]


def method_of(path):
    return tomllib.loads(pathlib.Path(path).read_text())["method"]


def changes(recipe, base):
    """``{field: value}`` where ``recipe`` differs from ``base``."""
    ours, theirs = dataclasses.asdict(recipe), dataclasses.asdict(base)
    return {key: value for key, value in ours.items() if value != theirs[key]}


def write(path, text):
    path.write_text(text)
    return path


# === The files of recipes/ ===


def test_the_folder_holds_every_kind_of_recipe_file():
    names = {str(path.relative_to(RECIPES_DIR)) for path in FILES}
    assert {f"phantom/{name}.toml" for name in RECIPES} <= names
    assert {f"bench/vit-s16-{name}.toml" for name in RECIPES} <= names
    assert {f"authors/{name}-code.toml" for name in AUTHORS_CODE} <= names
    assert {"paper/spcl-mimic-cxr.toml", "paper/mvmae-mimic-cxr.toml", "paper/mvcon-mimic-cxr.toml",
            "paper/mulsupcon-minirin.toml", "paper/simclr-minirin.toml", "paper/ace-chestxray14.toml",
            "demo.toml"} <= names
    assert (RECIPES_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", FILES, ids=lambda path: str(path.relative_to(RECIPES_DIR)))
def test_every_file_builds_a_recipe_for_its_method_under_either_size(path):
    name = method_of(path)
    recipe = make_recipe(name, recipe=path)
    assert recipe.method == name
    size = read_recipe_file(path, name).size
    if size is not None:  # the file's size is its base: an explicit --size of the same value changes nothing
        assert make_recipe(name, size, recipe=path) == recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_phantom_files_are_the_phantom_recipes(name):
    path = RECIPES_DIR / "phantom" / f"{name}.toml"
    assert read_recipe_file(path, name).values == RECIPES[name].sizes["phantom"]
    for size in (None, "phantom", "paper"):  # complete: the same recipe over either size
        assert make_recipe(name, size, recipe=path) == make_recipe(name, "phantom")


@pytest.mark.parametrize("path", sorted((RECIPES_DIR / "paper").glob("*.toml")), ids=lambda path: path.stem)
def test_paper_files_restate_the_class_defaults(path):
    name = method_of(path)
    assert path.stem.startswith(f"{name}-")
    assert read_recipe_file(path, name).size == "paper"
    assert make_recipe(name, recipe=path) == make_recipe(name, "paper")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bench_files_are_the_step_benchmark_sizes(name):
    assert make_recipe(name, recipe=RECIPES_DIR / "bench" / f"vit-s16-{name}.toml") == step_recipe(name, "vit-s16")


@pytest.mark.parametrize("name", sorted(AUTHORS_CODE))
def test_authors_code_files_change_only_the_code_options(name):
    recipe = make_recipe(name, recipe=RECIPES_DIR / "authors" / f"{name}-code.toml")
    assert changes(recipe, make_recipe(name, "paper")) == AUTHORS_CODE[name]


def test_the_demo_is_spcl_on_the_phantom():
    path = RECIPES_DIR / "demo.toml"
    assert read_recipe_file(path, "spcl").seed == 0
    assert make_recipe("spcl", recipe=path) == make_recipe("spcl", "phantom")


def test_a_relative_path_is_also_looked_up_in_the_recipes_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in ("paper/ace-chestxray14.toml", "recipes/paper/ace-chestxray14.toml"):
        assert read_recipe_file(path, "ace").path == RECIPES_DIR / "paper" / "ace-chestxray14.toml"


# === Precedence ===


def test_precedence_class_defaults_size_file_keyword_arguments(tmp_path):
    path = write(tmp_path / "r.toml", 'method = "spcl"\nbatch_size = 8\nmask_ratio = 0.5\nkappa = 4.0\n')
    recipe = make_recipe("spcl", "paper", recipe=path, kappa=2.0)
    assert recipe.image_size == 512 and recipe.learning_rate == 1.5e-4 * 1200 / 256  # class defaults ...
    recipe = make_recipe("spcl", "phantom", recipe=path, kappa="2")
    assert recipe.image_size == 64 and recipe.epochs == 15  # ... under the size's overrides
    assert recipe.batch_size == 8 and recipe.mask_ratio == 0.5  # ... under the file
    assert recipe.kappa == 2.0  # ... under the keyword arguments (--set)


def test_size_is_the_given_one_else_the_files_else_phantom(tmp_path):
    paper = write(tmp_path / "paper.toml", 'size = "paper"\nbatch_size = 8\n')
    plain = write(tmp_path / "plain.toml", "batch_size = 8\n")
    assert make_recipe("spcl", recipe=paper).image_size == 512
    assert make_recipe("spcl", "phantom", recipe=paper).image_size == 64
    assert make_recipe("spcl", recipe=plain).image_size == 64
    assert make_recipe("spcl", "paper", recipe=plain).image_size == 512


def test_tuple_bool_str_and_optional_fields_from_a_file(tmp_path):
    path = write(tmp_path / "r.toml", 'crop_scale = [0.3, 0.9]\ncrop_size = 24\ngather = "local"\n'
                                      "base_temperature = 0.1\nsteps_per_epoch = 5\n")
    recipe = make_recipe("mulsupcon", recipe=path)
    assert (recipe.crop_scale, recipe.crop_size, recipe.gather) == ((0.3, 0.9), 24, "local")
    assert (recipe.base_temperature, recipe.steps_per_epoch) == (0.1, 5)
    assert make_recipe("mvcon", recipe=write(tmp_path / "b.toml", "exclude_positive = false\n")).exclude_positive is False


# === Errors: one line naming the file ===


@pytest.mark.parametrize("text, fragments", [
    ('method = "spcl"\nsigma = 1.5\n', ["unknown key(s) ['sigma'] for method 'spcl'"]),
    ('method = "ace"\n', ["a recipe file for method 'ace', not for 'spcl'"]),
    ("batch_size = \n", ["not a readable TOML recipe file"]),
    ('batch_size = "many"\n', ["Expected batch_size to be of type int. Received: batch_size='many'"]),
    ('data_kind = "multimodal"\n', ["data_kind 'multimodal', but spcl trains on 'chest' data"]),
    ('size = "huge"\n', ["expected size in ('phantom', 'paper')"]),
    ("seed = -1\n", ["expected seed to be an integer >= 0"]),
])
def test_bad_recipe_files_are_one_line_naming_the_file(text, fragments, tmp_path):
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ValueError, match="bad.toml: ") as error:
        make_recipe("spcl", recipe=path)
    assert "\n" not in str(error.value) and all(fragment in str(error.value) for fragment in fragments)
    assert_one_line_error(*invoke("pretrain", "spcl", "--recipe", path, "--output", tmp_path / "run"),
                          f"{path}: ", *fragments)
    assert not (tmp_path / "run").exists()


def test_a_missing_recipe_file_is_one_line(tmp_path):
    path = tmp_path / "nope.toml"
    assert_one_line_error(*invoke("pretrain", "spcl", "--recipe", path), f"{path}: no such recipe file")


def test_a_numeric_value_out_of_range_in_a_file_is_refused(tmp_path):
    path = write(tmp_path / "r.toml", "sigma = 0.0\n")
    with pytest.raises(ValueError, match=r"Expected sigma to be a finite number > 0\. Received: sigma=0\.0"):
        make_recipe("ace", recipe=path)


# === A run's recipe.toml is a recipe file ===


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_written_recipe_reads_back_to_the_same_recipe_and_seed(name, tmp_path):
    overrides = {"ace": dict(sigma=1.5), "mulsupcon": dict(base_temperature=0.1, crop_scale=(0.5, 1.0)),
                 "mvcon": dict(exclude_positive=False), "mvmae": dict(alignment="pooled"),
                 "simclr": dict(crop_size=24), "spcl": dict(scale_bounds=(2.0, 50.0)),
                 "supervised": dict(multi_label=False)}[name]
    recipe = make_recipe(name, "phantom", steps_per_epoch=3, **overrides)
    runs.write_recipe(tmp_path, recipe, seed=7)
    path = tmp_path / runs.RECIPE_FILE
    assert read_recipe_file(path, name).seed == 7
    for size in (None, "phantom", "paper"):
        assert make_recipe(name, size, recipe=path) == recipe


def test_fields_a_run_leaves_out_are_none(tmp_path):
    """A run's recipe.toml omits None (TOML has no null): read back, those fields are None whatever the base."""
    recipe = make_recipe("simclr", "paper", crop_size=None, steps_per_epoch=None)
    runs.write_recipe(tmp_path, recipe, seed=0)
    values = read_recipe_file(tmp_path / runs.RECIPE_FILE, "simclr").values
    assert values["crop_size"] is None and values["steps_per_epoch"] is None


def test_a_runs_recipe_toml_reproduces_the_run(tmp_path):
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    exit_code, output = invoke("pretrain", "spcl", *TINY_SPCL, "--set", "kappa=8", "--seed", "3", "--output", first)
    assert exit_code == 0, output
    recipe_file = first / runs.RECIPE_FILE
    exit_code, output = invoke("pretrain", "spcl", "--recipe", recipe_file, "--output", second)
    assert exit_code == 0, output
    assert (second / runs.RECIPE_FILE).read_bytes() == recipe_file.read_bytes()
    assert runs.read_environment(second)["seed"] == 3
    # --seed and --set beat the file
    exit_code, output = invoke("pretrain", "spcl", "--recipe", recipe_file, "--seed", "4", "--set", "kappa=6",
                               "--output", third)
    assert exit_code == 0, output
    resolved = runs.read_recipe(third)
    assert resolved["seed"] == 4 and resolved["kappa"] == 6.0 and resolved["image_size"] == 32
