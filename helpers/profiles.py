"""One typed run config whose fields declare every setting once, and the named profiles that fill it.

Every setting of a study's runs is a field of :class:`RunConfig`, declared with :func:`setting`: its type,
help text, choices or range, command-line flag, and whether it changes a run's result. Everything else is
derived from those declarations (:data:`SETTINGS`): the training CLI and its ``--help``
(:mod:`helpers.training.grid`), the run spec and its id (:mod:`helpers.training.runs`), the check of the
notebooks' ``SETTINGS`` and the parameter table (:mod:`helpers.data.study`). Adding a setting means one field here
(and, if students should see it, a line in a notebook's parameters cell). A profile is a named RunConfig:

    cfg = resolve_config(PROFILE, image_size=IMAGE_SIZE, lr=LR)   # None means "not set"; 0 is a value
    cfg = resolve_config("t4", recipe="kit")    # a named recipe's values, under any explicit setting

A recipe (:data:`~helpers.recipes.RECIPES`: ``seed``, the original study's; ``kit``, the kit's own) is
named apart from the profiles: it sets the optimisation settings, the profile the rest (sizes, models, hardware).
Unknown fields are refused with the list of known ones, and values are checked and converted
(``"unet,unetpp"`` and ``["unet", "unetpp"]`` are the same models; ``"0.1,1.0"`` the same fractions).
The profile name defaults to ``$KIT_PROFILE``; without it, ``auto`` picks ``t4`` on Colab or with a CUDA
GPU, and ``cpu`` otherwise. Nothing in this module imports torch at import time.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from dataclasses import dataclass

from helpers.recipes import RECIPE_NAMES, recipe_settings
from helpers.recipes import RECIPES as RECIPES  # importable from here too, as before the split
from helpers.recipes import SMALL_CONFIGS as SMALL_CONFIGS
from helpers.recipes import Recipe as Recipe

PROFILE_ENV = "KIT_PROFILE"
FRACTIONS = (0.10, 0.25, 0.50, 1.00)
MODELS = ("unet", "unetpp", "transunet")


def setting(help: str, default=dataclasses.MISSING, *, factory=dataclasses.MISSING, result: bool = True,
            flag: str | None = "", per_run: bool = False, choices: tuple = (), minimum: float | None = None,
            above: float | None = None, multiple_of: int | None = None, hint: str = "",
            maximum: float | None = None, neutral: bool = False) -> dataclasses.Field:
    """A :class:`RunConfig` field with everything else derives from it: the CLI, the notebooks, the run id, the docs.

    Args:
        help: one line for people (``--help``, the parameter table, error messages).
        default, factory: the value when a profile does not set one (``factory`` for dicts).
        result: the setting changes a run's result, so it is part of the run id.
        flag: the command-line option; ``""``: ``--`` and the name with dashes; None: no option.
        per_run: copied unchanged into every run's spec (:class:`helpers.training.runs.RunSpec`).
        choices: the allowed values (empty: any value of the field's type).
        minimum, above: the smallest allowed value, or the value it must exceed.
        maximum: the largest allowed value.
        multiple_of: a whole number the value must be a multiple of (image sides).
        hint: what an invalid value's error says is expected (default: made from the checks above).
        neutral: at its default the setting is left out of the run id, so runs made before it
            existed keep their ids.
    """
    meta = {"help": help, "result": result, "flag": flag, "per_run": per_run, "choices": tuple(choices),
            "minimum": minimum, "above": above, "multiple_of": multiple_of,
            "hint": hint, "maximum": maximum, "neutral": neutral}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


SEED_MAX = 2**32 - 1  # the largest seed NumPy takes


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a study's runs, each declared once, with its metadata (see :func:`setting`).

    ``name`` and ``description`` label a profile; every other field is a setting. Its help text, choices,
    range, command-line flag and whether it changes a result are declared beside it: the training CLI and its
    ``--help``, the notebooks' ``SETTINGS`` check, the run spec and run id, and the parameter table of
    ``notebooks/README.md`` are all derived from these declarations (:data:`SETTINGS`).
    """

    name: str
    description: str
    image_size: int = setting("side of the square training images, in pixels", flag="--image-size", above=0,
                              multiple_of=16)
    synthetic_count: int = setting("how many images the offline (synthetic) sample draws", flag=None, above=0,
                                   default=400)
    data_subset: int | None = setting("draw this many image/mask pairs of a real data source at random (seeded by the "
                                      "split seed) before splitting; None: all of them", flag=None, default=None,
                                      above=0, hint="a whole number above 0, or None for all pairs")
    split_seed: int = setting("seed of the train/val/test split and of the nested fractions", default=42, minimum=0,
                              maximum=SEED_MAX)
    models: tuple = setting("the models the grid trains (a list, or comma-separated)", default=MODELS,
                            choices=MODELS)
    fractions: tuple = setting("training fractions of the grid, each a whole percentage in (0, 1], e.g. [0.1, 1.0]",
                               default=FRACTIONS)
    seeds: tuple = setting("initialisation, batch-order and augmentation seed(s): one run each", default=(42,),
                            minimum=0, maximum=SEED_MAX)
    model_configs: dict = setting("model -> named config of the model registry, e.g. {\"unetpp\": \"r34\"}",
                                  factory=dict, flag=None)
    model_overrides: dict = setting("model -> config fields changed on top of the named config", factory=dict,
                                    flag=None)
    deep_supervision: bool = setting("UNet++: a loss on every head x_0_1 ... x_0_4", default=True,
                                     flag="--no-deep-supervision")
    pretrained: tuple = setting("models that start from ImageNet weights (transunet; unet/unetpp with r34)",
                                default=(), choices=MODELS)
    num_epochs: int = setting("training epochs per run", default=20, flag="--epochs", per_run=True, above=0)
    batch_size: int = setting("images per optimisation step (the global batch under torchrun)", default=16,
                              per_run=True, above=0)
    lr: float = setting("peak AdamW learning rate", default=1e-4, per_run=True, above=0)
    weight_decay: float = setting("AdamW weight decay", default=1e-4, per_run=True, minimum=0)
    warmup_epochs: float = setting("linear learning-rate warm-up, in epochs (may be fractional)", default=0.0,
                                   per_run=True, minimum=0)
    schedule: str = setting("learning-rate schedule: cosine (per-step decay to 0) or constant", default="cosine",
                            per_run=True, choices=("cosine", "constant"))
    augment: str = setting("augmentation: kit (flips, 90-degree turns, mild affine, colour jitter) or none",
                           default="kit", per_run=True, choices=("kit", "none"))
    amp: str = setting("mixed precision on CUDA: auto (bf16 where supported, else fp16), bf16, fp16 (always with "
                       "a gradient scaler: the T4 path) or off", default="auto", per_run=True,
                       choices=("auto", "bf16", "fp16", "off"))
    gpu_memory_gb: float | None = setting("the most GPU memory a run may use, in GB; 15 with amp fp16 emulates a "
                                          "T4; None: all of it", default=None, result=False, above=0,
                                          hint="a number of GB above 0, e.g. 15 (a T4's), or None for no cap")
    early_stopping: int | None = setting("stop after this many epochs without a better validation Dice (None: "
                                         "never)", default=None, per_run=True, minimum=0)
    ema_epochs: float = setting("average the weights over about this many epochs (an exponential moving average) "
                                "and validate, keep and test the average; 0: off", default=0.0, per_run=True,
                                minimum=0, neutral=True)
    num_workers: int = setting("DataLoader worker processes", default=2, result=False, minimum=0)
    checkpoint_minutes: float | None = setting("also save last.pt within an epoch this often, in minutes (None: "
                                               "after each epoch only)", default=None, result=False, minimum=0)
    recipe: str = setting("where the optimisation settings come from: seed (the original study's), kit (the "
                          "kit's: a warm-up and a higher rate) or custom (the profile's own values); a label in each "
                          "run's config",
                          default="custom", result=False, per_run=True, choices=RECIPE_NAMES)

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
SETTINGS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig) if "help" in f.metadata}
CHOICES = {name: f.metadata["choices"] for name, f in SETTINGS.items() if f.metadata["choices"] and
           f.type == "str"}  # the settings that take one of a few words
