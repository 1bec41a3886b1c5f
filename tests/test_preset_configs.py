"""The language-model presets and the toys resolve to exactly the configs they had before the small CPU recipe and
the scale-free MSE were added: tests/fixtures/preset_configs.json holds their `to_dict` form as recorded then
(commit 9bad805), and any change to a default of `DecompositionConfig` that reaches a preset fails here."""
import json
from pathlib import Path

import pytest

from vpd.config import to_dict
from vpd.decompose import LM_PRESETS, lm_config
from vpd.toys import TOYS, toy_config
from vpd.train import DecompositionConfig

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "preset_configs.json").read_text())


def test_every_preset_was_recorded():
    assert sorted(RECORDED["lm"]) == sorted(LM_PRESETS)
    assert sorted(RECORDED["toys"]) == sorted(TOYS)


@pytest.mark.parametrize("name", sorted(LM_PRESETS))
def test_lm_presets_unchanged(name):
    assert to_dict(lm_config(name)) == RECORDED["lm"][name]
    assert to_dict(lm_config(name, adversary=False)) == RECORDED["lm_no_adversary"][name]


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_configs_unchanged(name):
    assert to_dict(toy_config(TOYS[name])) == RECORDED["toys"][name]


def test_defaults_are_still_the_paper_recipe():
    assert to_dict(DecompositionConfig()) == RECORDED["default"]


def test_small_recipe_differs_only_where_it_says():
    small, default = to_dict(DecompositionConfig.small()), RECORDED["default"]
    changed = {k for k in default if small[k] != default[k]}
    assert changed == {"steps", "log_every", "save_every", "components_optimizer", "ci_optimizer", "minimality",
                       "faithfulness_warmup_steps", "faithfulness_warmup_lr", "ci"}
    assert small["minimality"] == {**default["minimality"], "coeff": 1e-3}
