"""Every run folder into one table: evaluate what is pending, summarise, compare models.

    results/runs/<run_id>/  config.json  history.csv  done.json  (training)
                            test_metrics.csv  eval.json  test_preds.npz  (evaluation, this kit)
    results/summary.csv     one row per run folder (mean ± std, 95 % CI, size, time, speed, status)
    results/comparisons.csv paired model comparisons per fraction on the same test images

Every metric in the summary is **per image, then averaged over the test images** (``<metric>_mean``,
``_std`` and the bootstrap 95 % CI of the mean, ``_ci_low`` / ``_ci_high``); none is pooled. A run
folder that is unfinished, not yet evaluated or broken gets a row all the same, with ``status``
saying which and ``problem`` saying what to do: it never stops the summary.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers import distributed, evaluate, paths, runs, stats
from helpers.prep import load_prepared

SUMMARY_FILE, COMPARISONS_FILE = "summary.csv", "comparisons.csv"
GROUP_KEYS = ["protocol", "dataset", "image_size", "profile", "fraction"]


def runs_dir(results_root: str | Path | None = None) -> Path:
    """The folder of run folders, ``<results>/runs``."""
    return Path(results_root or paths.results_dir()) / "runs"


def list_run_dirs(results_root: str | Path | None = None) -> list[Path]:
    """Every run folder (any subfolder of ``runs/``, finished or not), sorted by name."""
    folder = runs_dir(results_root)
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _checked(read, path: Path):
    """``read(path)``, with any failure turned into a ValueError that names the file."""
    try:
        value = read(path)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object")
    return value


def run_config(run_dir: str | Path) -> dict:
    """A run's ``config.json`` (:func:`helpers.runs.load_run_config`); ValueError naming it if unreadable."""
    return _checked(lambda p: runs.load_run_config(p.parent), Path(run_dir) / "config.json")


def read_eval(run_dir: str | Path) -> dict:
    """A run's ``eval.json`` ({} before evaluation); ValueError naming it if unreadable."""
    path = Path(run_dir) / evaluate.EVAL_FILE
    return _checked(lambda p: json.loads(p.read_text()), path) if path.exists() else {}


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is unreadable ({type(err).__name__})") from None
    missing = [c for c in ("isic_id", "dice") if c not in table.columns]
    if missing or table.empty:
        raise ValueError(f"{path} has no rows or lacks columns {missing}")
    return table


def run_status(run_dir: str | Path) -> tuple[str, str]:
    """``(status, problem)`` of a run folder.

    Status is ``ok`` (finished and evaluated), ``not evaluated`` (finished, no test_metrics.csv),
    ``unfinished`` (no finished done.json) or ``broken`` (a file is missing or unreadable); ``problem``
    is empty for ``ok`` and otherwise names the file and what to do.
    """
    run_dir = Path(run_dir)
    try:
        run_config(run_dir)
        _checked(lambda p: runs.load_done(p.parent), run_dir / "done.json")
        if not runs.is_finished(run_dir):
            return "unfinished", (f"{run_dir.name}: training has not finished (no done.json); resume it by "
                                  "running its training notebook again, or delete the folder.")
        read_eval(run_dir)
        if not (run_dir / evaluate.METRICS_FILE).exists():
            return "not evaluated", (f"{run_dir.name}: finished but not evaluated (no test_metrics.csv); "
                                     "run results.evaluate_runs() (notebook 04).")
        _read_metrics(run_dir / evaluate.METRICS_FILE)
    except ValueError as err:
        return "broken", f"{err}; delete the file (or the run folder) and run it again."
    return "ok", ""


