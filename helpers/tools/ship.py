"""Put trained models in the box: a run's best weights as a small fp16 file, with a model card, into the run's
folder of a committed study; and the Dice of a shipped model when it predicts through ``predict``.

    python -m helpers.tools.ship RUN STUDY_RUN            # RUN's best.pt → STUDY_RUN/checkpoints/best.pt (fp16)
    python -m helpers.tools.ship --check-predict STUDY_RUN [--images N]

RUN is a finished run folder with its checkpoint; STUDY_RUN is the folder of the same run in a committed study
(``results/<study>/runs/<run id>``): the weights must come from a run with the same result-changing settings, or
they are refused. The file holds ``{"model": state dict, "best_metric", "epoch", "weights_dtype": "float16"}``:
floating-point tensors in fp16 (half the bytes), integer buffers as they are; the kit loads it like any ``best.pt``
(the weights become fp32 on loading). ``MODEL_CARD.md`` goes beside ``config.json``.

``--check-predict`` runs ``predict`` (:func:`helpers.evaluation.predict.predict`) on the original image files of the
run's test split, as a user would on their own photos, and scores the masks it writes against the original masks:
per-image Dice at the original size, to compare with the study's ``dice_orig``. It needs the prepared data and the
original files on this machine.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from helpers import cli, paths
from helpers.evaluation import export, inference, predict, stats
from helpers.evaluation.model_card import write_model_card
from helpers.evaluation.predict_files import OUTPUTS
from helpers.training import runs
from helpers.training.checkpoints import load_checkpoint

SAME = ("model", "model_config", "model_overrides", "fraction", "image_size", "seed", "protocol", "dataset",
        "num_epochs", "batch_size", "lr", "weight_decay", "warmup_epochs")


def half_weights(weights: dict) -> dict:
    """A state dict with its floating-point tensors in fp16 and every other tensor as it is."""
    return {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}


def check_same_run(run_dir: Path, study_run: Path) -> None:
    """Refuse weights whose run differs from the study's run in a result-changing setting (both named)."""
    mine, theirs = runs.load_run_config(run_dir), runs.load_run_config(study_run)
    differ = [f"{k}: {mine.get(k)!r} here, {theirs.get(k)!r} in the study" for k in SAME
              if k in theirs and mine.get(k) != theirs.get(k)]
    if differ:
        raise ValueError(f"{run_dir / 'config.json'} is not the run of {study_run / 'config.json'} ("
                         f"{'; '.join(differ)}): ship the weights of a run trained with the study's settings.")


def ship_model(run_dir: str | Path, study_run: str | Path) -> Path:
    """Write ``run_dir``'s best weights in fp16 to ``study_run/checkpoints/best.pt`` and its model card.

    Returns:
        The path of the weights file.

    Raises:
        FileNotFoundError: either folder has no ``config.json``, or ``run_dir`` has no best checkpoint.
        ValueError: the two runs differ in a result-changing setting.
    """
    run_dir, study_run = Path(run_dir), Path(study_run)
    check_same_run(run_dir, study_run)
    best = runs.best_checkpoint(run_dir)
    if best is None:
        raise FileNotFoundError(f"{run_dir} has no best.pt: train the run first (python -m helpers.training).")
    state = load_checkpoint(best)
    shipped = {"model": half_weights(state["model"]), "best_metric": state.get("best_metric"),
               "epoch": state.get("epoch"), "weights_dtype": "float16"}
    target = paths.write_atomic(study_run / "checkpoints" / "best.pt", lambda tmp: torch.save(shipped, tmp))
    write_card(study_run)
    return target


def write_card(study_run: str | Path) -> Path:
    """(Re)write a shipped run's ``MODEL_CARD.md`` from its folder (after the card's format changed, too).

    Raises:
        FileNotFoundError: the folder has no ``config.json`` or no shipped ``checkpoints/best.pt``.
    """
    study_run = Path(study_run)
    _, metadata = export.prepare(study_run)  # loads the shipped file back: it must fit the study's config
    target = study_run / "checkpoints" / "best.pt"
    return write_model_card(study_run, metadata, {"fp16 state dict (torch.load, weights_only=True)": target}, study_run)


def test_files(run_dir: Path, count: int | None = None) -> pd.DataFrame:
    """``isic_id``, ``image_path`` and ``mask_path`` of the run's test images (the first ``count``)."""
    prepared = runs.load_run_data(run_dir)
    table = prepared.table.iloc[prepared.indices("test")][["isic_id", "image_path", "mask_path"]]
    table = table.head(count) if count else table
    missing = [p for p in table["image_path"].tolist() + table["mask_path"].tolist() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} (and {len(missing) - 1} more) is not here: --check-predict needs the "
                                f"original files the run's data was prepared from.")
    return table.reset_index(drop=True)


def predict_dice(run_dir: str | Path, count: int | None = None) -> dict:
    """Predict the run's test images through ``predict`` and score its masks against the originals.

    Returns:
        ``{"n", "dice_mean", "dice_ci_low", "dice_ci_high", "scores"}`` (``scores``: per-image, by ``isic_id``).
    """
    run_dir = Path(run_dir)
    files = test_files(run_dir, count)
    with tempfile.TemporaryDirectory() as out:
        done = predict.predict(run_dir, files["image_path"].tolist(), out, progress=False)
        by_file = dict(zip(done["file"], done["id"]))
        dice = []
        for image_path, mask_path in zip(files["image_path"], files["mask_path"]):
            with Image.open(Path(out) / f"{by_file[str(image_path)]}{OUTPUTS[0]}") as written:
                pred = np.asarray(written) > 127
            with Image.open(mask_path) as truth:
                mask = np.asarray(truth.convert("L")) > 127
            dice.append(float(inference.score_images(pred[None], mask[None], with_hd95=False)["dice"].iloc[0]))
    scores = pd.Series(dice, index=files["isic_id"], name="dice")
    low, high = stats.bootstrap_ci(scores.to_numpy())
    return {"n": len(scores), "dice_mean": float(scores.mean()), "dice_ci_low": low, "dice_ci_high": high,
            "scores": scores}


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tools.ship``: errors as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.ship",
                                     description="Ship a run's best weights (fp16) and model card into a committed "
                                                 "study's run folder, or check a shipped model through predict.")
    parser.add_argument("run", help="the trained run folder (or, with --check-predict, the study's run folder)")
    parser.add_argument("study_run", nargs="?", help="the same run's folder in a committed study")
    parser.add_argument("--check-predict", action="store_true", help="Dice of RUN through predict on its test images")
    parser.add_argument("--images", type=int, default=None, help="with --check-predict: only the first N test images")
    parser.add_argument("--card", action="store_true", help="only write RUN's model card again (a shipped run's folder)")
    cli.add_device(parser)
    args = cli.add_debug(parser).parse_args(argv)
    cli.use_device(args.device)
    if args.card:
        print(f"✓ {write_card(args.run)}")
        return 0
    if args.check_predict:
        found = predict_dice(args.run, args.images)
        print(f"✓ {found['n']} test images through predict: Dice {found['dice_mean']:.4f} "
              f"[{found['dice_ci_low']:.4f}, {found['dice_ci_high']:.4f}] at the original size")
        return 0
    if not args.study_run:
        raise cli.BadValue("give the study's run folder (STUDY_RUN) to ship into, or --check-predict.")
    target = ship_model(args.run, args.study_run)
    print(f"✓ {target} ({target.stat().st_size / 1e6:.2f} MB) and {target.parent.parent / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
