"""Built-in dataset recipes, one per protocol of ``shared/benchmarks/PROTOCOLS.md``.

Each module lists its recipes in a module-level ``RECIPES: list[Recipe]``.
"""

from __future__ import annotations

import importlib

from ranker.data.recipes.base import BuiltRanking, BuiltRetrieval, PreparedDataset, Recipe, prepare
from ranker.errors import ConfigError

_MODULES = ("synthetic", "movielens", "frappe", "adult", "census", "amazon")

__all__ = ["BuiltRanking", "BuiltRetrieval", "PreparedDataset", "Recipe", "all_recipes", "get_recipe", "prepare"]


def all_recipes() -> dict[str, Recipe]:
    """Every built-in recipe by name (modules that fail to import are skipped loudly)."""
    out: dict[str, Recipe] = {}
    for mod in _MODULES:
        try:
            module = importlib.import_module(f"ranker.data.recipes.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ranker.data.recipes.{mod}":
                continue
            raise
        for recipe in module.RECIPES:
            out[recipe.name] = recipe
    return out


def get_recipe(name: str, where: str = "data.dataset") -> Recipe:
    """The recipe called `name` (or one of its aliases); the error names `where` the name was
    given and lists the known names."""
    recipes = all_recipes()
    key = name.lower()
    if key in recipes:
        return recipes[key]
    for recipe in recipes.values():
        if key in recipe.aliases:
            return recipe
    raise ConfigError(f"{where}: unknown dataset {name!r}; known: {', '.join(sorted(recipes))}")