def evaluate_run(run_dir: str | Path, *, load_model=None, to_input=None, device: str | torch.device | None = None,
                 prepared=None, **options) -> Path:
    """Evaluate one finished run on its test split and write its files (see :mod:`helpers.evaluate`).

    Args:
        run_dir: the run folder (its ``config.json`` names the prepared dataset).
        load_model: ``run_dir → nn.Module``; default :func:`helpers.runs.load_run_model` (best.pt).
        to_input: uint8 (B, S, S, 3) → float (B, 3, S, S); default :func:`helpers.data.to_model_input`.
        device: where to run (default :func:`helpers.distributed.pick_device`: the GPU, else the CPU).
        prepared: the :class:`helpers.prep.Prepared` dataset, if already open.
        **options: passed to :func:`helpers.evaluate.evaluate` (tta, post, threshold, batch_size, amp, ...);
            batch size and mixed precision default to the run's own.

    Returns:
        The path of ``test_metrics.csv``.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    prepared = prepared or load_prepared(config["prepared_dir"])
    model = (load_model or runs.load_run_model)(run_dir).to(device or distributed.pick_device())
    options.setdefault("batch_size", int(config.get("batch_size") or 16))
    options.setdefault("amp", config.get("amp") not in (None, False, "off"))
    result = evaluate.evaluate(model, prepared, "test", to_input=to_input, **options)
    return evaluate.save_evaluation(result, run_dir)


def evaluate_runs(results_root: str | Path | None = None, *, overwrite: bool = False, progress: bool = True,
                  **options) -> pd.DataFrame:
    """Evaluate every finished run that has no ``test_metrics.csv`` yet (all finished ones if ``overwrite``).

    Args:
        results_root: the results folder (default ``paths.results_dir()``).
        overwrite: evaluate evaluated runs again (e.g. with TTA).
        progress: one progress bar over the run folders.
        **options: passed to :func:`evaluate_run` (load_model, to_input, device, tta, post, ...).

    Returns:
        One row per run folder: ``run_id``, ``status`` before, and ``action`` (evaluated, or skipped /
        failed and why).
    """
    done, prepared_cache = [], {}
    for run_dir in tqdm(list_run_dirs(results_root), desc="evaluate runs", disable=not progress):
        status, problem = run_status(run_dir)
        if status == "not evaluated" or (overwrite and status == "ok"):
            try:  # a missing dataset or checkpoint fails this run only (it stays flagged in the summary)
                source = run_config(run_dir)["prepared_dir"]
                if source not in prepared_cache:
                    prepared_cache[source] = load_prepared(source)
                evaluate_run(run_dir, prepared=prepared_cache[source], **{"progress": False, **options})
                action = "evaluated"
            except (OSError, ValueError, RuntimeError) as err:
                action = f"failed: {type(err).__name__}: {err}"
        else:
            action = "skipped: " + (problem or "already evaluated")
        done.append({"run_id": run_dir.name, "status": status, "action": action})
    return pd.DataFrame(done, columns=["run_id", "status", "action"])


def _metric_stats(table: pd.DataFrame, n_boot: int, seed: int) -> dict:
    out = {"n_test": len(table)}
    for name in (*evaluate.METRICS, *evaluate.ORIG_METRICS):
        if name in table.columns:
            values = table[name].to_numpy(np.float64)
            low, high = stats.bootstrap_ci(values, n_boot, seed=seed)
            out.update({f"{name}_mean": np.nanmean(values), f"{name}_std": np.nanstd(values, ddof=1)
                        if len(values) > 1 else 0.0, f"{name}_ci_low": low, f"{name}_ci_high": high})
    return out


def _config_fields(config: dict) -> dict:
    profile, overrides = config.get("profile"), config.get("model_overrides") or {}
    label = (config.get("model_config") or "") + "".join(f"+{k}" if v is True else f"+{k}={v}"
                                                         for k, v in sorted(overrides.items()))
    keys = ("model", "fraction", "protocol", "dataset", "image_size", "seed", "train_images", "params", "amp", "hardware")
    return {**{k: config.get(k) for k in keys}, "config": label or None,
            "profile": profile.get("name") if isinstance(profile, dict) else profile}


_DONE_FIELDS = {"epochs": "epochs", "best_epoch": "best_epoch", "best_val_dice": "best_val_dice",
                "train_seconds": "train_seconds", "train_images_per_s": "images_per_s", "stopped_early": "stopped_early"}
_EVAL_FIELDS = {"images_per_s": "images_per_s", "ms_per_image": "ms_per_image", "eval_hardware": "hardware",
                "tta": "tta", "postprocess": "postprocess", "threshold": "threshold"}


def summarize_run(run_dir: str | Path, n_boot: int = 2000, seed: int = 0) -> dict:
    """One summary row of a run folder (never raises for a broken folder: see ``status``)."""
    run_dir = Path(run_dir)
    status, problem = run_status(run_dir)
    row = {"run_id": run_dir.name, "status": status, "problem": problem}
    readers = [(run_config, _config_fields), (read_eval, lambda e: {k: e.get(v) for k, v in _EVAL_FIELDS.items()}),
               (lambda d: _checked(lambda p: runs.load_done(p.parent), d / "done.json") or {},
                lambda d: {k: d.get(v) for k, v in _DONE_FIELDS.items()})]
    for read, fields in readers:
        try:
            row.update({k: v for k, v in fields(read(run_dir)).items() if v is not None})
        except ValueError:
            pass  # missing or unreadable: run_status has said so
    if status == "ok":
        row.update(_metric_stats(_read_metrics(run_dir / evaluate.METRICS_FILE), n_boot, seed))
    return row


def collect_summary(results_root: str | Path | None = None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The summary table of every run folder, sorted by protocol, fraction and model."""
    rows = [summarize_run(p, n_boot, seed) for p in list_run_dirs(results_root)]
    table = pd.DataFrame(rows, columns=list(dict.fromkeys(["run_id", "model", "config", "fraction", "protocol",
                                                           "status", "problem"] + [k for r in rows for k in r])))
    order = [c for c in ("protocol", "fraction", "model", "run_id") if c in table.columns]
    return table.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)


