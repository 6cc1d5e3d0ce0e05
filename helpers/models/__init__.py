"""Segmentation models and their registry of named configurations.

Every model maps images (B, 3, H, W) to logits (B, 1, H, W). UNet++ with deep
supervision returns a list of logits in training mode and one tensor in eval.

    model = build_model("unetpp", "small", deep_supervision=True)

Configurations are typed dataclasses; each model has `paper` (the published
network), `small` (fits a Colab T4 comfortably at 256 px), `cpu` and `tiny`
(tests and the smoke profile). UNet and UNet++ also have `r34`: a torchvision
ResNet-34 encoder that can start from ImageNet weights, but only when asked
(`load_encoder_weights`, or a run's `pretrained` setting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from helpers.models.encoder_weights import load_encoder_weights
from helpers.models.transunet import TRANSUNET_CONFIGS, TransUNet, TransUNetConfig
from helpers.models.transunet_weights import LoadReport, load_pretrained
from helpers.models.unet import UNET_CONFIGS, UNet, UNetConfig
from helpers.models.unetpp import UNETPP_CONFIGS, UNetPlusPlus, UNetPPConfig

ModelConfig = UNetConfig | UNetPPConfig | TransUNetConfig
# as the course's text names them
DISPLAY_NAMES = {"unet": "UNet", "unetpp": "UNet++", "transunet": "TransUNet"}


def display_name(model: str) -> str:
    """``unetpp`` → ``UNet++``: a model as figures and tables name it (unknown names as they
    are)."""
    return DISPLAY_NAMES.get(str(model), str(model))


MODEL_CONFIGS: dict[str, dict[str, ModelConfig]] = {
    "unet": UNET_CONFIGS,
    "unetpp": UNETPP_CONFIGS,
    "transunet": TRANSUNET_CONFIGS,
}

_MODEL_CLASSES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "transunet": TransUNet,
}

__all__ = [
    "MODEL_CONFIGS", "LoadReport", "ModelConfig", "TransUNet", "TransUNetConfig", "UNet",
    "UNetConfig", "UNetPPConfig", "UNetPlusPlus", "build_model", "get_config", "input_multiple",
    "list_configs", "load_encoder_weights", "load_pretrained",
]


def list_configs() -> dict[str, list[str]]:
    """Names of the registered configurations per model, e.g. {"unet": ["paper", "small", "cpu",
    "tiny", "r34"], ...}."""
    return {name: list(configs) for name, configs in MODEL_CONFIGS.items()}


def get_config(name: str, config: str | ModelConfig = "paper", **overrides) -> ModelConfig:
    """Resolve a model's configuration by name (or check a given one) and apply overrides.

    Args:
        name: Model name: "unet", "unetpp" or "transunet".
        config: Configuration name (see `list_configs()`) or a config dataclass of that model.
        **overrides: Fields to replace, e.g. base=48 or deep_supervision=True.

    Returns:
        The configuration dataclass.

    Raises:
        ValueError: If the model, the configuration or an override field is unknown.
    """
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_CONFIGS)}")
    configs = MODEL_CONFIGS[name]
    config_class = type(next(iter(configs.values())))
    if isinstance(config, str):
        if config not in configs:
            raise ValueError(f"unknown configuration {config!r} for {name}; choose one of "
                             f"{sorted(configs)}")
        config = configs[config]
    elif not isinstance(config, config_class):
        raise ValueError(f"{name} needs a {config_class.__name__} or a configuration name; got "
                         f"{type(config).__name__}")
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields {unknown}; valid fields are "
                         f"{sorted(fields)}")
    return dataclasses.replace(config, **overrides)


def input_multiple(name: str, config: str | ModelConfig = "paper", **overrides) -> int:
    """The number an input's height and width must be a multiple of: 2 ** poolings, or TransUNet's
    16.

    Raises:
        ValueError: If the model, the configuration or an override field is unknown.
    """
    config = get_config(name, config, **overrides)
    return 2 ** config.depth if hasattr(config, "depth") else 16


def build_model(name: str, config: str | ModelConfig = "paper", **overrides) -> nn.Module:
    """Build a segmentation model from the registry.

    Args:
        name: Model name: "unet", "unetpp" or "transunet".
        config: Configuration name ("paper", "small", "cpu", "tiny", "r34") or a config dataclass.
        **overrides: Configuration fields to replace, e.g. deep_supervision=True.

    Returns:
        The model (randomly initialised, on the CPU, in training mode).

    Raises:
        ValueError: If the model, the configuration or an override field is unknown.
    """
    config = get_config(name, config, **overrides)  # validates the names first
    return _MODEL_CLASSES[name](config)
