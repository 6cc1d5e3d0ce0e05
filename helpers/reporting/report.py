"""``results/report.md``: tables, statistics and figures from the run folders, and the reference
study.

    write_report()   →  results/summary.csv, results/comparisons.csv, results/figures/*.png,
                        results/report.md

The report is rebuilt from the run folders every time, so it never disagrees with them. Every score
in it is per image, averaged over the test images; the original study's numbers (from the kit's
design notes) appear only in a section of their own, labelled as reference.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import paths
from helpers.evaluation import external, inference, scoring
from helpers.reporting import failure_report, figures, tables
from helpers.training import runs

# The original study's own reported figures: the one place they live. The report and its figures
# label them as reference; they are never mixed with the kit's results.
# The original study's own per-image test Dice (seed protocol, 256 px, ISIC 2018 training set,
# Colab T4).
REFERENCE_DICE = {"unet": {0.10: 0.7548, 0.25: 0.8019, 0.50: 0.8377, 1.00: 0.8589},
                  "unetpp": {0.10: 0.7288, 0.25: 0.8038, 0.50: 0.8415, 1.00: 0.8608}}
REFERENCE_NOTES = """\
- UNet++ at 100 %: Dice 0.8608 ± 0.167, IoU 0.7831 ± 0.191, pixel accuracy 0.9493 \
(per image, mean ± std).
- Setup: ISIC 2018 Task 1 training set (2,594 images), 256 × 256, random 70/15/15 split; \
AdamW (lr 1e-4,
  weight decay 1e-4), cosine annealing, 20 epochs, batch 20–24, fp16, loss 0.5·Dice + 0.5·BCE.
- Time on a Colab T4: about 45 min per 100 % run, 25 min at 50 %, 15 min at 25 %, 8 min at 10 %
  (about 5 hours for all eight); inference 50–60 ms per image.
- Its claimed model sizes (UNet 31 M, UNet++ 9 M, TransUNet 105 M) did not match its code; TransUNet
  was trained from scratch and never finished, so there is no reference for it. It reported no
  challenge metric (thresholded Jaccard) and no confidence intervals, and compared models by eye."""

# what people saw in the figures, written by hand beside the report; included in it
NOTES_FILE = "notes.md"
HOW_TO_READ = """\
- **Per image, then averaged.** Each score is computed on every test image separately; \
the tables show
  the mean over the test images ± the standard deviation (the spread between images) \
and, in brackets,
  the 95 % bootstrap confidence interval of the mean (how sure we are of the mean itself). \
Nothing is pooled.
- **Dice** = 2·TP / (2·TP + FP + FN) and **IoU** (Jaccard) = TP / (TP + FP + FN): \
overlap of prediction and
  truth, 1 is perfect. Dice ≥ IoU always; Dice 0.86 ≈ IoU 0.75.
- **Thresholded Jaccard** (the ISIC 2018 challenge score): IoU, but 0 for any image below 0.65, \
so a few
  failed images pull it down hard. Compare it with the IoU column to see how many images fail.
- **Pixel accuracy, sensitivity, specificity**: right pixels / all pixels, \
found lesion / all lesion, right
  skin / all skin. Accuracy looks high even for poor masks because most pixels are skin.
- **HD95** (pixels at the training size): the 95th percentile of boundary distances; \
lower is better; an
  empty prediction scores the image diagonal.
- **orig**: the same score at the original image size (prediction resized back), \
what the challenge scores.
- **Which differences are real**: a paired comparison on the same test images (mean of the per-image
  differences A − B, its 95 % bootstrap CI, a Wilcoxon signed-rank test). \
The verdict names a winner only
  when the CI excludes 0 *and* the Holm-adjusted p (corrected for making many comparisons) \
