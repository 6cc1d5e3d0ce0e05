"""The named training recipes (:data:`RECIPES`: ``seed``, the original study's; ``kit``, the kit's own) and
the reasoning behind their values.

A recipe sets the optimisation settings of a run (lr, weight decay, warm-up, schedule, augmentation; epochs for
``seed``); the profile (:mod:`helpers.profiles`) sets the rest (sizes, models, hardware). ``custom`` is no recipe:
a profile's own values. :func:`recipe_settings` gives the values a recipe sets for a config; ``resolve_config(...,
recipe=NAME)`` applies them under any explicit setting. This module imports neither torch nor helpers.profiles.
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL_CONFIGS = ("tiny", "cpu")  # model configs of up to ~2 M parameters (helpers.models' registry)


@dataclass(frozen=True)
class Recipe:
    """A named training recipe: the optimisation settings it gives any profile's runs.

    Attributes:
        name: ``seed`` or ``kit``.
        description: one line for people.
        settings: RunConfig fields it sets (lr, weight decay, warm-up, schedule, augmentation; epochs for ``seed``).
        small_model_lr: the peak lr instead of ``settings["lr"]`` when every model of the profile is small
            (:data:`SMALL_CONFIGS`); None: the same lr for every size.
    """

    name: str
    description: str
    settings: dict
    small_model_lr: float | None = None


RECIPES: dict[str, Recipe] = {
    "seed": Recipe("seed", "The original study's: 20 epochs, AdamW lr 1e-4, weight decay 1e-4, cosine without "
                           "warm-up, flips/rotations/colour jitter (the kit's augmentation stands for it).",
                   {"num_epochs": 20, "lr": 1e-4, "weight_decay": 1e-4, "warmup_epochs": 0.0, "schedule": "cosine",
                    "augment": "kit"}),
    # `kit` was measured on the CPU for the small models (results/benchmarks/recipes-cpu.csv, docs/results.md "Recipes,
    # measured on the CPU"): UNet++ `cpu` on the real data at 10 % scored 0.791 against 0.774 without the warm-up
    # (paired difference +0.017, CI [0.010, 0.025]) and 0.727 with `seed`; at 100 % every recipe's difference lay
    # inside its CI. So the `cpu` and `class` profiles use it. For the full-size models (256 px, 3e-4) it is still a
    # CANDIDATE until the GPU recipe comparison (python -m helpers.tools.gpu_window, step c) measures it:
    # - t4 study (results/isic2018-task1-256_seed_t4_nvidia-h200, the `seed` recipe): UNet and UNet++ `paper` at 100 %
    #   (and UNet at 50 %) had their best validation Dice at epoch 20 of 20 (0.879, 0.862), still rising when the
    #   cosine reached 0: at lr 1e-4, 20 epochs leave these models short of converged.
    # - Full-size models (9-31 M parameters, 256 px): 3e-4, between the two measured rates. Wider layers change
    #   their output more for the same AdamW step, so the larger models get the smaller rate; 1e-3 at that size,
    #   untested and in fp16 on a T4, is a risk for the comparison to take, not for the default.
    # - A 1-epoch linear warm-up (5 % of 20 epochs): the higher rate starts while AdamW's moment estimates, the
    #   batch-norm statistics and (on a T4) fp16's loss scale are still settling.
    # - Cosine to 0, weight decay 1e-4, the augmentation and the profile's epochs as in `seed`.
    "kit": Recipe("kit", "The kit's recipe (measured for the cpu profile; a candidate at full size): "
                         "AdamW peak lr 3e-4 (1e-3 for the small `cpu`/`tiny` models), "
                         "1-epoch linear warm-up, cosine, weight decay 1e-4, the profile's epochs.",
                  {"lr": 3e-4, "weight_decay": 1e-4, "warmup_epochs": 1.0, "schedule": "cosine", "augment": "kit"},
                  small_model_lr=1e-3),
}
RECIPE_NAMES = (*RECIPES, "custom")  # the values of RunConfig.recipe; custom: a profile's own values


def recipe_settings(name: str, config) -> dict:
    """The RunConfig values recipe ``name`` gives ``config`` (``custom``: none, the profile's own stay).

    Args:
        name: a name of :data:`RECIPE_NAMES`.
        config: a :class:`~helpers.profiles.RunConfig` (its ``models`` and ``model_configs`` decide the lr).

    Raises:
        ValueError: an unknown recipe name; the message lists the known ones.
    """
    if name not in RECIPE_NAMES:
        raise ValueError(f"RECIPE = {name!r} is not valid: expected one of {list(RECIPE_NAMES)}.")
    if name == "custom":
        return {}
    recipe = RECIPES[name]
    small = all(config.model_configs.get(m, "paper") in SMALL_CONFIGS for m in config.models)
    lr = recipe.small_model_lr if small and recipe.small_model_lr is not None else recipe.settings.get("lr")
    return {**recipe.settings, **({"lr": lr} if lr is not None else {})}
