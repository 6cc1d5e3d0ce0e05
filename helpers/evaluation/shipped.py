"""The three models that come with the kit, on the real images that come with it (notebook 04).

    data = bundled_data()       # the bundled archive at 128 px, seed split 42 (cached)
    scores = test_scores(data)  # per-image test Dice of UNet, UNet++, TransUNet, image factors
    probs, masks = probabilities(shipped_runs()["UNet++"], data, "val")

The models are the committed study ``results/isic2018-task1-512_seed_cpu-kit_cpu-2-cores``, trained
with the ``cpu`` profile on all 1,816 training images of the seed split (split seed 42) of ISIC 2018
Task 1 at 128 px. The bundled archive prepared with the ``cpu`` profile's settings gives the same
split, so its validation and test images are ones the models never trained on. Their per-image test
scores are the study's own ``test_metrics.csv`` (column ``dice``), computed when the study was made,
at 128 px, on the masks of the 512-px copy it was prepared from; the bundled archive is that copy
resized again, so its masks can differ from those by a few border pixels. Nothing here depends on
the profile a notebook runs: the evidence is the same in ``smoke`` as in ``t4``.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import paths, profiles
from helpers.data import sources
from helpers.evaluation import image_factors, inference
from helpers.models import DISPLAY_NAMES
from helpers.training import runs

SHIPPED_STUDY = "isic2018-task1-512_seed_cpu-kit_cpu-2-cores"
NAMES = DISPLAY_NAMES  # unet → UNet, unetpp → UNet++, transunet → TransUNet


def study_dir() -> Path:
    """The committed study that holds the shipped models."""
    return paths.repo_root() / "results" / SHIPPED_STUDY


def shipped_runs() -> dict[str, Path]:
    """Display name (``UNet``, ``UNet++``, ``TransUNet``) → run folder, in that order.

    Raises:
        FileNotFoundError: the study or one of its runs is missing; the message says how to
            restore it.
    """
    found = (
        {
            runs.load_run_config(d)["model"]: d
            for d in sorted((study_dir() / "runs").glob("*/"))
            if (d / "config.json").is_file()
        }
        if (study_dir() / "runs").is_dir()
        else {}
    )
    missing = [NAMES[m] for m in NAMES if m not in found]
    if missing:
        raise FileNotFoundError(
            f"{study_dir()}: no run of {', '.join(missing)}; restore the folder with "
            f"`git checkout -- results/{SHIPPED_STUDY}` (or clone the kit again)."
        )
    return {NAMES[m]: found[m] for m in NAMES}


def bundled_data():
    """The bundled archive prepared with the ``cpu`` profile's settings (128 px, split seed 42)."""
    return sources.ensure_prepared(profiles.resolve_config("cpu"), "bundled")


def split_rows(prepared, split: str) -> np.ndarray:
    """Row numbers of one split (``train``, ``val``, ``test``) in the prepared arrays."""
    return np.flatnonzero(prepared.table["split"].to_numpy() == split)


def test_factors(prepared) -> pd.DataFrame:
    """The :func:`~helpers.evaluation.image_factors.image_factors` of the test images.

    Measured once per preparation and kept beside it (a few seconds saved in each notebook). The
    file's name carries a hash of the measuring code and of the preparation's records, so a changed
    measure, or data prepared again in the same folder, is measured again.
    """
    root = Path(prepared.root)
    digest = hashlib.sha256(Path(image_factors.__file__).read_bytes())
    for record in ("prepared.json", "source_stamp.json", "splits.csv"):
        if (root / record).is_file():
            digest.update((root / record).read_bytes())
    kept = root / f"test_factors_{digest.hexdigest()[:12]}.csv"
    if kept.is_file():
        factors = pd.read_csv(kept, keep_default_na=False, na_values=[""])
        return factors.assign(ita_group=image_factors.ita_group(factors["ita"]))  # a category again
    rows = split_rows(prepared, "test")
    factors = image_factors.image_factors(
        np.asarray(prepared.images[rows]),
        np.asarray(prepared.masks[rows]),
        prepared.table["isic_id"].to_numpy()[rows],
    )
    with contextlib.suppress(OSError):  # a read-only home: measured each time instead
        paths.write_atomic(kept, lambda tmp: factors.to_csv(tmp, index=False))
    return factors


def test_scores(prepared, factors: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-image test Dice of each shipped model (one row per model and image), with the factors.

    Raises:
        ValueError: a study's test images are not the bundled test split (names the file).
    """
    factors = test_factors(prepared) if factors is None else factors
    parts = []
    for name, run in shipped_runs().items():
        scores = pd.read_csv(run / inference.METRICS_FILE, usecols=["isic_id", "dice"])
        if set(scores["isic_id"]) != set(factors["isic_id"]):
            raise ValueError(
                f"{run / inference.METRICS_FILE}: its {len(scores)} test images are not the "
                f"{len(factors)} of the bundled seed split; prepare the archive again "
                f"(delete {prepared.root}) or restore the study with git."
            )
        parts.append(scores.assign(model=name))
    return pd.concat(parts, ignore_index=True).merge(factors, on="isic_id", how="left")


def probabilities(
    run_dir: str | Path, prepared, split: str = "val", count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A run's probabilities on one split of ``prepared``, on the CPU.

    Args:
        count: the first ``count`` images of the split only (the seed split's order is random, so
            they are a fair sample of it); None: all.

    Returns:
        ``(probs float32 (N, S, S), masks bool (N, S, S))``.
    """
    model = runs.load_run_model(run_dir)
    rows = split_rows(prepared, split)[:count]
    probs = np.concatenate([p for _, p, _ in inference.iter_probs(model, prepared.images, rows)])
    return probs, np.asarray(prepared.masks[rows]).astype(bool)


def predict_images(
    run_dir: str | Path, prepared, ids, threshold: float = 0.5
) -> tuple[np.ndarray, ...]:
    """A run's masks for a few images by id.

    Returns:
        ``(images uint8 (K, S, S, 3), truth bool (K, S, S), preds bool (K, S, S))``.
    """
    rows = prepared.table.reset_index().set_index("isic_id").loc[list(ids), "index"].to_numpy()
    model = runs.load_run_model(run_dir)
    probs = np.concatenate([p for _, p, _ in inference.iter_probs(model, prepared.images, rows)])
    return (
        np.asarray(prepared.images[rows]),
        np.asarray(prepared.masks[rows]).astype(bool),
        probs >= threshold,
    )


def worst(scores: pd.DataFrame, model: str = "UNet++", count: int = 6) -> pd.DataFrame:
    """The ``count`` test images with the lowest Dice of one model, with their factors."""
    mine = scores[scores["model"] == model]
    return mine.nsmallest(count, "dice").reset_index(drop=True)