is below 0.05;
  with few test images that rarely happens, which is the honest answer."""


def _md_table(table: pd.DataFrame) -> str:
    """A GitHub-markdown table (no extra dependency)."""
    if table.empty:
        return "_(none)_"

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, table.columns)) + " |",
             "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in table.to_numpy()])


def _fmt(row, metric: str, ci: bool = False) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean:.3f} ± {std:.3f}" if metric != "hd95" else f"{mean:.1f} ± {std:.1f}"
    return text + (f" [{row[f'{metric}_ci_low']:.3f}, {row[f'{metric}_ci_high']:.3f}]" if ci
                   else "")


def _number(value, pattern: str) -> str:
    return "–" if value is None or pd.isna(value) else pattern.format(value)


def results_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Test scores of every evaluated run, at the training size: mean ± std [95 % CI] over test
    images."""
    return pd.DataFrame([{
        "model": r["model"], "config": r.get("config"), "fraction": f"{100 * r['fraction']:g} %",
        "n test": int(r["n_test"]), "Dice": _fmt(r, "dice", ci=True), "IoU": _fmt(r, "iou"),
        "thresholded Jaccard": _fmt(r, "jaccard_thresholded", ci=True),
        "pixel accuracy": _fmt(r, "accuracy"), "sensitivity": _fmt(r, "sensitivity"),
        "specificity": _fmt(r, "specificity"), "HD95 (px)": _fmt(r, "hd95")}
        for _, r in summary[summary["status"] == "ok"].iterrows()])


def original_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Scores at the original image size (what the challenge scores), for runs that have them."""
    ok = summary[summary["status"] == "ok"]
    if "dice_orig_mean" not in ok:
        return pd.DataFrame()
    return pd.DataFrame([{
        "model": r["model"], "fraction": f"{100 * r['fraction']:g} %", "n test": int(r["n_test"]),
        "Dice (orig)": _fmt(r, "dice_orig"), "IoU (orig)": _fmt(r, "iou_orig"),
        "thresholded Jaccard (orig)": _fmt(r, "jaccard_thresholded_orig", ci=True)}
        for _, r in ok.dropna(subset=["dice_orig_mean"]).iterrows()])


def _memory(row) -> str:
    """Peak GPU memory of a run's training, with the cap it ran under: ``3.2 GB (cap 15)``; ``–`` on
    the CPU."""
    peak, cap = row.get("peak_gpu_gb"), row.get("gpu_memory_gb")
    if peak is None or pd.isna(peak):
        return "–"
    return f"{peak:.1f} GB" + ("" if cap is None or pd.isna(cap) else f" (cap {cap:g})")


def cost_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Size, training time and speed, and peak GPU memory (with its cap, if one was set) of every
    finished run."""
    return pd.DataFrame([{
        "model": r["model"], "config": r.get("config"), "fraction": f"{100 * r['fraction']:g} %",
        "train images": _number(r.get("train_images"), "{:,.0f}"),
        "params": _number(r.get("params"), "{:,.0f}"),
        "epochs (best)": f"{_number(r.get('epochs'), '{:.0f}')} "
                         f"({_number(r.get('best_epoch'), '{:.0f}')})",
        "training time": _number(r.get("train_seconds"), "{:.1f} s"),
        "training img/s": _number(r.get("train_images_per_s"), "{:.0f}"),
        "peak GPU memory": _memory(r),
        "inference img/s": _number(r.get("images_per_s"), "{:.0f}"),
        "inference ms/img": _number(r.get("ms_per_image"), "{:.1f}")}
        for _, r in summary[summary["status"].isin(["ok", "not evaluated"])].iterrows()])


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons in words and numbers."""
    return pd.DataFrame([{
        "fraction": f"{100 * r.fraction:g} %", "A vs B": f"{r.model_a} vs {r.model_b}",
        "metric": r.metric, "n": r.n,
        "mean A − B [95 % CI]": f"{r.mean_diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
        "A better on": f"{100 * r.a_wins:.0f} % of images", "Wilcoxon p": f"{r.p_wilcoxon:.3g}",
        "Holm p": f"{r.p_holm:.3g}", "verdict": r.verdict} for r in comparisons.itertuples()])


def reference_table(shown: pd.DataFrame) -> pd.DataFrame:
    """The original study's Dice beside ours (the :func:`figure_runs`), per model and fraction."""
    ours, rows = shown, []
    for model in sorted(set(REFERENCE_DICE) | set(ours["model"])):
        for fraction in sorted(set(REFERENCE_DICE.get(model, {}))
                               | set(ours.loc[ours["model"] == model, "fraction"])):
            mine = ours[(ours["model"] == model) & np.isclose(ours["fraction"], fraction)]
            rows.append({"model": model, "fraction": f"{100 * fraction:g} %",
                         "original study Dice (reference)":
                             _number(REFERENCE_DICE.get(model, {}).get(fraction), "{:.4f}"),
                         "this kit Dice": _fmt(mine.iloc[0], "dice") if len(mine) else "–"})
    return pd.DataFrame(rows)


