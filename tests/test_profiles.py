"""Profiles: lookup, the environment default, overrides, and errors."""
import pytest

from helpers import profiles
from helpers.profiles import PROFILES, get_profile, resolve_profile


def test_three_profiles_with_design_sizes():
    assert set(PROFILES) == {"smoke", "cpu", "t4"}
    assert (PROFILES["smoke"].image_size, PROFILES["cpu"].image_size, PROFILES["t4"].image_size) == (64, 128, 256)
    assert PROFILES["t4"].amp and not PROFILES["cpu"].amp
    for p in PROFILES.values():
        assert p.fractions == (0.10, 0.25, 0.50, 1.00)
        assert set(p.model_configs) == {"unet", "unetpp", "transunet"}


def test_environment_variable_chooses_the_default(monkeypatch):
    monkeypatch.setenv("KIT_PROFILE", "cpu")
    assert get_profile("").name == "cpu"
    assert get_profile(None).name == "cpu"
    assert get_profile("t4").name == "t4"          # an explicit name wins


def test_auto_picks_cpu_without_cuda_and_t4_with_it(monkeypatch):
    import torch

    monkeypatch.delenv("KIT_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile("").name == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile("").name == "t4"


def test_overrides_replace_fields_and_empty_values_keep_them():
    cfg = resolve_profile("smoke", image_size=96, num_epochs=None, batch_size=0, amp=False)
    assert cfg.image_size == 96 and cfg.num_epochs == 1 and cfg.batch_size == 8 and cfg.amp is False
    assert resolve_profile("cpu", fractions=[1.0, 0.5]).fractions == (0.5, 1.0)
    assert PROFILES["smoke"].image_size == 64      # the registry itself is untouched


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown profile 'gpu'.*cpu"):
        get_profile("gpu")
    with pytest.raises(ValueError, match="Unknown profile field.*imagesize"):
        resolve_profile("smoke", imagesize=64)


def test_as_dict_round_trips():
    d = PROFILES["t4"].as_dict()
    assert d["name"] == "t4" and d["model_configs"]["unet"] == "paper"
    assert profiles.Profile(**d) == PROFILES["t4"]