PER_RUN = tuple(name for name, f in SETTINGS.items() if f.metadata["per_run"])  # copied into each run's spec
_LISTS = {name for name, f in SETTINGS.items() if f.type == "tuple"}
_DICTS = {name for name, f in SETTINGS.items() if f.type == "dict"}


def option(name: str) -> str | None:
    """The command-line option of setting ``name`` (None: it has none)."""
    flag = SETTINGS[name].metadata["flag"]
    return "--" + name.replace("_", "-") if flag == "" else flag


def describe_setting(name: str) -> str:
    """One line for people: the help text, the choices or range, and each profile's value."""
    meta = SETTINGS[name].metadata
    parts = [meta["help"]]
    if meta["choices"]:
        parts.append("one of " + ", ".join(map(str, meta["choices"])))
    if meta["multiple_of"]:
        parts.append(f"a multiple of {meta['multiple_of']}")
    if not meta["result"]:
        parts.append("does not change results")
    values = {p: _shown(getattr(c, name)) for p, c in PROFILES.items()}
    shown = values[next(iter(values))] if len(set(values.values())) == 1 else \
        ", ".join(f"{p} {v}" for p, v in values.items())
    return "; ".join(parts) + f" (default: {shown})"


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "{}"
    return str(value)


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
    """``value`` as an int or a finite float, checked against the range that setting ``name`` declares."""
    meta = SETTINGS[name].metadata if name in SETTINGS else {}
    hint = meta.get("hint")
    if isinstance(value, bool) or value is None:
        raise _bad(name, value, hint or f"a {kind.__name__}")
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
        raise _bad(name, value, hint or f"a {'whole number' if kind is int else 'number'}") from None
    if not math.isfinite(number):
        raise _bad(name, value, hint or "a finite number")
    if meta.get("above") is not None and number <= meta["above"]:
        raise _bad(name, value, hint or f"a number above {meta['above']:g}")
    if meta.get("minimum") is not None and number < meta["minimum"]:
        raise _bad(name, value, hint or f"a number of at least {meta['minimum']:g}")
    if meta.get("maximum") is not None and number > meta["maximum"]:
        low = meta.get("minimum") if meta.get("minimum") is not None else "-inf"
        raise _bad(name, value, hint or f"a whole number from {low} to {meta['maximum']}")
    if meta.get("multiple_of") and number % meta["multiple_of"]:
        step = meta["multiple_of"]
        raise _bad(name, value, f"a multiple of {step}, which the models' poolings need (e.g. "
                                f"{max(step, round(number / step) * step)})")
    return number


