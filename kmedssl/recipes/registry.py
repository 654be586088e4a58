"""Method name -> recipe class, and building a recipe from a size, a recipe file and overrides.

Precedence, lowest first: the class defaults (the paper's settings) < the size's overrides
(``sizes["phantom"]``) < a recipe file (TOML: the top-level ``recipes/`` folder, or a run's ``recipe.toml``)
< keyword arguments (``--set`` and the CLI's shortcuts).
"""

import dataclasses
import pathlib
import tomllib
import typing

from kmedssl.recipes.ace import ACERecipe
from kmedssl.recipes.mulsupcon import MulSupConRecipe
from kmedssl.recipes.mvcon import MVConRecipe
from kmedssl.recipes.mvmae import MVMAERecipe
from kmedssl.training.runs import RECIPE_HEADER
from kmedssl.recipes.simclr import SimCLRRecipe
from kmedssl.recipes.spcl import SPCLRecipe
from kmedssl.recipes.supervised import SupervisedRecipe

RECIPES = {
    recipe.method: recipe
    for recipe in (ACERecipe, MulSupConRecipe, MVConRecipe, MVMAERecipe, SimCLRRecipe, SPCLRecipe, SupervisedRecipe)
}
SIZES = ("phantom", "paper")
# Keys of a recipe file besides the recipe's fields (a run's recipe.toml has method, data_kind and seed).
FILE_KEYS = ("method", "size", "seed", "data_kind")
# The top-level recipes/ folder of a source checkout: a relative --recipe path not found from the current
# directory is looked up there (``recipes/paper/spcl-mimic-cxr.toml`` or ``paper/spcl-mimic-cxr.toml``).
RECIPES_DIR = pathlib.Path(__file__).resolve().parents[2] / "recipes"


def list_methods():
    """Names of every pretraining method, sorted."""
    return sorted(RECIPES)


def recipe_fields(name):
    return {f.name: f for f in dataclasses.fields(RECIPES[name])}


@dataclasses.dataclass(frozen=True)
class RecipeFile:
    """A recipe file read for one method: its ``size`` and ``seed`` (None when it sets none) and its field
    ``values``, converted to the fields' types."""

    path: pathlib.Path
    size: str | None
    seed: int | None
    values: dict


def make_recipe(name, size=None, recipe=None, **overrides):
    """The recipe of method ``name``: class defaults < ``size``'s overrides < ``recipe`` file < ``overrides``.

    Args:
        name: one of ``list_methods()``.
        size: "phantom" or "paper" (the class defaults); None: the recipe file's ``size``, else "phantom".
        recipe: a TOML recipe file (path, or a ``RecipeFile`` from ``read_recipe_file``), or None.
        **overrides: recipe fields (Python values, or strings from ``--set key=value``).

    Raises:
        ValueError: unknown method, size or field, a value of the wrong type, or a bad recipe file.
    """
    check_method(name)
    if recipe is not None and not isinstance(recipe, RecipeFile):
        recipe = read_recipe_file(recipe, name)
    if size is None:
        size = recipe.size if recipe is not None and recipe.size is not None else "phantom"
    if size not in SIZES:
        raise ValueError(f"Expected size in {SIZES}. Received: size={size!r}")
    recipe_class = RECIPES[name]
    fields = recipe_fields(name)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"Unknown recipe field(s) {unknown} for method {name!r}. Expected fields: {sorted(fields)}"
        )
    values = dict(recipe_class.sizes.get(size, {})) if size == "phantom" else {}
    values.update(recipe.values if recipe is not None else {})
    values.update({key: coerce(fields[key], key, value) for key, value in overrides.items()})
    return recipe_class(**values)


def check_method(name):
    if name not in RECIPES:
        raise ValueError(f"Expected a method name in {list_methods()}. Received: {name!r}")


# === Recipe files ===


def find_recipe_file(path):
    """``path``, or for a relative path that does not exist, the same path under the top-level ``recipes/``
    folder (``RECIPES_DIR``, with or without its leading ``recipes/``) when it is there."""
    path = pathlib.Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("recipes",) else path.parts
    candidate = RECIPES_DIR.joinpath(*parts) if parts else RECIPES_DIR
    return candidate if candidate.is_file() else path


def read_recipe_file(path, name):
    """The settings of recipe file ``path`` for method ``name``.

    A recipe file is TOML with any fields of the method's recipe and optionally ``method`` (must be
    ``name``), ``size`` ("phantom" or "paper": the base the file's values go over), ``seed`` (the run's seed
    unless one is given) and ``data_kind`` (must be the method's). A run's ``recipe.toml`` is one: it lists
    every field, so the fields it leaves out (None has no TOML form) are None.

    Raises:
        ValueError: one line naming the file: not found or unreadable TOML, another method or data kind, an
            unknown key, a value of the wrong type.
    """
    check_method(name)
    path = find_recipe_file(path)
    try:
        text = path.read_text(encoding="utf-8")
        table = tomllib.loads(text)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such recipe file (expected a TOML file, e.g. recipes/phantom/{name}.toml "
                         f"or a run's recipe.toml)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: not a readable TOML recipe file ({error})") from None
    if table.get("method", name) != name:
        raise ValueError(f"{path}: a recipe file for method {table['method']!r}, not for {name!r}. Use "
                         f"`kmedssl pretrain {table['method']} --recipe {path}`, or a recipe file for {name}.")
    recipe_class = RECIPES[name]
    if table.get("data_kind", recipe_class.data_kind) != recipe_class.data_kind:
        raise ValueError(f"{path}: data_kind {table['data_kind']!r}, but {name} trains on "
                         f"{recipe_class.data_kind!r} data")
    fields = recipe_fields(name)
    unknown = sorted(set(table) - set(fields) - set(FILE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} for method {name!r}. Expected {list(FILE_KEYS)} or "
                         f"fields of its recipe: {sorted(fields)}")
    size, seed = table.get("size"), table.get("seed")
    if size is not None and size not in SIZES:
        raise ValueError(f"{path}: expected size in {SIZES}. Received: size={size!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{path}: expected seed to be an integer >= 0. Received: seed={seed!r}")
    values = {}
    for key, value in table.items():
        if key in fields:
            try:
                values[key] = coerce(fields[key], key, value)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
    if text.startswith(RECIPE_HEADER):  # a run's resolved recipe: every field that is not None is in it
        values.update({key: None for key, field in fields.items() if key not in values and is_optional(field)})
    return RecipeFile(path=path, size=size, seed=seed, values=values)


def is_optional(field):
    return typing.get_origin(field.type) is typing.Union and type(None) in typing.get_args(field.type)


# === Values ===


def coerce(field, key, value):
    """Convert ``value`` (a Python value, or a string from ``--set key=value``) to the field's type."""
    kind = field.type
    if typing.get_origin(kind) is typing.Union:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is tuple:
            if isinstance(value, str):
                return tuple(float(v) for v in value.strip("()[] ").split(",") if v.strip())
            return tuple(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if kind is str and not isinstance(value, str):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected {key} to be of type {getattr(kind, '__name__', kind)}. Received: {key}={value!r}"
        ) from None
