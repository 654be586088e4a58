"""Public entry points (SPEC §9): ``list_methods``, ``pretrain``, ``evaluate`` and the recipes."""

from kmedssl.recipes.evaluation import evaluate
from kmedssl.recipes.registry import RECIPES, list_methods, make_recipe
from kmedssl.recipes.training import PretrainResult, pretrain
