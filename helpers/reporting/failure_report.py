"""The report's failure section: ``failures.csv``, ``figures/worst_cases.png`` and the text about them.

What is measured lives in :mod:`helpers.evaluation.failures`; this module draws and writes it for
notebook 04's report.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from helpers import paths
from helpers.evaluation import failures, inference, scoring
from helpers.reporting.figures import overlay
from helpers.training import runs


def worst_cases(run_dir: str | Path, table: pd.DataFrame, count: int = 8, prepared=None):
    """A figure of the ``count`` worst test images of a run, each titled with its score and attributes."""
    run_dir = Path(run_dir)
    prepared = prepared or runs.load_run_data(run_dir)
    ids, preds = inference.load_predictions(run_dir)
    where = {isic_id: k for k, isic_id in enumerate(ids)}
    worst = table.head(count)
    rows = dict(zip(worst["isic_id"], failures.rows_of(prepared, worst["isic_id"])))
    cols = min(4, max(1, len(worst)))
    fig = Figure(figsize=(2.4 * cols, 2.6 * -(-len(worst) // cols) + 0.4), layout="constrained")
    for ax, case in zip(fig.subplots(-(-len(worst) // cols), cols, squeeze=False).ravel(), worst.itertuples()):
        row = rows[case.isic_id]
        ax.imshow(overlay(prepared.images[row], prepared.masks[row], pred=preds[where[case.isic_id]]))
        ax.set_title(f"{case.isic_id} · Dice {case.dice:.2f}\n{case.error}; lesion {case.lesion_pct:.0f} %"
                     f"{'; at edge' if case.touches_edge else ''}; contrast {case.contrast:.0f}", fontsize=7)
    for ax in fig.axes:
        ax.axis("off")
    fig.suptitle(f"{run_dir.name}: the {len(worst)} worst test images (light blue: truth, orange: prediction)", fontsize=8)
    return fig



def report_section(shown: pd.DataFrame, root: Path, md_table) -> str:
    """Write ``failures.csv`` and ``figures/worst_cases.png`` for the best of the report's runs; the report's text.

    Args:
        shown: the runs the report's figures show (``report.figure_runs``).
        root: the results folder.
        md_table: DataFrame → markdown table (the report's own).
    """
    ok = shown[shown["status"] == "ok"] if len(shown) else shown
    if ok.empty:
        return "_(no evaluated run yet)_"
    run_dir = scoring.runs_dir(root) / ok.loc[ok["dice_mean"].idxmax(), "run_id"]
    try:  # needs the run's saved predictions and its prepared data, which a copied results folder may lack
        table = failures.failure_table(run_dir)
    except (OSError, ValueError, KeyError) as err:
        return f"_(not available for `{run_dir.name}`: {type(err).__name__}: {err})_"
    paths.write_atomic(root / "failures.csv",  # through temporary files: never through a link there
                       lambda tmp: table.to_csv(tmp, index=False, float_format="%.4g"))
    worst = worst_cases(run_dir, table)
    paths.write_atomic(root / "figures" / "worst_cases.png",
                       lambda tmp: worst.savefig(tmp, dpi=110))
    effect = failures.postprocess_effect(run_dir)
    post = "" if effect["already"] else (
        "\n- keeping only the largest component and filling its holes (`POSTPROCESS = True` in notebook 04), "
        "measured on the saved predictions at the training size: mean Dice {:.3f} → {:.3f}, thresholded "
        "Jaccard {:.3f} → {:.3f}.".format(*effect["dice"], *effect["jaccard_thresholded"]))
    return (f"Run `{run_dir.name}` (the highest mean Dice); every test image's attributes are in `failures.csv` "
            f"(see `helpers/evaluation/failures.py` for their definitions).\n\n{failures.describe_failures(table)}{post}\n\n"
            + md_table(failures.failure_summary(table).round(3)) + "\n\n![worst cases](figures/worst_cases.png)")