def per_image_long(summary: pd.DataFrame, results_root=None) -> pd.DataFrame:
    """Every evaluated run's per-image table, stacked, with ``run_id``, ``model`` and
    ``fraction``."""
    folder = scoring.runs_dir(results_root)
    tables = [pd.read_csv(folder / r.run_id / inference.METRICS_FILE)
              .assign(run_id=r.run_id, model=r.model, fraction=r.fraction)
              for r in summary[summary["status"] == "ok"].itertuples()]
    return (pd.concat(tables, ignore_index=True) if tables
            else pd.DataFrame(columns=["run_id", "model", "fraction"]))


def load_histories(summary: pd.DataFrame, results_root=None) -> pd.DataFrame:
    """``history.csv`` of every finished run (evaluated or not), stacked, with ``model`` and
    ``fraction``; an unreadable one is left out, printed and listed in the table's
    ``attrs["broken"]`` (the curves name it)."""
    folder, tables, broken = scoring.runs_dir(results_root), [], []
    for r in summary[summary["status"].isin(["ok", "not evaluated"])].itertuples():
        if (folder / r.run_id / "history.csv").is_file():
            try:
                tables.append(
                    runs.read_history(folder / r.run_id).assign(model=r.model, fraction=r.fraction))
            except ValueError as err:  # names the file
                broken.append(f"{r.run_id}: {err}")
                print(f"broken, left out of the training curves: {err}")
    table = (pd.concat(tables, ignore_index=True) if tables
             else pd.DataFrame(columns=["model", "fraction", "epoch"]))
    table.attrs["broken"] = broken
    return table


def best_run_gallery(summary: pd.DataFrame, results_root=None, per_group: int = 3):
    """Best / median / worst test cases of the evaluated run with the highest mean Dice (None if
    none).

    A run with its checkpoint but without its predictions (a committed study's model in the box)
    gets them made now; one whose prepared data or model is not here gives a line that says so.
    """
    ok = summary[summary["status"] == "ok"]
    if ok.empty:
        return None
    best = ok.loc[ok["dice_mean"].idxmax()]
    run_dir = scoring.runs_dir(results_root) / best["run_id"]
    try:
        prepared = runs.load_run_data(run_dir)
        # made from its checkpoint if only the scores came
        ids, preds = scoring.predictions(run_dir, prepared)
    except (FileNotFoundError, ValueError) as err:  # DataError is a ValueError
        return f"No pictures of {best['run_id']}'s test cases: {err}"
    rows = prepared.table.reset_index().set_index("isic_id").loc[ids, "index"].to_numpy()
    scores = (pd.read_csv(run_dir / inference.METRICS_FILE).set_index("isic_id")
              .loc[ids, "dice"].to_numpy())
    fig = figures.case_gallery(prepared.images[rows], prepared.masks[rows], preds, scores,
                               ids, per_group)
    fig.suptitle(f"{best['run_id']} (highest mean Dice)\nbest, median and worst test cases "
                 "(light blue: truth, orange: prediction)", fontsize=9)
    return fig


def figure_runs(summary: pd.DataFrame, results_root=None) -> pd.DataFrame:
    """The runs the figures show: the largest group of one protocol, dataset, image size and profile
    (newest evaluation per model and fraction, one seed:
    :func:`helpers.reporting.tables.primary_runs`)."""
    newest = tables.primary_runs(summary, results_root)
    if newest.empty:
        return newest
    ids = newest.groupby(tables.GROUP_KEYS[:-1], dropna=False, sort=False).ngroup()
    return newest[ids == ids.value_counts().idxmax()]


