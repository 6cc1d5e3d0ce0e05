"""What the worst test cases of a run have in common: measurable attributes of every test image beside its score.

    table = failure_table(run_dir)        # one row per test image
    failure_summary(table)                # the worst tenth against the rest
    describe_failures(table)              # the same in sentences, for the report

Attributes, all from the prepared (training-size) images, the ground truth and the saved predictions:

- ``lesion_pct``: the true lesion's share of the image; ``pred_pct``: the prediction's.
- ``touches_edge``: the true lesion reaches the image border (cut off by the crop: it may run on outside).
- ``dark_frame``: more than a quarter of the outer tenth of the image is nearly black (CIELAB L < 40 of
  255): the dark round border of a dermatoscope, or a dark photo corner.
- ``contrast``: Euclidean distance between the mean CIELAB colours of lesion and surrounding skin
  (OpenCV's 8-bit Lab scale): low means the lesion is hard to tell from the skin.
- ``error``: ``missed`` (Dice < 0.1 and at most a third of the lesion's area predicted), ``too small``
  (more false negatives than false positives), ``too large`` (the opposite), or ``ok`` (Dice ≥ 0.8).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.evaluation import inference, scoring
from helpers.training import runs

WORST_SHARE = 0.10  # the share of test images called "worst"


def rows_of(prepared, ids) -> np.ndarray:
    """Row numbers in the prepared arrays of the given ISIC ids."""
    return prepared.table.reset_index().set_index("isic_id").loc[list(ids), "index"].to_numpy()


def _contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Lab distance between the mean lesion colour and the mean skin colour (NaN if either is absent)."""
    if mask.all() or not mask.any():
        return float("nan")
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    inside = mask.reshape(-1).astype(bool)
    return float(np.linalg.norm(lab[inside].mean(0) - lab[~inside].mean(0)))