def write_summary(results_root: str | Path | None = None, n_boot: int = 2000, seed: int = 0) -> Path:
    """Write ``<results>/summary.csv`` (see :func:`collect_summary`) and return its path."""
    root = Path(results_root or paths.results_dir())
    root.mkdir(parents=True, exist_ok=True)
    collect_summary(root, n_boot, seed).to_csv(root / SUMMARY_FILE, index=False, float_format="%.6g")
    return root / SUMMARY_FILE


def newest_runs(summary: pd.DataFrame, results_root: str | Path | None = None) -> pd.DataFrame:
    """Evaluated runs (``status == ok``), only the newest evaluation per group (:data:`GROUP_KEYS`) and model."""
    ok = summary[summary["status"] == "ok"].copy()
    for key in GROUP_KEYS:
        ok[key] = ok[key] if key in ok else np.nan
    ok["_mtime"] = [(runs_dir(results_root) / r / evaluate.METRICS_FILE).stat().st_mtime for r in ok["run_id"]]
    newest = ok.sort_values("_mtime", kind="stable").drop_duplicates([*GROUP_KEYS, "model"], keep="last")
    return newest.drop(columns="_mtime").sort_index()


def compare_models(summary: pd.DataFrame, metric: str = "dice", results_root: str | Path | None = None,
                   n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons of every two models within each group (protocol, dataset, size, profile, fraction).

    Only the :func:`newest_runs` take part. Images are matched by ``isic_id``.

    Returns:
        One row per pair: the group, ``model_a``, ``model_b``, ``metric``, ``n``, means, ``mean_diff``
        (A − B), its bootstrap CI, ``p_wilcoxon``, ``p_holm`` (over all rows) and ``verdict`` (a model is
        better when the CI excludes 0 and ``p_holm`` < 0.05).
    """
    folder, rows = runs_dir(results_root), []
    for key, group in newest_runs(summary, results_root).groupby(GROUP_KEYS, dropna=False, sort=True):
        tables = {r.model: _read_metrics(folder / r.run_id / evaluate.METRICS_FILE).set_index("isic_id")
                  for r in group.itertuples()}
        for a, b in itertools.combinations(sorted(tables), 2):
            if metric not in tables[a] or metric not in tables[b]:
                continue
            both = tables[a][[metric]].merge(tables[b][[metric]], left_index=True, right_index=True,
                                             suffixes=("_a", "_b"))
            result = stats.paired_difference(both[f"{metric}_a"], both[f"{metric}_b"], n_boot, seed=seed)
            rows.append({**dict(zip(GROUP_KEYS, key)), "model_a": a, "model_b": b, "metric": metric, **result})
    table = pd.DataFrame(rows, columns=[*GROUP_KEYS, "model_a", "model_b", "metric", "n", "mean_a", "mean_b",
                                        "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "a_wins"])
    table["p_holm"] = stats.holm(table["p_wilcoxon"].to_numpy(float))
    table["verdict"] = [stats.verdict(r.model_a, r.model_b, r.ci_low, r.ci_high, r.p_holm) for r in table.itertuples()]
    return table
