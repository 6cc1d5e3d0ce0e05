"""Named run profiles (`smoke`, `cpu`, `t4`) and the typed config they fill.

A profile bundles every setting that depends on the hardware at hand: image size, model
widths, epochs, batch size, mixed precision, loader workers and the size of the offline
sample. Notebooks take one profile by name and may override any field:

    cfg = resolve_profile(PROFILE, image_size=IMAGE_SIZE)   # None overrides are ignored

The profile name defaults to the environment variable ``KIT_PROFILE`` so that tools which
cannot inject parameters (nbval, a plain Jupyter session) still take the path you chose;
without it, ``auto`` picks ``t4`` when a CUDA GPU is present and ``cpu`` otherwise.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

PROFILE_ENV = "KIT_PROFILE"
FRACTIONS = (0.10, 0.25, 0.50, 1.00)


@dataclass(frozen=True)
class Profile:
    """Every hardware-dependent setting of a run.

    Attributes:
        name: profile name (`smoke`, `cpu`, `t4`).
        description: one line for people.
        image_size: side of the square training images, in pixels.
        synthetic_count: how many images the offline sample generates.
        model_configs: model name -> named configuration in the model registry.
        model_overrides: model name -> config fields changed on top of the named one.
        num_epochs: training epochs per run.
        batch_size: images per optimisation step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        amp: mixed precision on CUDA (fp16 where bf16 is unsupported, as on a T4).
        num_workers: DataLoader worker processes.
        fractions: training-data fractions of the grid (nested, ascending).
        models: the models the grid trains.
    """

    name: str
    description: str
    image_size: int
    synthetic_count: int
    model_configs: dict = field(default_factory=dict)
    model_overrides: dict = field(default_factory=dict)
    num_epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    amp: bool = True
    num_workers: int = 2
    fractions: tuple = FRACTIONS
    models: tuple = ("unet", "unetpp", "transunet")

    def as_dict(self) -> dict:
        """Plain-dict copy (for config files and checkpoints)."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="Offline sample, tiny models, 64 px, 1 epoch on the CPU: the path tests take.",
        image_size=64,
        synthetic_count=60,
        model_configs={"unet": "tiny", "unetpp": "tiny", "transunet": "tiny"},
        num_epochs=1,
        batch_size=8,
        amp=False,
        num_workers=0,
    ),
    "cpu": Profile(
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
        amp=False,
        num_workers=0,
    ),
    "t4": Profile(
        name="t4",
        description="The reproduction on a 15 GB Colab T4: 256 px, full-size models, 20 epochs, AMP.",
        image_size=256,
        synthetic_count=400,
        model_configs={"unet": "paper", "unetpp": "paper", "transunet": "small"},
        num_epochs=20,
        batch_size=16,
        amp=True,
        num_workers=2,
    ),
}


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


def get_profile(name: str | None = None) -> Profile:
    """Look a profile up by name (empty or None: :func:`default_profile_name`).

    Raises:
        ValueError: the name is unknown; the message lists the known ones.
    """
    name = (name or "").strip() or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         f"(set it in the notebook's parameters or ${PROFILE_ENV}).")
    return PROFILES[name]


def resolve_profile(name: str | None = None, **overrides) -> Profile:
    """A profile with the given fields replaced; ``None`` or ``0`` overrides keep the profile value.

    Args:
        name: profile name or empty for the default.
        **overrides: Profile fields, e.g. ``image_size=96, num_epochs=3``.

    Returns:
        The resolved, immutable :class:`Profile`.

    Raises:
        ValueError: a field name is not a Profile field.
    """
    profile = get_profile(name)
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown profile field(s) {unknown}; known fields: {sorted(known)}")
    changes = {k: v for k, v in overrides.items() if v is not None and not (v == 0 and v is not False)}
    if "fractions" in changes:
        changes["fractions"] = tuple(sorted(float(f) for f in changes["fractions"]))
    return dataclasses.replace(profile, **changes)
