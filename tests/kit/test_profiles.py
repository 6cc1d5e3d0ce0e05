"""The run config: profiles, the environment default, overrides (0 is a value, None is not), types, errors."""
import pytest

from helpers.profiles import FIELDS, PROFILES, RunConfig, get_profile, resolve_config


def test_three_profiles_with_design_sizes():
    assert set(PROFILES) == {"smoke", "demo", "class", "cpu", "t4"}
    assert (PROFILES["smoke"].image_size, PROFILES["cpu"].image_size, PROFILES["t4"].image_size) == (64, 128, 256)
    assert PROFILES["t4"].amp == "auto" and PROFILES["cpu"].amp == "off"
    for p in PROFILES.values():
        assert p.fractions == ((0.10, 1.00) if p.name in ("class", "demo") else (0.10, 0.25, 0.50, 1.00))
        assert p.seeds == (42,) and p.split_seed == 42
        assert set(p.model_configs) == {"unet", "unetpp", "transunet"} and p.deep_supervision


def test_class_profile_is_the_measured_cpu_recipe_at_two_fractions_with_amp():
    """The class path keeps the recipe whose real-data results are committed (the cpu study), on a GPU."""
    cpu, lesson = PROFILES["cpu"], PROFILES["class"]
    same = ("image_size", "model_configs", "batch_size", "lr", "warmup_epochs", "weight_decay", "schedule", "augment")
    assert all(getattr(lesson, k) == getattr(cpu, k) for k in same)
    assert lesson.fractions == (0.10, 1.00) and lesson.amp == "auto" and lesson.num_workers == 2
    assert (lesson.num_epochs, cpu.num_epochs) == (12, 16)  # the class keeps 12 epochs to fit a lesson


def test_environment_variable_chooses_the_default(monkeypatch):
    monkeypatch.setenv("KIT_PROFILE", "cpu")
    assert get_profile("").name == "cpu"
    assert get_profile(None).name == "cpu"
    assert get_profile("t4").name == "t4"          # an explicit name wins


def test_auto_picks_cpu_without_cuda_and_class_with_it(monkeypatch):
    import torch

    monkeypatch.delenv("KIT_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile("").name == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile("").name == "class"


def test_none_keeps_the_profile_value_and_zero_is_a_real_value():
    cfg = resolve_config("cpu", image_size=96, num_epochs=None, weight_decay=0.0, num_workers=0,
                         warmup_epochs=0, early_stopping=0)
    assert cfg.image_size == 96 and cfg.num_epochs == 16
    assert (cfg.weight_decay, cfg.num_workers, cfg.early_stopping) == (0.0, 0, 0)
    assert resolve_config("t4", num_workers=0).num_workers == 0
    assert PROFILES["smoke"].image_size == 64      # the registry itself is untouched


@pytest.mark.parametrize(("field", "given", "expected"), [
    ("models", "unet,unetpp", ("unet", "unetpp")),
    ("models", ["transunet"], ("transunet",)),
    ("models", "unet", ("unet",)),                   # one name, not its letters
    ("fractions", "[0.1]", (0.1,)),                  # a JSON list as plain papermill passes it
    ("fractions", "1.0, 0.5", (0.5, 1.0)),           # sorted
    ("fractions", [1.0, 0.25], (0.25, 1.0)),
    ("seeds", 7, (7,)),
    ("seeds", "1,2,3", (1, 2, 3)),
    ("pretrained", "transunet", ("transunet",)),
    ("image_size", "96", 96),
    ("lr", "3e-4", 3e-4),
    ("num_epochs", 5.0, 5),
    ("model_overrides", '{"unetpp": {"prune_depth": 2}}', {"unetpp": {"prune_depth": 2}}),
])
def test_values_are_converted_to_the_field_type(field, given, expected):
    assert getattr(resolve_config("smoke", **{field: given}), field) == expected


@pytest.mark.parametrize(("field", "given", "message"), [
    ("models", "unet,vnet", r"MODELS = 'unet,vnet' is not valid.*unknown: \['vnet'\]"),
    ("fractions", "0.125", "whole percentages"),
    ("fractions", "2", "whole percentages"),
    ("num_epochs", 0, "NUM_EPOCHS = 0 is not valid: expected a number above 0"),
    ("num_epochs", 2.5, "whole number"),
    ("batch_size", "many", "BATCH_SIZE = 'many'"),
        ("lr", -1e-3, "LR = -0.001 is not valid: expected a number above 0"),
        ("lr", 0, "above 0"),
        ("lr", "inf", "a finite number"),
        ("lr", float("nan"), "a finite number"),
        ("weight_decay", -1, "at least 0"),
        ("image_size", 70, "a multiple of 16, which the models' poolings need"),
        ("gpu_memory_gb", 0, "above 0"),
    ("amp", "fp8", r"one of \['auto', 'bf16', 'fp16', 'off'\]"),
    ("schedule", "step", "cosine"),
    ("augment", "heavy", "kit"),
    ("deep_supervision", "yes", "True or False"),
    ("image_size", True, "IMAGE_SIZE = True"),
])
def test_invalid_values_are_clear_errors(field, given, message):
    with pytest.raises(ValueError, match=message):
        resolve_config("smoke", **{field: given})


def test_model_overrides_merge_per_model():
    base = resolve_config("smoke", model_overrides={"unetpp": {"prune_depth": 2}})
    both = base.with_(model_overrides={"unetpp": {"base_channels": 4}, "unet": {"base_channels": 4}})
    assert both.model_overrides == {"unetpp": {"prune_depth": 2, "base_channels": 4}, "unet": {"base_channels": 4}}


def test_unknown_names_are_clear_errors_that_list_the_known_ones():
    with pytest.raises(ValueError, match="Unknown profile 'gpu'.*cpu"):
        get_profile("gpu")
    with pytest.raises(ValueError, match=r"Unknown setting\(s\) \['imagesize'\]; known settings: \[.*'image_size'"):
        resolve_config("smoke", imagesize=64)


def test_as_dict_round_trips():
    d = PROFILES["t4"].as_dict()
    assert d["name"] == "t4" and d["model_configs"]["unet"] == "paper" and set(d) == set(FIELDS)
    assert RunConfig(**d) == PROFILES["t4"]


def test_model_configs_are_merged_per_model_like_model_overrides():
    cfg = resolve_config("cpu", model_configs={"unetpp": "r34"})
    assert cfg.model_configs == {"unet": "cpu", "unetpp": "r34", "transunet": "cpu"}
    assert resolve_config("cpu", model_configs='{"unet": "r34"}').model_configs["unet"] == "r34"  # papermill's text
    with pytest.raises(ValueError, match="a dict keyed by model names"):
        resolve_config("cpu", model_configs={"resnet": "r34"})
