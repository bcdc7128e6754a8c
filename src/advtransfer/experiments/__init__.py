"""Experiment recipes: a registry, typed configurations, the runner and the results store.

``advtransfer list`` shows the recipes; ``advtransfer run RECIPE|CONFIG.toml --out DIR`` runs one.
"""

from advtransfer.experiments.registry import REGISTRY, Recipe, RunContext, all_recipes, get_recipe
from advtransfer.experiments.runner import report, resolve, run

__all__ = ["REGISTRY", "Recipe", "RunContext", "all_recipes", "get_recipe", "report", "resolve",
           "run"]