def _dark_frame(image: np.ndarray) -> bool:
    """More than a quarter of the outer tenth of the image is nearly black."""
    light = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)[..., 0]
    edge = max(1, light.shape[0] // 10)
    frame = np.ones(light.shape, bool)
    frame[edge:-edge, edge:-edge] = False
    return bool((light[frame] < 40).mean() > 0.25)


def _error_kind(dice: float, fp: int, fn: int, true_area: int, pred_area: int) -> str:
    if dice >= 0.8:
        return "ok"
    if dice < 0.1 and pred_area <= true_area / 3:
        return "missed"
    return "too small" if fn > fp else "too large"


def failure_table(run_dir: str | Path, prepared=None) -> pd.DataFrame:
    """Per-image scores of an evaluated run with the attributes above, worst first.

    Args:
        run_dir: an evaluated run folder (``test_metrics.csv`` and ``test_preds.npz``).
        prepared: its prepared dataset if already open (default: the one its config names).

    Raises:
        FileNotFoundError: the run has not been evaluated (the message says to run notebook 04).
    """
    run_dir = Path(run_dir)
    prepared = prepared or runs.load_run_data(run_dir)
    ids, preds = inference.load_predictions(run_dir)
    scores = pd.read_csv(run_dir / inference.METRICS_FILE).set_index("isic_id").loc[ids]
    rows = rows_of(prepared, ids)
    out = []
    for k, (isic_id, row) in enumerate(zip(ids, rows)):
        mask, pred, image = prepared.masks[row].astype(bool), preds[k], prepared.images[row]
        fp, fn = int((pred & ~mask).sum()), int((~pred & mask).sum())
        edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        dice = float(scores.loc[isic_id, "dice"])
        out.append({"isic_id": isic_id, "dice": dice, "lesion_pct": 100 * mask.mean(), "pred_pct": 100 * pred.mean(),
                    "touches_edge": bool(edge.any()), "dark_frame": _dark_frame(image), "contrast": _contrast(image, mask),
                    "error": _error_kind(dice, fp, fn, int(mask.sum()), int(pred.sum()))})
    return pd.DataFrame(out).sort_values("dice", kind="stable").reset_index(drop=True)


def failure_summary(table: pd.DataFrame, share: float = WORST_SHARE) -> pd.DataFrame:
    """The worst ``share`` of images against the rest: median attributes and how often each kind of error occurs."""
    n_worst = max(1, int(round(share * len(table))))
    groups = {f"worst {100 * share:g} % ({n_worst})": table.iloc[:n_worst],
              f"rest ({len(table) - n_worst})": table.iloc[n_worst:]}
    rows = []
    for name, part in groups.items():
        kinds = part["error"].value_counts(normalize=True)
        rows.append({"images": name, "median Dice": part["dice"].median(),
                     "median lesion %": part["lesion_pct"].median(),
                     "lesion < 5 % of image": (part["lesion_pct"] < 5).mean(),
                     "lesion touches edge": part["touches_edge"].mean(),
                     "dark frame": part["dark_frame"].mean(),
                     "median contrast": part["contrast"].median(),
                     **{f"{kind}": kinds.get(kind, 0.0) for kind in ("missed", "too small", "too large")}})
    return pd.DataFrame(rows)


def describe_failures(table: pd.DataFrame, share: float = WORST_SHARE) -> str:
    """Sentences on what the worst images have in common, with the numbers that say so."""
    if len(table) < 10:
        return f"Only {len(table)} test images: too few to say what the failures have in common."
    worst, rest = failure_summary(table, share).to_dict("records")
    kinds = {k: worst[k] for k in ("missed", "too small", "too large")}
    main = max(kinds, key=kinds.get)
    ratio = worst["median contrast"] / rest["median contrast"] if rest["median contrast"] else float("nan")
    lines = [
        f"The worst {100 * share:g} % of test images ({worst['images'].split('(')[1].rstrip(')')} images, "
        f"median Dice {worst['median Dice']:.3f} against {rest['median Dice']:.3f} for the rest):",
        f"- lesion size: median {worst['median lesion %']:.1f} % of the image against {rest['median lesion %']:.1f} %; "
        f"{100 * worst['lesion < 5 % of image']:.0f} % of them are small lesions (< 5 % of the image) against "
        f"{100 * rest['lesion < 5 % of image']:.0f} %;",
        f"- lesion cut by the image border: {100 * worst['lesion touches edge']:.0f} % against "
        f"{100 * rest['lesion touches edge']:.0f} %;",
        f"- dark frame (dermatoscope border or dark corners): {100 * worst['dark frame']:.0f} % against "
        f"{100 * rest['dark frame']:.0f} %;",
        f"- colour contrast between lesion and skin (CIELAB distance): median {worst['median contrast']:.1f} against "
        f"{rest['median contrast']:.1f} ({ratio:.2f}×);",
        f"- kind of error: {', '.join(f'{100 * v:.0f} % {k}' for k, v in kinds.items())}; most are **{main}**."]
    return "\n".join(lines)


def postprocess_effect(run_dir: str | Path, prepared=None) -> dict:
    """Mean per-image Dice and thresholded Jaccard of a run's saved test predictions, as they are and after
    :func:`helpers.evaluation.inference.postprocess` (largest component kept, holes filled), at the training size.

    Measured on the saved predictions, so it needs no checkpoint. Returns ``{"dice": (before, after),
    "jaccard_thresholded": (before, after), "already": bool}`` (``already``: the run was evaluated with it).
    """
    run_dir = Path(run_dir)
    prepared = prepared or runs.load_run_data(run_dir)
    ids, preds = inference.load_predictions(run_dir)
    masks = prepared.masks[rows_of(prepared, ids)].astype(bool)
    before = inference.score_images(preds, masks, with_hd95=False)
    after = inference.score_images(np.stack([inference.postprocess(p) for p in preds]), masks, with_hd95=False)
    return {**{k: (float(before[k].mean()), float(after[k].mean())) for k in ("dice", "jaccard_thresholded")},
            "already": bool(scoring.read_eval(run_dir).get("postprocess"))}
