"""The summary table of every run folder and the paired comparisons of models.

    results/summary.csv     one row per run folder (mean ± std, 95 % CI, size, time, speed, peak GPU
                            memory, status)
    results/comparisons.csv paired model comparisons per fraction on the same test images

Every metric in the summary is **per image, then averaged over the test images** (``<metric>_mean``,
``_std`` and the bootstrap 95 % CI of the mean, ``_ci_low`` / ``_ci_high``); none is pooled. A run
folder that is unfinished, not yet evaluated or broken gets a row all the same, with ``status``
saying which and ``problem`` saying what to do: it never stops the summary.
"""
from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import paths
from helpers.evaluation import inference, scoring, stats

SUMMARY_FILE, COMPARISONS_FILE = "summary.csv", "comparisons.csv"
GROUP_KEYS = ["protocol", "dataset", "image_size", "profile", "fraction"]


def _metric_stats(table: pd.DataFrame, n_boot: int, seed: int) -> dict:
    out = {"n_test": len(table)}
    for name in (*inference.METRICS, *inference.ORIG_METRICS):
        if name in table.columns:
            values = table[name].to_numpy(np.float64)
            low, high = stats.bootstrap_ci(values, n_boot, seed=seed)
            out.update({f"{name}_mean": np.nanmean(values), f"{name}_std": np.nanstd(values, ddof=1)
                        if len(values) > 1 else 0.0, f"{name}_ci_low": low,
                        f"{name}_ci_high": high})
    return out


def _config_fields(config: dict) -> dict:
    profile, overrides = config.get("profile"), config.get("model_overrides") or {}
    label = (config.get("model_config") or "") + "".join(f"+{k}" if v is True else f"+{k}={v}"
                                                         for k, v in sorted(overrides.items()))
    keys = ("model", "fraction", "protocol", "dataset", "image_size", "seed", "train_images",
            "params", "amp", "hardware", "gpu_memory_gb")
    return {**{k: config.get(k) for k in keys}, "test_dataset": config.get("dataset"),
            "config": label or None,
            "profile": profile.get("name") if isinstance(profile, dict) else profile}


_DONE_FIELDS = {"epochs": "epochs", "best_epoch": "best_epoch", "best_val_dice": "best_val_dice",
                "train_seconds": "train_seconds", "train_images_per_s": "images_per_s",
                "peak_gpu_gb": "peak_gpu_gb", "stopped_early": "stopped_early"}
_EVAL_FIELDS = {"images_per_s": "images_per_s", "ms_per_image": "ms_per_image",
                "eval_hardware": "hardware", "tta": "tta", "postprocess": "postprocess",
                "threshold": "threshold"}


def summarize_run(run_dir: str | Path, n_boot: int = 2000, seed: int = 0) -> dict:
    """One summary row of a run folder (never raises for a broken folder: see ``status``).

    ``peak_gpu_gb`` is the most GPU memory training used (NaN when trained on the CPU or before it
    was recorded); ``gpu_memory_gb`` the cap it trained under, if any.
    """
    run_dir = Path(run_dir)
    status, problem = scoring.run_status(run_dir)
    row = {"run_id": run_dir.name, "status": status, "problem": problem, "peak_gpu_gb": np.nan}
    readers = [(scoring.run_config, _config_fields),
               (scoring.read_eval, lambda e: {k: e.get(v) for k, v in _EVAL_FIELDS.items()}),
               (scoring.read_done, lambda d: {k: d.get(v) for k, v in _DONE_FIELDS.items()})]
    for read, fields in readers:
        with contextlib.suppress(ValueError):  # missing or unreadable: run_status has said so
            row.update({k: v for k, v in fields(read(run_dir)).items() if v is not None})
    if status == "ok":
        row.update(_metric_stats(scoring.read_metrics(run_dir / inference.METRICS_FILE), n_boot,
                                 seed))
    return row


def collect_summary(results_root: str | Path | None = None, n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """The summary table of every run folder, sorted by protocol, fraction and model."""
    rows = [summarize_run(p, n_boot, seed) for p in scoring.list_run_dirs(results_root)]
    table = pd.DataFrame(rows, columns=list(dict.fromkeys(["run_id", "model", "config", "fraction",
                                                           "protocol", "status", "problem"]
                                                          + [k for r in rows for k in r])))
    order = [c for c in ("protocol", "fraction", "model", "run_id") if c in table.columns]
    return table.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)