def _or_none(draw, *args):
    """A figure that needs a run's predictions and data: None (and a warning) where they are
    missing."""
    try:
        return draw(*args)
    except (OSError, ValueError, KeyError) as err:
        warnings.warn(f"{draw.__name__} skipped: {type(err).__name__}: {err}", stacklevel=2)
        return None


def make_figures(summary: pd.DataFrame, results_root=None) -> dict[str, Path]:
    """Draw and save the report's figures (of :func:`figure_runs`) into ``<results>/figures/``.

    Returns:
        name → path of each figure written.
    """
    root = Path(results_root or paths.results_dir())
    (root / "figures").mkdir(parents=True, exist_ok=True)
    shown = figure_runs(summary, root)
    if shown.empty:
        return {}
    real_seed = not shown.empty and shown["protocol"].eq("seed").all() and \
        not shown["dataset"].astype(str).str.startswith("synthetic").any()
    drawn = {"data_efficiency_dice": figures.data_efficiency(shown, "dice",
                                                             REFERENCE_DICE if real_seed else None),
             "data_efficiency_jaccard_thresholded":
                 figures.data_efficiency(shown, "jaccard_thresholded"),
             "dice_distributions":
                 figures.metric_distributions(per_image_long(shown, root), "dice"),
             "training_curves": figures.training_curves(load_histories(shown, root)),
             "cases": _or_none(best_run_gallery, shown, root)}
    # not None, not a "not here" line
    drawn = {name: fig for name, fig in drawn.items() if hasattr(fig, "savefig")}
    for name, fig in drawn.items():  # through a temporary file: never through a link there
        paths.write_atomic(root / "figures" / f"{name}.png",
                           lambda tmp, fig=fig: fig.savefig(tmp, dpi=110))
    return {name: root / "figures" / f"{name}.png" for name in drawn}


def _setup_table(summary: pd.DataFrame) -> pd.DataFrame:
    names = {"profile": "profile", "protocol": "protocol", "dataset": "dataset",
             "image_size": "image size", "amp": "mixed precision", "hardware": "training hardware",
             "eval_hardware": "evaluation hardware", "tta": "flip TTA",
             "postprocess": "post-processing", "threshold": "threshold"}
    ok = summary[summary["status"] == "ok"]
    table = (ok if len(ok) else summary)[[c for c in names if c in summary]].drop_duplicates()
    return table.astype(object).where(table.notna(), "–").rename(columns=names)


def _figures_caption(shown: pd.DataFrame) -> str:
    if shown.empty:
        return "_(no evaluated run yet)_"
    r = shown.iloc[0]
    return (f"Runs shown: profile `{r.get('profile')}`, {r.get('protocol')} protocol, dataset "
            f"`{r.get('dataset')}`, {r.get('image_size')} px ({len(shown)} runs; the newest "
            f"evaluation per model and fraction).")


def seed_table(summary: pd.DataFrame, results_root=None) -> pd.DataFrame:
    """The spread of the mean test Dice between seeds, beside one seed's bootstrap CI width, for
    people."""
    spread = tables.seed_spread(summary, "dice", results_root)
    return pd.DataFrame({"model": spread["model"],
                         "fraction": [f"{100 * f:.0f} %" for f in spread["fraction"]],
                         "seeds": spread["seeds"],
                         "mean Dice over seeds":
                             [f"{m:.4f} ± {s:.4f}"
                              for m, s in zip(spread["mean"], spread["std_between_seeds"])],
                         "lowest – highest": [f"{a:.4f} – {b:.4f}"
                                              for a, b in zip(spread["min"], spread["max"])],
                         "one seed's 95 % CI width": [f"{w:.4f}" for w in spread["mean_ci_width"]]})


def _seed_section(summary: pd.DataFrame, root: Path) -> list[str]:
    table = seed_table(summary, root)
    if table.empty:
        return []
    return ["## Between seeds (same split, other initialisation)\n\nThe spread of the mean test "
            "Dice between seeds is how much a result owes to the random start; the bootstrap CI of "
            "one seed only covers the choice of test images. Figures and paired comparisons use "
            "the lowest seed.\n\n" + _md_table(table)]


