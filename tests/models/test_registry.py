"""The model registry and the size summary (parameters, FLOPs) the notebooks print."""

from __future__ import annotations

import pandas as pd
import pytest
from torch import nn

from helpers.models import MODEL_CONFIGS, build_model, get_config, list_configs
from helpers.models.summary import count_flops, count_parameters, model_table

MODELS = ["unet", "unetpp", "transunet"]


def test_count_flops_counts_two_flops_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 2, kernel_size=1, bias=False).train()
    # 2 images x 2 output channels x 16 positions x 3 input channels = 192 MACs = 384 FLOPs
    assert count_flops(conv, (4, 4), batch=2) == 384
    assert conv.training


def test_model_table_has_the_columns_and_known_values() -> None:
    table = model_table([(name, config) for name in MODELS for config in ("tiny", "paper")], image_size=256)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["model", "config", "params_M", "GFLOPs"]
    assert (table["GFLOPs"] > 0).all()
    paper = table.set_index(["model", "config"])
    assert paper.loc[("unet", "paper"), "params_M"] == pytest.approx(31.04, abs=0.01)
    assert paper.loc[("unet", "paper"), "GFLOPs"] == pytest.approx(96.33, abs=0.01)
    tiny = build_model("unetpp", "tiny")
    assert paper.loc[("unetpp", "tiny"), "params_M"] == count_parameters(tiny) / 1e6
    assert paper.loc[("unetpp", "tiny"), "GFLOPs"] == pytest.approx(count_flops(tiny, 256) / 1e9)


def test_registry_lists_paper_small_cpu_and_tiny_for_every_model_and_r34_for_unets() -> None:
    assert list_configs() == {name: ["paper", "small", "cpu", "tiny"] + (["r34"] if name != "transunet" else [])
                              for name in MODELS}  # r34: the ResNet-34 encoder (tests/models/test_encoders.py)
    assert get_config("unet", "cpu").base == 16 and get_config("unetpp", "cpu").base == 8
    assert get_config("transunet", "cpu").img_size == 128
    assert set(MODEL_CONFIGS) == set(MODELS)
    assert get_config("unet", "small").base == 32
    assert get_config("transunet", "small", dropout=0.0).dropout == 0.0


def test_unknown_names_raise_value_errors_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*'transunet', 'unet', 'unetpp'"):
        build_model("resnet")
    with pytest.raises(ValueError, match=r"unknown configuration 'huge' for unet.*'paper', 'r34', 'small', 'tiny'"):
        build_model("unet", "huge")
    with pytest.raises(ValueError, match=r"unknown UNetConfig fields \['width'\].*'base'"):
        build_model("unet", "tiny", width=8)
    with pytest.raises(ValueError, match="needs a TransUNetConfig"):
        build_model("transunet", get_config("unet", "tiny"))
