"""Recipe values from `--set` overrides and from a run's config.yaml: a mistyped key gets the
key path it most likely meant, spaces around a key and `=` are ignored, the last override of a
key wins, and a run's held-out rows become the recipe's evaluation file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from workbench.interfaces.recipe import RecipeError, read_recipe
from workbench.interfaces.recipe_values import apply_overrides, recipe_from_run_config

TICKETS = str(ROOT / "sample_data" / "support_tickets.jsonl")


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": TICKETS}}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("hyperparameter.max_steps=4", "hyperparameters.max_steps"),  # a section misspelt
        ("max_steps=4", "hyperparameters.max_steps"),  # a bare setting: the section that has it
        ("r=8", "method.r"),
        ("held_out=8", "evaluation.held_out"),
        ("hyperparameters.max_step=4", "hyperparameters.max_steps"),  # a setting misspelt
    ],
)
def test_a_mistyped_override_names_the_key_path_it_most_likely_meant(recipe, override, meant):
    with pytest.raises(RecipeError, match=rf"Did you mean `{meant}`\?"):
        read_recipe(recipe, [override])


def test_spaces_around_the_key_its_dots_and_the_equals_sign_are_ignored(recipe):
    settings = read_recipe(recipe, ["hyperparameters.max_steps = 4", " method . r= 8 "])
    assert settings.hyperparameters.max_steps == 4 and settings.method.r == 8


def test_the_last_override_of_a_key_wins():
    values: dict = {}
    overrides = ["hyperparameters.max_steps=32", "hyperparameters.max_steps=2"]
    assert apply_overrides(values, overrides) == []
    assert values == {"hyperparameters": {"max_steps": 2}}


def test_a_runs_evaluation_becomes_the_recipes_held_out_file(tmp_path):
    config = {
        "stage": "sft",
        "data": {"train": "data/train.jsonl", "format": "alpaca"},
        "evaluation": {
            "metrics": ["label_accuracy"],
            "labels": ["billing", "shipping"],
            "max_new_tokens": 6,
            "held_out": 4,
            "file": "data/held_out.jsonl",
        },
    }
    values, problems = recipe_from_run_config(config, tmp_path)
    assert problems == []
    assert values["evaluation"] == {
        "metrics": ["label_accuracy"],
        "labels": ["billing", "shipping"],
        "max_new_tokens": 6,
        "file": str(tmp_path / "data" / "held_out.jsonl"),  # the rows, not a count to split off
    }
