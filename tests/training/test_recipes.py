"""Named recipes apart from profiles: `seed` (the original study's) and `kit` (the tuned candidate)."""
import dataclasses

import pytest

from helpers.profiles import (
    CHOICES,
    PROFILES,
    RECIPES,
    get_profile,
    recipe_settings,
    resolve_config,
)

TRAINING = ("num_epochs", "lr", "weight_decay", "warmup_epochs", "schedule", "augment")


def test_the_registry_names_seed_and_kit_and_custom_is_a_profiles_own():
    assert set(RECIPES) == {"seed", "kit"} and set(CHOICES["recipe"]) == {*RECIPES, "custom"}
    assert all(name == recipe.name for name, recipe in RECIPES.items())


def test_seed_is_the_original_studys_recipe():
    seed = recipe_settings("seed", PROFILES["t4"])
    assert seed == {"num_epochs": 20, "lr": 1e-4, "weight_decay": 1e-4, "warmup_epochs": 0.0, "schedule": "cosine",
                    "augment": "kit"}
    assert recipe_settings("seed", PROFILES["cpu"]) == seed     # the same for every model size


def test_profiles_keep_their_values_and_say_where_they_came_from():
    assert PROFILES["t4"].recipe == "seed" and PROFILES["cpu"].recipe == PROFILES["class"].recipe == "kit"
    assert {name for name, p in PROFILES.items() if p.recipe == "custom"} == {"smoke", "demo"}
    for profile in PROFILES.values():  # a profile that names a recipe holds exactly its values
        if profile.recipe != "custom":
            assert all(getattr(profile, k) == v for k, v in recipe_settings(profile.recipe, profile).items())
    assert resolve_config("t4", recipe="seed") == PROFILES["t4"]
    assert resolve_config("cpu") == PROFILES["cpu"] and resolve_config("cpu", recipe=None) == PROFILES["cpu"]


def test_kit_sets_rate_warmup_and_schedule_and_keeps_the_profiles_epochs():
    t4, cpu = resolve_config("t4", recipe="kit"), resolve_config("cpu", recipe="kit")
    assert (t4.recipe, t4.lr, t4.warmup_epochs, t4.schedule, t4.num_epochs) == ("kit", 3e-4, 1.0, "cosine", 20)
    assert (cpu.lr, cpu.warmup_epochs, cpu.num_epochs) == (1e-3, 1.0, 16)   # small models keep their higher rate
    assert resolve_config("smoke", recipe="kit").lr == 1e-3
    assert (t4.batch_size, t4.image_size, t4.amp, t4.model_configs) == (16, 256, "auto", PROFILES["t4"].model_configs)


def test_the_models_asked_for_in_the_same_call_decide_the_rate():
    paper = {"unet": "paper", "unetpp": "paper", "transunet": "small"}
    assert resolve_config("smoke", recipe="kit", model_configs=paper).lr == 3e-4
    assert resolve_config("t4", recipe="kit", models="unet", model_configs={"unet": "cpu"}).lr == 1e-3


def test_explicit_settings_win_over_the_recipe_and_none_is_not_set():
    cfg = resolve_config("t4", recipe="kit", lr=1e-3, warmup_epochs=0, num_epochs=None)
    assert (cfg.recipe, cfg.lr, cfg.warmup_epochs, cfg.num_epochs) == ("kit", 1e-3, 0.0, 20)
    seed = resolve_config("cpu", recipe="seed", num_epochs=5)
    assert (seed.num_epochs, seed.lr, seed.recipe) == (5, 1e-4, "seed")
    assert PROFILES["t4"].recipe == "seed" and PROFILES["t4"].lr == 1e-4   # the registry itself is untouched


def test_with_applies_a_recipe_as_resolve_config_does_and_custom_changes_no_value():
    assert PROFILES["t4"].with_(recipe="kit") == resolve_config("t4", recipe="kit")
    custom = resolve_config("t4", recipe="custom")
    assert custom.recipe == "custom" and all(getattr(custom, k) == getattr(PROFILES["t4"], k) for k in TRAINING)


def test_the_recipe_travels_with_the_config():
    cfg = resolve_config("t4", recipe="kit")
    assert cfg.as_dict()["recipe"] == "kit" and dataclasses.replace(cfg).recipe == "kit"
    assert get_profile("t4").as_dict()["recipe"] == "seed"


def test_an_unknown_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match=r"RECIPE = 'fast' is not valid: expected one of \['seed', 'kit', 'custom'\]"):
        resolve_config("t4", recipe="fast")


def test_the_recipe_is_written_into_each_runs_spec_but_is_not_part_of_its_id(tiny):
    from helpers.training import runs

    seed = resolve_config("smoke", recipe="seed", image_size=32, split_seed=0)
    same_values = dataclasses.replace(seed, recipe="custom")
    spec_seed, spec_custom = (runs.make_spec("unet", 1.0, 42, tiny, c) for c in (seed, same_values))
    assert spec_seed.recipe == "seed" and dataclasses.asdict(spec_seed)["recipe"] == "seed"
    assert runs.run_id(spec_seed) == runs.run_id(spec_custom)  # a label: same values, same run
    assert "recipe" not in runs.settings_of(spec_seed)
    kit = resolve_config("smoke", recipe="kit", image_size=32, split_seed=0)
    assert runs.run_id(runs.make_spec("unet", 1.0, 42, tiny, kit)) != runs.run_id(spec_seed)  # other values