def write_summary(results_root: str | Path | None = None, n_boot: int = 2000,
                  seed: int = 0) -> Path:
    """Write ``<results>/summary.csv`` (see :func:`collect_summary`) and return its path."""
    root = Path(results_root or paths.results_dir())
    root.mkdir(parents=True, exist_ok=True)
    summary = collect_summary(root, n_boot, seed)
    return paths.write_atomic(root / SUMMARY_FILE,  # never through a link there
                              lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"))


def newest_runs(summary: pd.DataFrame, results_root: str | Path | None = None) -> pd.DataFrame:
    """Evaluated runs (``status == ok``): the newest evaluation per group (:data:`GROUP_KEYS`),
    model and seed."""
    ok = summary[summary["status"] == "ok"].copy()
    for key in [*GROUP_KEYS, "seed"]:
        ok[key] = ok.get(key, np.nan)
    ok["_mtime"] = [(scoring.runs_dir(results_root) / r / inference.METRICS_FILE).stat().st_mtime
                    for r in ok["run_id"]]
    newest = ok.sort_values("_mtime", kind="stable").drop_duplicates([*GROUP_KEYS, "model", "seed"],
                                                                     keep="last")
    return newest.drop(columns="_mtime").sort_index()


def primary_runs(summary: pd.DataFrame, results_root: str | Path | None = None) -> pd.DataFrame:
    """:func:`newest_runs` with one seed per group and model (the lowest), for figures and paired
    comparisons; :func:`seed_spread` shows how much the other seeds differ."""
    newest = newest_runs(summary, results_root)
    return (newest.sort_values("seed", kind="stable").drop_duplicates([*GROUP_KEYS, "model"])
            .sort_index())


def seed_spread(summary: pd.DataFrame, metric: str = "dice",
                results_root: str | Path | None = None) -> pd.DataFrame:
    """How much a model/fraction's mean test score moves between initialisation seeds on the same
    split.

    Returns:
        One row per group and model trained with two or more seeds: ``n_seeds``, ``seeds``, the
        mean, standard deviation, lowest and highest of the per-seed means, and ``mean_ci_width``,
        the average width of one seed's bootstrap CI over test images, to set beside the spread.
        Empty when every run has one seed.
    """
    newest = newest_runs(summary, results_root)
    columns = [*GROUP_KEYS, "model", "n_seeds", "seeds", "mean", "std_between_seeds", "min", "max",
               "mean_ci_width"]
    rows = []
    for key, group in newest.groupby([*GROUP_KEYS, "model"], dropna=False, sort=True):
        if group["seed"].nunique() < 2:
            continue
        means = group[f"{metric}_mean"].astype(float)
        rows.append({**dict(zip([*GROUP_KEYS, "model"], key)), "n_seeds": len(group),
                     "seeds": ",".join(str(int(s)) for s in sorted(group["seed"])),
                     "mean": means.mean(), "std_between_seeds": stats.between_seeds(means)["std"],
                     "min": means.min(), "max": means.max(),
                     "mean_ci_width": float((group[f"{metric}_ci_high"]
                                             - group[f"{metric}_ci_low"]).mean())})
    return pd.DataFrame(rows, columns=columns)


def compare_models(summary: pd.DataFrame, metric: str = "dice",
                   results_root: str | Path | None = None, n_boot: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """Paired comparisons of every two models within each group (protocol, dataset, size, profile,
    fraction).

    Only the :func:`primary_runs` take part (one seed per model). Images are matched by ``isic_id``.

    Returns:
        One row per pair: the group, ``model_a``, ``model_b``, ``metric``, ``n``, means,
        ``mean_diff`` (A − B), its bootstrap CI, ``p_wilcoxon``, ``p_holm`` (over all rows) and
        ``verdict`` (a model is better when the CI excludes 0 and ``p_holm`` < 0.05).
    """
    folder, rows = scoring.runs_dir(results_root), []
    for key, group in primary_runs(summary, results_root).groupby(GROUP_KEYS, dropna=False,
                                                                  sort=True):
        tables = {r.model: (scoring.read_metrics(folder / r.run_id / inference.METRICS_FILE)
                            .set_index("isic_id"))
                  for r in group.itertuples()}
        for a, b in itertools.combinations(sorted(tables), 2):
            if metric not in tables[a] or metric not in tables[b]:
                continue
            both = tables[a][[metric]].merge(tables[b][[metric]], left_index=True, right_index=True,
                                             suffixes=("_a", "_b"))
            result = stats.paired_difference(both[f"{metric}_a"], both[f"{metric}_b"],
                                             n_boot, seed=seed)
            rows.append({**dict(zip(GROUP_KEYS, key)), "model_a": a, "model_b": b,
                         "metric": metric, **result})
    table = pd.DataFrame(rows,
                         columns=[*GROUP_KEYS, "model_a", "model_b", "metric", "n", "mean_a",
                                  "mean_b", "mean_diff", "ci_low", "ci_high", "p_wilcoxon",
                                  "a_wins"])
    table["p_holm"] = stats.holm(table["p_wilcoxon"].to_numpy(float))
    table["verdict"] = [stats.verdict(r.model_a, r.model_b, r.ci_low, r.ci_high, r.p_holm)
                        for r in table.itertuples()]
    return table