def _external_section(root: Path, n_boot: int, seed: int) -> list[str]:
    path = external.write_external(root, n_boot, seed)
    if path is None:
        return []
    table = pd.read_csv(path)
    return [f"## On another dataset (external test sets, `{external.EXTERNAL_FILE}`)\n\nEach run "
            "scored on its own test split and on another dataset used whole as a test set, with "
            "the same threshold, TTA and post-processing. The drop is the run's own-split mean "
            "minus its external mean; the two sets hold different images, so its 95 % CI resamples "
            "both independently.\n\n"
            + _md_table(external.readable(table, "dice"))
            + "\n\nThresholded Jaccard (the challenge score):\n\n"
            + _md_table(external.readable(table, "jaccard_thresholded"))]


def write_report(results_root=None, n_boot: int = 2000, seed: int = 0) -> Path:
    """Rebuild ``summary.csv``, ``comparisons.csv``, the figures and ``report.md`` from the run
    folders.

    Returns:
        The path of ``report.md``.
    """
    root = Path(results_root or paths.results_dir())
    summary = pd.read_csv(tables.write_summary(root, n_boot, seed))
    comparisons = pd.concat([tables.compare_models(summary, m, root, n_boot, seed)
                             for m in ("dice", "jaccard_thresholded")], ignore_index=True)
    paths.write_atomic(root / tables.COMPARISONS_FILE,
                       lambda tmp: comparisons.to_csv(tmp, index=False, float_format="%.6g"))
    figures, shown = make_figures(summary, root), figure_runs(summary, root)
    failure_text = failure_report.report_section(shown, root, _md_table)
    counts = summary["status"].value_counts().to_dict()
    problems = summary[summary["status"] != "ok"][["run_id", "status", "problem"]]
    synthetic = (summary["dataset"].astype(str).str.startswith("synthetic").any()
                 if "dataset" in summary else False)
    parts = [f"# Results: skin-lesion segmentation (ISIC 2018 Task 1)\n\nGenerated "
             f"{time.strftime('%Y-%m-%d %H:%M')} from {len(summary)} run folder(s) "
             f"({', '.join(f'{v} {k}' for k, v in counts.items()) or 'none'}); tables in "
             f"`{tables.SUMMARY_FILE}` and `{tables.COMPARISONS_FILE}`.",
             "## How to read this report\n\n" + HOW_TO_READ,
             "## Setup: profile and hardware\n\n" + _md_table(_setup_table(summary)),
             "## Test results (per image: mean ± std [95 % CI])\n\nAt the training size:\n\n"
             + _md_table(results_table(summary))
             + "\n\nAt the original image size (prediction resized back; what the challenge "
               "scores):\n\n" + _md_table(original_table(summary)),
             "## Size, time and speed\n\n" + _md_table(cost_table(summary)),
             "## Which differences are real (paired, same test images)\n\n"
             + _md_table(comparisons_table(comparisons)),
             *_seed_section(summary, root),
             *_external_section(root, n_boot, seed),
             "## Where the best run fails\n\n" + failure_text
             + (f"\n\n### Notes of the people who ran it (`{NOTES_FILE}`)\n\n"
                + (root / NOTES_FILE).read_text().strip()
                if (root / NOTES_FILE).is_file() else ""),
             "## Runs left out (flagged, not crashed)\n\n" + _md_table(problems),
             "## Figures\n\n" + _figures_caption(shown) + "\n\n"
             + "\n\n".join(f"![{name}](figures/{path.name})" for name, path in figures.items()),
             "## The original study, for reference (its figures, not ours)\n\nThese numbers are "
             "the original study's own, copied from the kit's design notes; they were measured on "
             "the real ISIC 2018 data at 256 px and are comparable only to a `t4` run of the seed "
             "protocol on that data"
             + (" (the runs here used the synthetic sample, so the columns are not comparable)"
                if synthetic else "")
             + ".\n\n"
             + _md_table(reference_table(shown)) + "\n\n" + REFERENCE_NOTES]
    text = "\n\n".join(parts) + "\n"
    return paths.write_atomic(root / "report.md", lambda tmp: tmp.write_text(text))
