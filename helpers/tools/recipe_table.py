"""The recipe table: each finished run's per-image test Dice with its CI, and the paired difference to the same
model and fraction trained with a baseline recipe; and the test-time choices of one run, measured the same way.

    python -m helpers.tools.recipe_table RESULTS [RESULTS ...] --out results/benchmarks/recipes-cpu.csv
    python -m helpers.tools.recipe_table RESULTS --baseline kit --metric dice_orig --out FILE --append
    python -m helpers.tools.recipe_table --test-time RUN [RUN ...] --out results/benchmarks/test-time-cpu.csv

RESULTS is a results folder (its ``runs/`` holds finished, evaluated runs; ``python -m helpers.training`` trains
them, :func:`helpers.evaluation.scoring.evaluate_runs` scores them). A run's recipe is the one its ``config.json``
names (``custom`` when none), followed by every setting that differs from that recipe on its profile (the one
that trains this model config at this size, else ``cpu``): ``kit lr=0.002``, ``kit num_epochs=12``,
``kit ema_epochs=1``, ``kit model_config=small``, ``kit image_size=160``.

**Recipe rows.** ``dice_mean`` and its 95 % percentile-bootstrap CI over the test images; per baseline recipe B
(``--baseline``, default ``seed``), ``diff_to_B`` is this run minus B's run of the same model and fraction on the
same images (``diff_B_ci_low``/``_high``: paired bootstrap CI; ``p_B``: Wilcoxon). ``verdict_B`` is ``better``
or ``worse`` only when the CI of the difference leaves 0; ``inside CI`` otherwise: not a win. ``metric`` says
which Dice: ``dice`` at the training size, or ``dice_orig`` at the images' original size, the fair scale for runs
trained at different sizes. ``--append`` adds the rows to an existing table; a row already there is kept, and
only its empty columns are filled.

**Test-time rows** (``--test-time``). On the run's test split: the plain prediction (threshold 0.5), flip TTA,
post-processing (largest component, holes filled), a threshold tuned on the *validation* split (the best mean
Dice over 0.30, 0.35, ..., 0.70), and all three together; each with its paired difference to the plain one.
``kept`` is true only where the difference's CI lies above 0.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import cli
from helpers.evaluation import inference, scoring, stats
from helpers.profiles import PROFILES
from helpers.recipes import RECIPES, SMALL_CONFIGS
from helpers.training import runs

SHOWN = ("lr", "warmup_epochs", "num_epochs", "weight_decay", "schedule", "augment", "batch_size", "ema_epochs",
         "model_config", "image_size")
METRICS = ("dice", "dice_orig")  # the per-image test Dice at the training size, or at the images' original size
THRESHOLDS = tuple(np.round(np.arange(0.30, 0.701, 0.05), 2))


def reference_profile(config: dict, default: str = "cpu"):
    """The profile a run is labelled against: the one profile that trains this model config at this size, or
    among several the one named after the config (``cpu``, not ``class``); else ``default`` (the ``cpu``
    profile: a wider model or a larger image is a change to it)."""
    profiles = [p for p in PROFILES.values()
                if p.image_size == config.get("image_size") and p.model_configs.get(config.get("model")) ==
                config.get("model_config")]
    named = [p for p in profiles if p.name == config.get("model_config")]
    chosen = named or (profiles if len({p.num_epochs for p in profiles}) == 1 else [])
    return chosen[0] if chosen else PROFILES[default]


def profile_epochs(config: dict) -> int | None:
    """The epochs of the profile that trains this model config at this size (:func:`reference_profile`; the
    ``cpu`` profile's 16 for a config or size no profile trains)."""
    return reference_profile(config).num_epochs


def recipe_label(config: dict) -> str:
    """The recipe a run was trained with, and what it changed from that recipe on its profile
    (:func:`reference_profile`): ``kit``, ``kit lr=0.002``, ``kit model_config=small``, ``custom``."""
    name = config.get("recipe") or "custom"
    if name not in RECIPES:
        return name
    recipe, profile = RECIPES[name], reference_profile(config)
    expected = dict(recipe.settings)
    trained = profile.model_configs.get(config.get("model"), config.get("model_config"))  # the profile's model
    if recipe.small_model_lr is not None and trained in SMALL_CONFIGS:
        expected["lr"] = recipe.small_model_lr
    expected.setdefault("num_epochs", profile.num_epochs)
    if "model" in config:  # what the profile trains; a run made otherwise says so
        expected.update(model_config=trained, image_size=profile.image_size)
    expected["ema_epochs"] = profile.ema_epochs
    recorded = {**runs.NEUTRAL, **config}  # a run recorded before a neutral setting existed had its default
    changed = [f"{k}={recorded.get(k):g}" if isinstance(recorded.get(k), float) else f"{k}={recorded.get(k)}"
               for k in SHOWN if k in expected and k in recorded and recorded[k] != expected[k]]
    return " ".join([name, *changed])


def run_row(run_dir: Path, metric: str = "dice") -> tuple[dict, pd.Series]:
    """One table row of a finished, evaluated run, and its per-image test Dice (``metric``: at the training
    size, or ``dice_orig`` at the original size) indexed by image id."""
    config, done = scoring.run_config(run_dir), scoring.read_done(run_dir)
    metrics = scoring.read_metrics(run_dir / "test_metrics.csv")
    if metric not in metrics:
        raise ValueError(f"{run_dir / 'test_metrics.csv'} has no {metric!r} column: score the run at the images' "
                         f"original size (scoring.evaluate_runs(..., overwrite=True)) or use --metric dice.")
    dice = metrics.set_index("isic_id")[metric]
    low, high = stats.bootstrap_ci(dice.to_numpy())
    row = {"recipe": recipe_label(config), "model": config["model"], "fraction": config["fraction"],
           "image_size": config.get("image_size"), "metric": metric,
           "epochs": config["num_epochs"], "lr": config["lr"], "warmup_epochs": config.get("warmup_epochs", 0.0),
           "batch_size": config["batch_size"], "n_test": len(dice), "dice_mean": float(dice.mean()),
           "dice_ci_low": low, "dice_ci_high": high, "best_epoch": done.get("best_epoch"),
           "best_val_dice": done.get("best_val_dice"), "train_seconds": done.get("train_seconds"),
           "run_id": run_dir.name}
    return row, dice


def verdict(low: float, high: float) -> str:
    """``better`` / ``worse`` when a difference's CI leaves 0, else ``inside CI``."""
    return "better" if low > 0 else "worse" if high < 0 else "inside CI"


def paired_columns(dice: pd.Series, baseline: pd.Series | None, name: str) -> dict:
    """The paired difference of ``dice`` to recipe ``name``'s run on the same images (NaN without one)."""
    keys = [f"diff_to_{name}", f"diff_{name}_ci_low", f"diff_{name}_ci_high", f"p_{name}", f"verdict_{name}"]
    if baseline is None:
        return dict(zip(keys, [np.nan] * 4 + [""]))
    common = dice.index.intersection(baseline.index)
    if len(common) != len(dice) or len(common) != len(baseline):
        raise ValueError(f"the runs scored different test images ({len(dice)} and {len(baseline)}, {len(common)} "
                         f"in common): compare runs of one study (same data, protocol and split seed).")
    diff = stats.paired_difference(dice[common].to_numpy(), baseline[common].to_numpy())
    return dict(zip(keys, [diff["mean_diff"], diff["ci_low"], diff["ci_high"], diff["p_wilcoxon"],
                           verdict(diff["ci_low"], diff["ci_high"])]))


def finished_runs(roots) -> list[Path]:
    """The evaluated run folders under each results folder (a run folder itself is taken as it is)."""
    found = []
    for root in map(Path, roots):
        dirs = [root] if (root / "config.json").is_file() else scoring.list_run_dirs(root)
        found += [d for d in dirs if (d / "test_metrics.csv").is_file() and (d / "done.json").is_file()]
    if not found:
        raise FileNotFoundError(f"no evaluated runs under {', '.join(map(str, roots))}: train them "
                                f"(python -m helpers.training) and score them (notebook 04) first.")
    return found


def recipe_table(roots, baselines=("seed",), metric: str = "dice") -> pd.DataFrame:
    """Every evaluated run under ``roots``, one row each, with the paired difference to each baseline recipe's run
    of the same model and fraction (sorted by model, fraction, recipe). ``metric``: ``dice`` (at the training
    size) or ``dice_orig`` (at the original size: compares runs trained at different sizes)."""
    rows, scores = zip(*(run_row(d, metric) for d in finished_runs(roots)))
    table = [dict(r) for r in rows]
    for name in baselines:
        bases = {(r["model"], r["fraction"]): (r, s) for r, s in zip(rows, scores) if r["recipe"] == name}
        for row, dice in zip(table, scores):
            base_row, base = bases.get((row["model"], row["fraction"]), (None, None))
            if row["recipe"] == name or (metric == "dice" and base_row and
                                         base_row["image_size"] != row["image_size"]):
                base = None  # itself; or a run of another size, comparable at the original size only
            row.update(paired_columns(dice, base, name))
    return pd.DataFrame(table).sort_values(["model", "fraction", "recipe"], ignore_index=True)


def appended(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``table``'s rows added to the table already in ``path``. A row already there (same run and metric) is
    kept as it was; only its empty columns (a difference to a baseline it had no run of) are filled from
    ``table``. Rows written before the ``metric`` column scored ``dice``."""
    if not path.is_file():
        return table
    old = pd.read_csv(path)
    old["metric"] = old["metric"].fillna("dice") if "metric" in old else "dice"
    key = ["run_id", "metric"]
    merged = old.set_index(key).combine_first(table.set_index(key).replace("", np.nan)).reset_index()
    merged = merged[[*dict.fromkeys([*old.columns, *table.columns])]]  # the old columns first, in their order
    order = ["model", "fraction", "metric", "recipe"]
    return merged.sort_values(order, ignore_index=True, kind="stable")


def _probs(model, prepared, split: str, tta: bool) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, S, S) of every image of a split, and the rows, in order."""
    rows = prepared.indices(split)
    probs = np.concatenate([p for _, p, _ in inference.iter_probs(model, prepared.images, rows, tta=tta)])
    return probs, rows


def dice_of(probs: np.ndarray, masks: np.ndarray, threshold: float, post: bool) -> np.ndarray:
    """Per-image Dice of thresholded (and optionally post-processed) probabilities."""
    preds = np.stack([inference.finalize(p, threshold, post) for p in probs])
    return inference.score_images(preds, masks, with_hd95=False)["dice"].to_numpy()


def tuned_threshold(probs: np.ndarray, masks: np.ndarray) -> float:
    """The threshold of :data:`THRESHOLDS` with the best mean validation Dice (the lower one on a tie)."""
    means = [dice_of(probs, masks, t, False).mean() for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(means))])


