"""One typed run config, and the named profiles (`smoke`, `demo`, `cpu`, `t4`) that fill it.

Every setting that changes a run's result is a field of :class:`RunConfig`: image size, models and
their named configs and overrides (deep supervision included), epochs, batch size, lr, weight decay,
warm-up, schedule, augmentation, mixed precision, early stopping, the split seed and the
initialisation seed(s). A profile is a named RunConfig; notebooks and the command line override it:

    cfg = resolve_config(PROFILE, image_size=IMAGE_SIZE, lr=LR)   # None means "not set"; 0 is a value
    cfg = resolve_config("t4", recipe="kit")    # a named recipe's values, under any explicit setting

A recipe (:data:`~helpers.recipes.RECIPES`: ``seed``, the original study's; ``kit``, the tuned candidate; kept in
:mod:`helpers.recipes` and importable from here too) is named apart from the profiles: it sets the optimisation
settings, the profile the rest (sizes, models, hardware).

Unknown fields are refused with the list of known ones, and values are checked and converted
(``"unet,unetpp"`` and ``["unet", "unetpp"]`` are the same models; ``"0.1,1.0"`` the same fractions).
The profile name defaults to ``$KIT_PROFILE`` so that tools which cannot inject parameters (nbval,
a plain Jupyter session) still take the path you chose; without it, ``auto`` picks ``t4`` when a
CUDA GPU is present and ``cpu`` otherwise. Nothing in this module imports torch at import time.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from helpers.recipes import RECIPE_NAMES, recipe_settings
from helpers.recipes import RECIPES as RECIPES  # importable from here too, as before the split
from helpers.recipes import SMALL_CONFIGS as SMALL_CONFIGS
from helpers.recipes import Recipe as Recipe

PROFILE_ENV = "KIT_PROFILE"
FRACTIONS = (0.10, 0.25, 0.50, 1.00)
MODELS = ("unet", "unetpp", "transunet")
CHOICES = {"amp": ("auto", "bf16", "fp16", "off"), "schedule": ("cosine", "constant"), "augment": ("kit", "none"),
           "recipe": RECIPE_NAMES}  # the names of RECIPES (helpers.recipes), and custom: a profile's own values


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a study's runs. Fields marked * change a run's result (and so its run id).

    Attributes:
        name: profile this config came from (`smoke`, `cpu`, `t4`).
        description: one line for people.
        image_size: * side of the square training images, in pixels.
        synthetic_count: how many images the offline sample generates.
        split_seed: * seed of the train/val/test split and of the nested fractions.
        models: the models the grid trains.
        fractions: training-data fractions of the grid (nested, ascending).
        seeds: * initialisation and augmentation seed(s); each one trains its own run on the same split.
        model_configs: * model name -> named configuration in the model registry.
        model_overrides: * model name -> config fields changed on top of the named one.
        deep_supervision: * UNet++ trained with a loss on every head (x_0_1 ... x_0_4).
        pretrained: * models that start from ImageNet weights: TransUNet (its R50-ViT), and UNet/UNet++ with the
            `r34` config (a ResNet-34 encoder; see helpers.models.encoder_weights). Other UNet/UNet++ configs
            have no ImageNet weights: training them with `pretrained` stops with an error.
        num_epochs: * training epochs per run.
        batch_size: * images per optimisation step (the global batch under torchrun).
        lr: * peak AdamW learning rate.
        weight_decay: * AdamW weight decay.
        warmup_epochs: * linear learning-rate warm-up, in epochs (may be fractional).
        schedule: * `cosine` (per-step decay to 0) or `constant`.
        augment: * `kit` (flips, 90° turns, mild affine, colour jitter) or `none`.
        amp: * mixed precision on CUDA: `auto` (bf16 where supported, else fp16), `bf16`, `fp16`, `off`.
            `fp16` always trains with a gradient scaler, as a T4 (no bf16) must.
        gpu_memory_gb: the most GPU memory a run may use, in GB (2**30 bytes); None: all of it. Ignored on
            the CPU; not result-changing (a run that does not fit stops instead). T4: `fp16` with 15 is the
            T4 path emulated on a bigger GPU (the original study's Colab T4: 15 GB, of which torch sees 14.7).
        early_stopping: * stop after this many epochs without a better validation Dice (None: never).
        num_workers: DataLoader worker processes.
        checkpoint_minutes: also save ``last.pt`` within an epoch this often (None: after each epoch).
        recipe: where the optimisation settings came from: a recipe of :data:`~helpers.recipes.RECIPES` (`seed`, `kit`), or
            `custom` (the profile's own values). A label recorded with each run; the values are the fields above.
    """

    name: str
    description: str
    image_size: int
    synthetic_count: int
    split_seed: int = 42
    models: tuple = MODELS
    fractions: tuple = FRACTIONS
    seeds: tuple = (42,)
    model_configs: dict = field(default_factory=dict)
    model_overrides: dict = field(default_factory=dict)
    deep_supervision: bool = True
    pretrained: tuple = ()
    num_epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    augment: str = "kit"
    amp: str = "auto"
    gpu_memory_gb: float | None = None
    early_stopping: int | None = None
    num_workers: int = 2
    checkpoint_minutes: float | None = None
    recipe: str = "custom"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _convert(f.name, getattr(self, f.name)))

    def with_(self, **overrides) -> RunConfig:
        """A copy with some fields replaced (same rules as :func:`resolve_config`)."""
        return _apply(self, overrides)

    def as_dict(self) -> dict:
        """Plain-dict copy (for config files and checkpoints)."""
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
_INTS = {"image_size", "synthetic_count", "split_seed", "num_epochs", "batch_size", "num_workers"}
_FLOATS = {"lr", "weight_decay", "warmup_epochs"}
_POSITIVE = {"image_size", "synthetic_count", "num_epochs", "batch_size"}


