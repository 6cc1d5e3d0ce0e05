"""Publish a study: copy the small files of a results folder into a folder of its own, to commit.

    python -m helpers.reporting.snapshot  # → results/<dataset>_<protocol>_<profile>_<hardware>/
    python -m helpers.reporting.snapshot --name my-study

It copies ``report.md`` and the tables, figures and ``notes.md`` beside it (rebuild them first:
notebook 04, or ``report.write_report()``), ``bench.csv`` rows of the same hardware, and per run
``config.json``, ``done.json``, ``history.csv``, ``eval.json`` and ``test_metrics.csv`` (the
per-image scores), and the same two files of its scores on external test sets
(``external/<dataset>/``) with ``external.csv``. Never checkpoints, predictions or images. The
report's figure links keep working inside the copy, and every number in it traces to a file there.
Files already in the folder (a README, say) stay.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from helpers import cli, paths
from helpers.evaluation import external, scoring
from helpers.reporting import tables
from helpers.training import runs

TOP_FILES = ("report.md", tables.SUMMARY_FILE, tables.COMPARISONS_FILE, "failures.csv", "notes.md",
             external.EXTERNAL_FILE)
RUN_FILES = ("config.json", "done.json", "history.csv", "eval.json", "test_metrics.csv")


def _slug(values) -> str:
    text = "+".join(sorted({str(v) for v in values if pd.notna(v) and str(v)})) or "unknown"
    return re.sub(r"[^a-z0-9.+]+", "-", text.lower()).strip("-")


_results_before_study: Path | None = None


def close_study() -> Path:
    """Point ``$KIT_RESULTS_DIR`` back at the results folder it named before :func:`open_study`;
    returns it."""
    if _results_before_study is not None:
        os.environ[paths.RESULTS_ENV] = str(_results_before_study)
    return paths.results_dir()


def committed_studies() -> list[str]:
    """The studies committed with the kit: folders of ``<repo>/results`` that hold a ``runs/``
    folder and a report."""
    root = paths.repo_root() / "results"
    return sorted(p.name for p in root.iterdir()
                  if (p / "runs").is_dir() and (p / "report.md").is_file())


def open_study(name: str) -> Path:
    """Make a committed study the results folder that notebook 04 reads, to discuss it without
    training.

    The study is copied to ``<results>/studies/<name>`` (the committed folder is never written), and
    ``$KIT_RESULTS_DIR`` points there for the rest of this process. Its runs carry their per-image
    test scores, so 04 rebuilds the tables, statistics and figures; pictures that need predictions
    or checkpoints (failure cases, the viewer, the challenge export) say that they are not there.

    Raises:
        FileNotFoundError: no such study; the message lists the committed ones.
    """
    global _results_before_study
    source = paths.repo_root() / "results" / name
    if name not in committed_studies():
        raise FileNotFoundError(f"{source} is not a committed study; choose one of: "
                                f"{', '.join(committed_studies())}.")
    # the results folder before any study was opened in this process
    if _results_before_study is None:
        _results_before_study = paths.results_dir()
    target = _results_before_study / "studies" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    os.environ[paths.RESULTS_ENV] = str(target)
    return target


def study_name(summary: pd.DataFrame) -> str:
    """``<dataset>_<protocol>_<profile>_<hardware>`` of the summary's runs (several values joined by
    ``+``)."""
    rows = summary[summary["status"] == "ok"] if (summary["status"] == "ok").any() else summary
    return "_".join(_slug(rows[column]) if column in rows else "unknown"
                    for column in ("dataset", "protocol", "profile", "hardware"))


def snapshot(name: str | None = None, results_root: str | Path | None = None,
             dest_root: str | Path | None = None) -> Path:
    """Copy a study's small files to ``<dest_root>/<name>/`` (defaults: the results folder,
    :func:`study_name`).

    Returns:
        The study folder.

    Raises:
        FileNotFoundError: there is no report yet (the message says how to make one).
    """
    root = Path(results_root or paths.results_dir())
    if not (root / "report.md").is_file() or not (root / tables.SUMMARY_FILE).is_file():
        raise FileNotFoundError(f"{root} has no report.md and summary.csv yet: run notebook 04 "
                                f"first (python -m helpers.pipeline --only 04).")
    summary = pd.read_csv(root / tables.SUMMARY_FILE)
    dest = Path(dest_root or root) / (name or study_name(summary))
    dest.mkdir(parents=True, exist_ok=True)
    for file in TOP_FILES:
        if (root / file).is_file():
            shutil.copy2(root / file, dest / file)
    if (root / "figures").is_dir():
        shutil.copytree(root / "figures", dest / "figures", dirs_exist_ok=True)
    if (root / "bench.csv").is_file() and "hardware" in summary:
        bench = pd.read_csv(root / "bench.csv")
        mine = bench[bench["hardware"].isin(set(summary["hardware"].dropna()))]
        if len(mine):
            mine.to_csv(dest / "bench.csv", index=False)
    for run_id in summary["run_id"]:
        for file in RUN_FILES:
            source = scoring.runs_dir(root) / run_id / file
            if not source.is_file():
                continue
            (dest / "runs" / run_id).mkdir(parents=True, exist_ok=True)
            if file == "config.json":  # committed without the paths of this machine
                config = runs.portable_config(runs.load_run_config(source.parent))
                runs.write_json(dest / "runs" / run_id / file, config)
            else:
                shutil.copy2(source, dest / "runs" / run_id / file)
        for scored in sorted((scoring.runs_dir(root) / run_id / external.EXTERNAL_DIR)
                             .glob("*/test_metrics.csv")):
            target = dest / "runs" / run_id / external.EXTERNAL_DIR / scored.parent.name
            target.mkdir(parents=True, exist_ok=True)
            for file in ("eval.json", "test_metrics.csv"):
                if (scored.parent / file).is_file():
                    shutil.copy2(scored.parent / file, target / file)
    return dest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.reporting.snapshot",
                                     description="Copy a study's report, tables, figures and "
                                                 "per-image scores into results/<name>/ to commit.")
    parser.add_argument("--name", default=None, help="folder name (default: "
                                                     "dataset_protocol_profile_hardware)")
    parser.add_argument("--results", default=None, help="results folder (default: $KIT_RESULTS_DIR "
                                                        "or results/)")
    parser.add_argument("--out", default=None, help="where the study folder goes (default: the "
                                                    "results folder)")
    # the older spelling of --out
    parser.add_argument("--dest", default=None, help=argparse.SUPPRESS)
    args = cli.add_debug(parser).parse_args(argv)
    folder = snapshot(args.name, args.results, cli.out_folder(args.out, args.dest))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    print(f"✓ {folder}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