def test_time_table(run_dir: Path) -> pd.DataFrame:
    """Plain, TTA, post-processing, a validation-tuned threshold and all three on one run's test split."""
    model, prepared = runs.load_run_model(run_dir), runs.load_run_data(run_dir)
    val_probs, val_rows = _probs(model, prepared, "val", tta=False)
    threshold = tuned_threshold(val_probs, np.asarray(prepared.masks[val_rows]))
    plain, rows = _probs(model, prepared, "test", tta=False)
    flipped, _ = _probs(model, prepared, "test", tta=True)
    masks = np.asarray(prepared.masks[rows])
    choices = {"plain": (plain, 0.5, False), "tta": (flipped, 0.5, False), "postprocess": (plain, 0.5, True),
               "threshold (val)": (plain, threshold, False), "all three": (flipped, threshold, True)}
    scores = {name: dice_of(p, masks, t, post) for name, (p, t, post) in choices.items()}
    table = []
    for name, (_, t, _) in choices.items():
        low, high = stats.bootstrap_ci(scores[name])
        diff = stats.paired_difference(scores[name], scores["plain"])
        table.append({"run_id": run_dir.name, "model": scoring.run_config(run_dir)["model"], "choice": name,
                      "threshold": t, "dice_mean": float(scores[name].mean()), "dice_ci_low": low,
                      "dice_ci_high": high, "diff_to_plain": diff["mean_diff"], "diff_ci_low": diff["ci_low"],
                      "diff_ci_high": diff["ci_high"], "kept": name != "plain" and diff["ci_low"] > 0})
    return pd.DataFrame(table)


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tools.recipe_table``: errors as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.recipe_table",
                                     description="Test Dice per recipe with CIs and paired differences to a baseline "
                                                 "recipe; or (--test-time) TTA, post-processing and a tuned threshold.")
    parser.add_argument("paths", nargs="+", help="results folders (or run folders); with --test-time: run folders")
    parser.add_argument("--baseline", nargs="+", default=["seed"],
                        help="the recipe(s) every other one is compared with, comma-separated (default seed)")
    parser.add_argument("--test-time", action="store_true", help="measure the test-time choices of each RUN")
    cli.add_device(parser)
    parser.add_argument("--evaluate", action="store_true", help="first score the finished runs that have no test "
                                                                    "scores yet (as notebook 04 does)")
    parser.add_argument("--metric", choices=METRICS, default="dice",
                        help="the per-image test Dice at the training size (dice), or at the images' original "
                             "size (dice_orig: to compare runs trained at different sizes)")
    parser.add_argument("--out", type=Path, default=None, help="write the table to this CSV")
    parser.add_argument("--append", action="store_true",
                        help="add the rows to the table already in --out (a row already there is kept; only "
                             "its empty columns are filled)")
    parser.add_argument("--source", default="", help="a label for the new rows' source column, e.g. a date")
    args = cli.add_debug(parser).parse_args(argv)
    cli.use_device(args.device)
    args.baseline = cli.comma_list(args.baseline)
    for root in args.paths if args.evaluate and not args.test_time else ():
        scoring.evaluate_runs(root, progress=False)
    if args.test_time:
        table = pd.concat([test_time_table(Path(p)) for p in args.paths], ignore_index=True)
    else:
        table = recipe_table(args.paths, args.baseline, args.metric)
        if args.source:
            table["source"] = args.source
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        print(table.drop(columns=["run_id"]).to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and not args.test_time:
            table = appended(table, args.out)
        table.to_csv(args.out, index=False, float_format="%.6g")
        print(f"✓ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