def _bad(name: str, value, expected: str) -> ValueError:
    return ValueError(f"{name.upper()} = {value!r} is not valid: expected {expected}.")


def _listed(value) -> list:
    """A list from a list/tuple, a JSON list string, a comma-separated string or one value."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{text!r} is not a JSON list") from None
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number(name: str, value, kind):
    if isinstance(value, bool) or value is None:
        raise _bad(name, value, f"a {kind.__name__}")
    try:
        if kind is float:
            number = float(value)
        elif isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            number = int(value)
        else:
            number = int(str(value).strip())
    except (TypeError, ValueError):
        raise _bad(name, value, f"a {'whole number' if kind is int else 'number'}") from None
    if name in _POSITIVE and number <= 0 or number < 0:
        raise _bad(name, value, "a number above 0" if name in _POSITIVE else "a number ≥ 0")
    return number


def _gigabytes(name: str, value) -> float | None:
    """A memory cap: a finite number of GB above 0, or None (no cap)."""
    if value is None:
        return None
    try:
        number = _number(name, value, float)
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise _bad(name, value, "a number of GB above 0, e.g. 15 (a T4's), or None for no cap")
    return number


def _convert(name: str, value):
    """``value`` checked and converted to the type of field ``name``."""
    if name in _INTS:
        return _number(name, value, int)
    if name in _FLOATS:
        return _number(name, value, float)
    if name == "gpu_memory_gb":
        return _gigabytes(name, value)
    if name in ("early_stopping", "checkpoint_minutes"):
        return None if value is None else _number(name, value, int if name == "early_stopping" else float)
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise _bad(name, value, f"one of {list(CHOICES[name])}")
        return value
    if name == "deep_supervision":
        if not isinstance(value, bool):
            raise _bad(name, value, "True or False")
        return value
    if name in ("models", "pretrained"):
        items = tuple(dict.fromkeys(str(m) for m in _listed(value)))
        if unknown := [m for m in items if m not in MODELS]:
            raise _bad(name, value, f"model names from {list(MODELS)} (unknown: {unknown})")
        if name == "models" and not items:
            raise _bad(name, value, "at least one model")
        return items
    if name == "fractions":
        items = sorted({_number(name, f, float) for f in _listed(value)})
        if not items or any(not 0 < f <= 1 or abs(f * 100 - round(f * 100)) > 1e-6 for f in items):
            raise _bad(name, value, "whole percentages in (0, 1], e.g. [0.1, 1.0] or '0.1,1.0'")
        return tuple(items)
    if name == "seeds":
        items = tuple(dict.fromkeys(_number(name, s, int) for s in _listed(value)))
        if not items:
            raise _bad(name, value, "at least one seed")
        return items
    if name in ("model_configs", "model_overrides"):
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict) or not set(value) <= set(MODELS):
            raise _bad(name, value, f"a dict keyed by model names from {list(MODELS)}")
        return {k: dict(v) if name == "model_overrides" else str(v) for k, v in value.items()}
    return str(value)


def _apply(config: RunConfig, overrides: dict) -> RunConfig:
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown}; known settings: {list(FIELDS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "model_overrides" in changes:  # merged per model, not replaced
        merged = {m: dict(v) for m, v in config.model_overrides.items()}
        for model, fields in _convert("model_overrides", changes["model_overrides"]).items():
            merged[model] = {**merged.get(model, {}), **fields}
        changes["model_overrides"] = merged
    if "model_configs" in changes:  # merged per model too: {"unetpp": "r34"} keeps the other models' configs
        changes["model_configs"] = {**config.model_configs, **_convert("model_configs", changes["model_configs"])}
    if "recipe" in changes:  # the recipe's values first, the explicit settings over them
        sized = dataclasses.replace(config, **{k: changes[k] for k in ("models", "model_configs") if k in changes})
        changes = {**recipe_settings(changes["recipe"], sized), **changes}
    return dataclasses.replace(config, **changes)


PROFILES: dict[str, RunConfig] = {
    "smoke": RunConfig(
        name="smoke",
        description="Offline sample, tiny models, 64 px, 1 epoch on the CPU: the path tests take.",
        image_size=64,
        synthetic_count=60,
        model_configs={"unet": "tiny", "unetpp": "tiny", "transunet": "tiny"},
        num_epochs=1,
        batch_size=8,
        amp="off",
        num_workers=0,
    ),
    "demo": RunConfig(
        name="demo",
        description="make demo: the offline sample (200 images), tiny models, 64 px, 10 epochs on the CPU; learns in "
                    "about a minute of training.",
        image_size=64,
        synthetic_count=200,
        # Measured on 2 CPU cores: test Dice 0.87-0.89 at 100 % for all three models, rising with the fraction,
        # 64 s of training for the 12 runs. Batch 4 and lr 3e-3 give the small fractions enough steps.
        model_configs={"unet": "tiny", "unetpp": "tiny", "transunet": "tiny"},
        num_epochs=10,
        batch_size=4,
        lr=3e-3,
        amp="off",
        num_workers=0,
    ),
    "cpu": RunConfig(
        name="cpu",
        description="A laptop or a class without a GPU: 128 px, models of 0.6-1.9 M parameters, 12 epochs.",
        image_size=128,
        synthetic_count=400,
        # Sized so the 12-run grid on the real data takes about 75 minutes on 2 CPU cores
        # (training at 128 px: UNet 32, UNet++ 23, TransUNet 64 images/s there).
        model_configs={"unet": "cpu", "unetpp": "cpu", "transunet": "cpu"},
        num_epochs=12,
        batch_size=16,
        lr=1e-3,  # these small models, trained from scratch for 12 epochs, need more than 1e-4
        amp="off",
        num_workers=0,
    ),
    "t4": RunConfig(
        name="t4",
        description="The reproduction on a 15 GB Colab T4: 256 px, full-size models, 20 epochs, AMP.",
        image_size=256,
        synthetic_count=400,
        model_configs={"unet": "paper", "unetpp": "paper", "transunet": "small"},
        # the original study's recipe (RECIPES["seed"]), the faithful reproduction; `kit` becomes the default here
        # only once the GPU recipe comparison has measured it better
        recipe="seed",
        num_epochs=20,
        batch_size=16,
        amp="auto",
        num_workers=2,
    ),
}


# The class path: the cpu profile's models and recipe, measured on the real data (test Dice 0.77-0.79 at 10 %,
# 0.87-0.89 at 100 %), at two fractions (they keep the data-efficiency lesson), with mixed precision and loader
# workers for a GPU. Its 6 runs trained in 43 minutes on 2 CPU cores (the cpu study); on a T4 about 15 minutes (an
# estimate, not measured: small models at 128 px wait on Colab's 2 loading cores).
PROFILES["class"] = dataclasses.replace(
    PROFILES["cpu"], name="class", fractions=(0.10, 1.00), amp="auto", num_workers=2,
    description="A 90-minute class on a Colab T4: the cpu profile's models and recipe at 10 % and 100 % of the data.")

def default_profile_name() -> str:
    """The profile a notebook takes when its parameter is empty.

    Returns:
        ``$KIT_PROFILE`` when set, else ``t4`` with a CUDA GPU and ``cpu`` without one.
    """
    name = os.environ.get(PROFILE_ENV, "").strip() or "auto"
    if name != "auto":
        return name
    import torch  # imported here: reading a profile should not need torch

    return "t4" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> RunConfig:
    """Look a profile up by name (empty or None: :func:`default_profile_name`).

    Raises:
        ValueError: the name is unknown; the message lists the known ones.
    """
    name = (name or "").strip() or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         f"(set it in the notebook's parameters or ${PROFILE_ENV}).")
    return PROFILES[name]


def resolve_config(profile: str | None = None, **overrides) -> RunConfig:
    """The named profile with some settings replaced.

    Args:
        profile: profile name, or empty for the default (:func:`default_profile_name`).
        **overrides: RunConfig fields, e.g. ``image_size=96, num_epochs=3, weight_decay=0.0``.
            ``None`` means "not set" (the profile's value stays); every other value, 0 included, is used.
            ``model_configs`` and ``model_overrides`` are merged per model into the profile's.

    Returns:
        The resolved, immutable :class:`RunConfig`.

    Raises:
        ValueError: an unknown field (the message lists the known ones) or an invalid value.
    """
    return _apply(get_profile(profile), overrides)