def _convert(name: str, value):
    """``value`` checked and converted to the type that field ``name`` declares."""
    kind = SETTINGS[name].type if name in SETTINGS else "str"
    optional = kind.endswith("| None")
    if optional and value is None:
        return None
    kind = kind.removesuffix(" | None")
    if kind in ("int", "float"):
        return _number(name, value, int if kind == "int" else float)
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise _bad(name, value, f"one of {list(CHOICES[name])}")
        return value
    if kind == "bool":
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
    if kind == "dict":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _bad(name, value, "a JSON dict, e.g. {\"unetpp\": \"r34\"}") from None
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
        description="make demo: 300 real lesions drawn from the bundled archive, tiny models, 64 px, 7 epochs at "
                    "10 % and 100 % of the data, on the CPU.",
        image_size=64,
        synthetic_count=200,
        data_subset=300,
        # Sized for make demo in about 3 minutes on 2 CPU cores, training included (results/demo_notebooks/README.md
        # has the measured time and test Dice). Two fractions keep the data-efficiency lesson at half the cost of four;
        # batch 8 halves the steps (the tiny models are overhead-bound at 64 px), lr 3e-3 lets 7 epochs learn.
        model_configs={"unet": "tiny", "unetpp": "tiny", "transunet": "tiny"},
        fractions=(0.10, 1.00),
        num_epochs=7,
        batch_size=8,
        lr=3e-3,
        amp="off",
        num_workers=0,
    ),
    "cpu": RunConfig(
        name="cpu",
        description="A laptop or a class without a GPU: 128 px, models of 0.6-1.9 M parameters, 16 epochs.",
        image_size=128,
        synthetic_count=400,
        # Sized so the 12-run grid on the real data took 81 minutes at 12 epochs on 2 CPU cores (training at
        # 128 px: UNet 32, UNet++ 23, TransUNet 64 images/s there); at 16 epochs about 110 minutes (an estimate).
        model_configs={"unet": "cpu", "unetpp": "cpu", "transunet": "cpu"},
        # the `kit` recipe, chosen from the measured recipe table (results/benchmarks/recipes-cpu.csv): peak lr 1e-3
        # after a 1-epoch warm-up, cosine to 0; these small models, trained from scratch, need more than 1e-4.
        # 16 epochs: UNet++ with kit scored 0.809 against 0.791 at 10 % and 0.890 against 0.886 at 100 % with 12
        # (paired differences +0.018 [0.012, 0.025] and +0.004 [0.000, 0.008], both beyond the CI).
        recipe="kit",
        num_epochs=16,
        batch_size=16,
        lr=1e-3,
        warmup_epochs=1.0,
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
# 0.87-0.89 at 100 %; with the kit recipe UNet++ 0.791 at 10 %), at two fractions (they keep the data-efficiency
# lesson), with mixed precision and loader workers for a GPU. Its 6 runs trained in 43 minutes on 2 CPU cores (the
# cpu study); on a T4 about 15 minutes (an estimate, not measured: small models at 128 px wait on Colab's 2 loading
# cores). It keeps 12 epochs: a lesson's time is fixed, and 16 epochs cost a third more time for +0.004 at 100 %.
PROFILES["class"] = dataclasses.replace(
    PROFILES["cpu"], name="class", fractions=(0.10, 1.00), amp="auto", num_workers=2, num_epochs=12,
    description="A 90-minute class on a Colab T4: the cpu profile's models and recipe at 10 % and 100 % of the data.")

# The data each profile takes when DATA_SOURCE is empty: the bundled 128-px ISIC archive wherever it can serve the
# profile's image size, the official download for the 256-px reproduction, the synthetic sample for the tests.
DEFAULT_DATA = {"smoke": "synthetic", "demo": "bundled", "cpu": "bundled", "class": "bundled", "t4": "isic2018"}


def default_data_source(profile: str) -> str:
    """The data source a profile takes when none is given (:data:`DEFAULT_DATA`; ``bundled`` for others)."""
    return DEFAULT_DATA.get(profile, "bundled")


def default_profile_name() -> str:
    """The profile a notebook takes when its parameter is empty.

    Returns:
        ``$KIT_PROFILE`` when set, else ``class`` on Colab (whatever the runtime: notebook 01 needs no GPU) or
        with a CUDA GPU: real lesions from the bundled archive in minutes; ``cpu`` otherwise. The paper-scale
        study is ``t4`` (256 px, the official download).
    """
    name = os.environ.get(PROFILE_ENV, "").strip() or "auto"
    if name != "auto":
        return name
    if importlib.util.find_spec("google") and importlib.util.find_spec("google.colab"):
        return "class"  # on Colab, even in notebook 01 on a CPU runtime
    import torch  # optional here: reading a profile should not need torch

    return "class" if torch.cuda.is_available() else "cpu"


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
