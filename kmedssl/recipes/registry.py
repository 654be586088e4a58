"""Method name -> recipe class, and building a recipe from a size plus overrides."""

import dataclasses
import typing

from kmedssl.recipes.ace import ACERecipe
from kmedssl.recipes.mulsupcon import MulSupConRecipe
from kmedssl.recipes.mvcon import MVConRecipe
from kmedssl.recipes.mvmae import MVMAERecipe
from kmedssl.recipes.simclr import SimCLRRecipe
from kmedssl.recipes.spcl import SPCLRecipe
from kmedssl.recipes.supervised import SupervisedRecipe

RECIPES = {
    recipe.method: recipe
    for recipe in (ACERecipe, MulSupConRecipe, MVConRecipe, MVMAERecipe, SimCLRRecipe, SPCLRecipe, SupervisedRecipe)
}
SIZES = ("phantom", "paper")


def list_methods():
    """Names of every pretraining method, sorted."""
    return sorted(RECIPES)


def recipe_fields(name):
    return {f.name: f for f in dataclasses.fields(RECIPES[name])}


def make_recipe(name, size="phantom", **overrides):
    """The recipe of method ``name`` at ``size`` ("phantom" or "paper") with ``overrides`` applied.

    Raises:
        ValueError: unknown method, size or field, or a value of the wrong type.
    """
    if name not in RECIPES:
        raise ValueError(f"Expected a method name in {list_methods()}. Received: {name!r}")
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
    values.update({key: coerce(fields[key], key, value) for key, value in overrides.items()})
    return recipe_class(**values)


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
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected {key} to be of type {getattr(kind, '__name__', kind)}. Received: {key}={value!r}"
        ) from None
