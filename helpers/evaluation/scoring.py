"""Scoring every run folder on its test images: which runs are pending, evaluate them, read their
files back.

    results/runs/<run_id>/  config.json  history.csv  done.json  (training)
                            test_metrics.csv  eval.json  test_preds.npz  (evaluation, this module)

:func:`run_status` says of any run folder whether it is ``ok``, ``not evaluated``, ``unfinished`` or
``broken`` and what to do; nothing here raises for a bad folder. The summary table built from these
files is :mod:`helpers.reporting.tables`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers import paths
from helpers.data.prep import load_prepared
from helpers.evaluation import inference
from helpers.training import devices, runs


def runs_dir(results_root: str | Path | None = None) -> Path:
    """The folder of run folders, ``<results>/runs``."""
    return Path(results_root or paths.results_dir()) / "runs"


def list_run_dirs(results_root: str | Path | None = None) -> list[Path]:
    """Every run folder (any subfolder of ``runs/``, finished or not, but not a hidden one such as
    the training command's ``.claims``), sorted by name."""
    folder = runs_dir(results_root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _checked(read, path: Path):
    """``read(path)``, with any failure turned into a ValueError that names the file."""
    try:
        value = read(path)
    except (OSError, ValueError, TypeError) as err:
        if str(path) in str(err):  # the reader's own message already names the file
            raise ValueError(str(err)) from None
        raise ValueError(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object")
    return value


def run_config(run_dir: str | Path) -> dict:
    """A run's ``config.json`` (:func:`helpers.training.runs.load_run_config`); ValueError naming it
    if unreadable."""
    return _checked(lambda p: runs.load_run_config(p.parent), Path(run_dir) / "config.json")


def read_done(run_dir: str | Path) -> dict:
    """A run's ``done.json`` ({} while it has not finished); ValueError naming it if unreadable."""
    return _checked(lambda p: runs.load_done(p.parent), Path(run_dir) / "done.json") or {}


def read_eval(run_dir: str | Path) -> dict:
    """A run's ``eval.json`` ({} before evaluation); ValueError naming it if unreadable."""
    path = Path(run_dir) / inference.EVAL_FILE
    return _checked(lambda p: json.loads(p.read_text()), path) if path.exists() else {}


def read_metrics(path: Path) -> pd.DataFrame:
    """A run's ``test_metrics.csv``; ValueError naming it if unreadable, empty or without
    ``isic_id``/``dice``."""
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
    ``unfinished`` (no finished done.json) or ``broken`` (a file is missing or unreadable);
    ``problem`` is empty for ``ok`` and otherwise names the file and what to do.
    """
    run_dir = Path(run_dir)
    try:
        run_config(run_dir)
        read_done(run_dir)
        if not runs.is_finished(run_dir):
            return "unfinished", (f"{run_dir.name}: training has not finished (no done.json); "
                                  "resume it by running its training notebook again, or delete the "
                                  "folder.")
        read_eval(run_dir)
        if not (run_dir / inference.METRICS_FILE).exists():
            return "not evaluated", (f"{run_dir.name}: finished but not evaluated "
                                     "(no test_metrics.csv); run results.evaluate_runs() "
                                     "(notebook 04).")
        read_metrics(run_dir / inference.METRICS_FILE)
    except ValueError as err:
        return "broken", f"{err}; delete the file (or the run folder) and run it again."
    return "ok", ""


def evaluate_run(run_dir: str | Path, *, load_model=None, to_input=None,
                 device: str | torch.device | None = None, prepared=None, **options) -> Path:
    """Evaluate one finished run on its test split and write its files (see
    :mod:`helpers.evaluation.inference`).

    Args:
        run_dir: the run folder (its ``config.json`` names the prepared dataset).
        load_model: ``run_dir → nn.Module``; default :func:`helpers.training.runs.load_run_model`
            (best.pt).
        to_input: uint8 (B, S, S, 3) → float (B, 3, S, S); default
            :func:`helpers.data.loaders.to_model_input`.
        device: where to run (default :func:`helpers.training.devices.pick_device`: the GPU, else
            the CPU).
        prepared: the :class:`helpers.data.prep.Prepared` dataset, if already open.
        **options: passed to :func:`helpers.evaluation.inference.evaluate` (tta, post, threshold,
            batch_size, amp, ...); batch size and mixed precision default to the run's own.

    Returns:
        The path of ``test_metrics.csv``.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    prepared = prepared or runs.load_run_data(run_dir)
    model = (load_model or runs.load_run_model)(run_dir).to(device or devices.pick_device())
    options.setdefault("batch_size", int(config.get("batch_size") or 16))
    options.setdefault("amp", config.get("amp") not in (None, False, "off"))
    result = inference.evaluate(model, prepared, "test", to_input=to_input, **options)
    return inference.save_evaluation(result, run_dir)


def predictions(run_dir: str | Path, prepared=None) -> tuple:
    """A run's final test predictions ``(isic_ids, preds bool (N, S, S))``: its ``test_preds.npz``,
    or, for a run whose scores were copied without it (a committed study with its model), made now
    from its checkpoint with the settings its ``eval.json`` records and saved beside them (its
    scores are left as they are).

    Raises:
        FileNotFoundError: no predictions and no checkpoint, or the run's data is not here (the
            message says so).
        ValueError: ``test_preds.npz`` or ``eval.json`` is unreadable (named).
    """
    run_dir = Path(run_dir)
    try:
        return inference.load_predictions(run_dir)
    except FileNotFoundError:
        if not runs.has_checkpoint(run_dir):
            raise
    used = read_eval(run_dir)
    prepared = prepared or runs.load_run_data(run_dir)
    model = runs.load_run_model(run_dir).to(devices.pick_device())
    result = inference.evaluate(model, prepared, "test", tta=bool(used.get("tta")),
                                post=bool(used.get("postprocess")),
                                threshold=float(used.get("threshold", 0.5)),
                                original_resolution=False, with_hd95=False, progress=False)
    inference.save_predictions(result.preds, result.table["isic_id"].to_numpy(str), run_dir)
    return result.table["isic_id"].to_numpy(str), result.preds


def evaluate_runs(results_root: str | Path | None = None, *, overwrite: bool = False,
                  progress: bool = True, **options) -> pd.DataFrame:
    """Evaluate every finished run that has no ``test_metrics.csv`` yet (all finished ones if
    ``overwrite``).

    Args:
        results_root: the results folder (default ``paths.results_dir()``).
        overwrite: evaluate evaluated runs again (e.g. with TTA).
        progress: one progress bar over the run folders.
        **options: passed to :func:`evaluate_run` (load_model, to_input, device, tta, post, ...).

    Returns:
        One row per run folder: ``run_id``, ``status`` before, and ``action`` (evaluated, or skipped
        / failed and why).
    """
    done, prepared_cache = [], {}
    for run_dir in tqdm(list_run_dirs(results_root), desc="evaluate runs", disable=not progress):
        status, problem = run_status(run_dir)
        if status == "not evaluated" or (overwrite and status == "ok"):
            # a missing dataset or checkpoint fails this run only (it stays flagged in the summary)
            try:
                source = runs.prepared_dir(run_config(run_dir))
                if source not in prepared_cache:
                    prepared_cache[source] = load_prepared(source)
                evaluate_run(run_dir, prepared=prepared_cache[source],
                             **{"progress": False, **options})
                action = "evaluated"
            except (OSError, ValueError, RuntimeError) as err:
                action = f"failed: {type(err).__name__}: {err}"
        else:
            action = "skipped: " + (problem or "already evaluated")
        done.append({"run_id": run_dir.name, "status": status, "action": action})
    return pd.DataFrame(done, columns=["run_id", "status", "action"])
