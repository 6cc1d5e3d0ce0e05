"""Score trained runs on another dataset used whole as a test set (an *external* test set).

    results/runs/<run_id>/external/<test dataset>/  test_metrics.csv  eval.json  test_preds.npz
    results/external.csv   one row per run and external dataset: the in-distribution and the
                           external per-image Dice (and thresholded Jaccard) with 95 % CIs, and
                           the drop between them

A run's own test split comes from the dataset it was trained on; a model that scores well there can
score much less on images from another clinic, camera or population. Preparing another dataset with
the ``external`` protocol (every image a test image) and scoring the runs on it measures that.

The drop is the in-distribution mean minus the external mean of the same run. The two test sets hold
different images, so its 95 % CI resamples both independently (it is paired by run, not by image).

    python -m helpers.evaluation.external --data-source folder --data-dir PH2Dataset

A folder or zip is prepared under a name of its own (its base name and a hash of its full path, so
``A/data`` and ``B/data`` are two datasets), and its preparation is reused only while its files are
unchanged (names, sizes, modification times: ``source_stamp.json`` in the preparation); otherwise it
is prepared again, with a note, and the runs are scored again (the scores record the preparation
they were made on).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import cli, paths
from helpers.data import prep, sources
from helpers.data.sources import SOURCES, ensure_prepared
from helpers.evaluation import inference, scoring, stats
from helpers.profiles import PROFILES, RunConfig, resolve_config
from helpers.training import devices, runs

EXTERNAL_DIR = "external"
EXTERNAL_FILE = "external.csv"
# a synthetic "external" set: another draw of the offline sample (same generator: no real shift)
SYNTHETIC_SEED = 1
SCORES = ("dice", "jaccard_thresholded")


def external_dir(run_dir: str | Path, test_dataset: str) -> Path:
    """Where a run's scores on an external dataset go."""
    return Path(run_dir) / EXTERNAL_DIR / test_dataset


def prepare_external(config: RunConfig, data_source: str, data_dir: str | None = None,
                     image_size: int | None = None, on_bad_file: str = "raise",
                     mask_suffix: str | None = "auto"):
    """Prepare a dataset whole as a test set (protocol ``external``) at a run's image size.

    Args:
        config: the profile (its split seed; its image size unless ``image_size`` is given).
        data_source, data_dir: as in notebook 01 (``synthetic`` gives another draw of the offline
        sample). image_size: the size the runs to score were trained at. on_bad_file: ``raise`` or
        ``skip``. mask_suffix: plain image/mask folders only: how mask names end (``auto``:
        detected).

    Returns:
        The :class:`~helpers.data.prep.Prepared` dataset; its every image is in the ``test`` split.
    """
    if data_source not in SOURCES:
        raise ValueError(f"EXTERNAL_SOURCE={data_source!r} is not one of {SOURCES}.")
    if data_source in ("folder", "zip") and not data_dir:
        raise ValueError(f"EXTERNAL_SOURCE={data_source!r} needs EXTERNAL_DIR (--data-dir): the "
                         "folder or zip of the other dataset (ISIC, PH2 or images/masks folders).")
    sized = dataclasses.replace(config, image_size=int(image_size or config.image_size))
    if data_source in ("folder", "zip"):
        return _prepare_given(sized, data_source, data_dir, on_bad_file, mask_suffix)
    seed = SYNTHETIC_SEED if data_source == "synthetic" else 0
    return ensure_prepared(sized, data_source, data_dir or None, "external", on_bad_file,
                           sample_seed=seed, mask_suffix=mask_suffix)


def source_name(given: Path) -> str:
    """The dataset name of a folder or zip: its base name and 6 hex digits of its full path
    (``data-3f9c01``)."""
    base = sources.dataset_name("folder", str(given), None)
    return f"{base}-{hashlib.sha256(str(given.resolve()).encode()).hexdigest()[:6]}"


def _prepare_given(config: RunConfig, data_source: str, data_dir: str, on_bad_file: str,
                   mask_suffix: str | None):
    """Prepare a folder or zip as an external test set under :func:`source_name`, again when its
    files changed."""
    given = sources.expected_source("folder", data_dir, config)
    if given is None:
        # raises DataError: the folder or zip is not there
        sources.get_source("folder", data_dir, config)
    name = source_name(given)
    out_dir = paths.prepared_root() / prep.prepared_name(name, "external", config.image_size,
                                                         config.split_seed)
    stamp = prep.source_stamp(given)
    if prep.stale_source(out_dir, stamp):
        print(f"{given} changed since it was prepared ({stamp['files']} files now): preparing it "
              f"again.")
        (out_dir / "prepared.json").unlink()
        shutil.rmtree(paths.raw_dir(name), ignore_errors=True)  # a zip's earlier extraction
    unpacked = paths.raw_dir(name)
    root = (given if data_source == "folder"
            else sources.extract_zips(given, unpacked, "EXTERNAL_SOURCE"))
    prepared = prep.prepare(root, out_dir, config.image_size, "external", config.split_seed,
                            on_bad_file, mask_suffix=mask_suffix)
    prep.write_stamp(out_dir, stamp)
    return prepared


# eval.json key, evaluate() option
SETTINGS = (("threshold", "threshold"), ("tta", "tta"), ("postprocess", "post"))


def _run_settings(run_dir: Path) -> dict:
    """The threshold, TTA and post-processing of a run's own evaluation (as
    :func:`inference.evaluate` options)."""
    saved = scoring.read_eval(run_dir)
    return {option: saved[key] for key, option in SETTINGS if key in saved}


def _scored_alike(run_dir: Path, folder: Path, prepared_id: str | None = None) -> bool:
    """True when a run's external scores exist and were made with the settings of its own evaluation
    (and, when ``prepared_id`` is given, on that very preparation of the dataset)."""
    if not (folder / inference.METRICS_FILE).is_file():
        return False
    try:
        saved = scoring.read_eval(folder)
        own = _run_settings(run_dir)
    except ValueError:
        return False
    if prepared_id is not None and saved.get("prepared_id") != prepared_id:
        return False
    return all(saved.get(key) == own[option] for key, option in SETTINGS if option in own)


def _shared_images(run_dir: Path, config: dict, prepared) -> int:
    """How many of the external images the run's own dataset holds (by id); 0 when its data is not
    here."""
    splits = runs.prepared_dir(config) / "splits.csv"
    if not splits.is_file():
        return 0
    own = set(pd.read_csv(splits, usecols=["isic_id"],
                          keep_default_na=False)["isic_id"].astype(str))
    return len(own & set(prepared.table["isic_id"].astype(str)))


def evaluate_external(run_dir: str | Path, prepared, *, load_model=None, device=None,
                      **options) -> Path:
    """Score one finished run on every test image of another prepared dataset, with the run's own
    settings.

    The threshold, TTA and post-processing are those of the run's in-distribution evaluation (its
    ``eval.json``), so the two scores differ only in the images.

    Returns:
        The path of the external ``test_metrics.csv``.

    Raises:
        ValueError: the dataset is prepared at another size than the run was trained at, or is the
            run's own.
    """
    run_dir = Path(run_dir)
    config = scoring.run_config(run_dir)
    size, trained = int(prepared.images.shape[1]), int(config["image_size"])
    if size != trained:
        raise ValueError(f"{prepared.root} is prepared at {size} px but run {run_dir.name} was "
                         f"trained at {trained} px; prepare the external data at {trained} px "
                         f"(prepare_external(..., image_size={trained})).")
    test_dataset = runs.dataset_of(prepared)
    if test_dataset == config.get("dataset"):
        raise ValueError(f"{prepared.root} is the dataset run {run_dir.name} was trained on; its "
                         f"test split is scored by evaluate_runs. An external test set is another "
                         f"dataset.")
    shared = _shared_images(run_dir, config, prepared)
    if shared:
        raise ValueError(f"{prepared.root}: {shared} of its {len(prepared.table)} images have the "
                         f"ids of images in the dataset run {run_dir.name} was trained on "
                         f"({config.get('dataset')}), so it is not another dataset (another copy "
                         f"of ISIC?); choose a dataset with other images.")
    for option, value in _run_settings(run_dir).items():
        options.setdefault(option, value)
    options.setdefault("batch_size", int(config.get("batch_size") or 16))
    model = (load_model or runs.load_run_model)(run_dir).to(device or devices.pick_device())
    result = inference.evaluate(model, prepared, "test", **{"progress": False, **options})
    result.info.update({"test_dataset": test_dataset, "trained_on": config.get("dataset"),
                        "prepared": f"prepared/{prepared.root.name}",
                        "prepared_id": prepared.manifest.get("prepared_id")})
    folder = external_dir(run_dir, test_dataset)
    folder.mkdir(parents=True, exist_ok=True)
    return inference.save_evaluation(result, folder)


def evaluate_external_runs(prepared, results_root: str | Path | None = None, *,
                           overwrite: bool = False, **options) -> pd.DataFrame:
    """Score every evaluated run trained at the dataset's image size on it (skipping runs scored
    already with the threshold, TTA and post-processing of their own evaluation; scored again when
    those changed).

    Returns:
        One row per run folder: ``run_id`` and ``action`` (evaluated, or skipped / failed and why).
    """
    test_dataset, size = runs.dataset_of(prepared), int(prepared.images.shape[1])
    done = []
    for run_dir in scoring.list_run_dirs(results_root):
        status, problem = scoring.run_status(run_dir)
        if status != "ok":
            action = "skipped: " + problem
        elif int(scoring.run_config(run_dir).get("image_size", -1)) != size:
            action = f"skipped: trained at another size than {size} px"
        elif not runs.has_checkpoint(run_dir):
            action = ("skipped: no checkpoint here (a committed study, or checkpoints left on "
                      "another machine)")
        elif _scored_alike(run_dir, external_dir(run_dir, test_dataset),
                           prepared.manifest.get("prepared_id")) \
                and not overwrite:
            action = "skipped: already scored on " + test_dataset
        else:
            try:  # a missing checkpoint fails this run only
                evaluate_external(run_dir, prepared, **options)
                action = "evaluated"
            except (OSError, ValueError, RuntimeError) as err:
                action = f"failed: {type(err).__name__}: {err}"
        done.append({"run_id": run_dir.name, "test_dataset": test_dataset, "action": action})
    return pd.DataFrame(done, columns=["run_id", "test_dataset", "action"])


def _scores(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float, np.ndarray]:
    """Mean of the finite values, its percentile-bootstrap 95 % CI, and the bootstrap means
    themselves."""
    means = stats.bootstrap_means(values, n_boot, seed)
    finite = values[np.isfinite(values)]
    return (float(finite.mean()) if finite.size else float("nan"),
            *stats.percentile_interval(means), means)


def external_rows(run_dir: str | Path, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per external dataset a run was scored on: both means with CIs and the drop with its
    CI (scores made with other settings than the run's own evaluation are left out: score them
    again)."""
    run_dir = Path(run_dir)
    if scoring.run_status(run_dir)[0] != "ok" or not (run_dir / EXTERNAL_DIR).is_dir():
        return []
    config = scoring.run_config(run_dir)
    inside = scoring.read_metrics(run_dir / inference.METRICS_FILE)
    rows = []
    # stale: left out
    for folder in sorted(p for p in (run_dir / EXTERNAL_DIR).iterdir()
                         if _scored_alike(run_dir, p)):
        outside = scoring.read_metrics(folder / inference.METRICS_FILE)
        row = {"run_id": run_dir.name, "model": config.get("model"),
               "fraction": config.get("fraction"), "image_size": config.get("image_size"),
               "trained_on": config.get("dataset"), "test_dataset": folder.name,
               "n_in": len(inside), "n_external": len(outside)}
        for metric in SCORES:
            if metric not in inside or metric not in outside:
                continue
            mean_in, low_in, high_in, boot_in = _scores(inside[metric].to_numpy(np.float64), n_boot,
                                                        seed)
            mean_out, low_out, high_out, boot_out = _scores(outside[metric].to_numpy(np.float64),
                                                            n_boot, seed + 1)
            drop_low, drop_high = stats.percentile_interval(boot_in - boot_out)
            row.update({f"{metric}_in": mean_in, f"{metric}_in_ci_low": low_in,
                        f"{metric}_in_ci_high": high_in, f"{metric}_external": mean_out,
                        f"{metric}_external_ci_low": low_out,
                        f"{metric}_external_ci_high": high_out,
                        f"{metric}_drop": mean_in - mean_out,
                        f"{metric}_drop_ci_low": float(drop_low),
                        f"{metric}_drop_ci_high": float(drop_high)})
        rows.append(row)
    return rows


def external_table(results_root: str | Path | None = None, n_boot: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """Every run's external scores (:func:`external_rows`), sorted by test dataset, fraction and
    model."""
    rows = [r for run_dir in scoring.list_run_dirs(results_root)
            for r in external_rows(run_dir, n_boot, seed)]
    table = pd.DataFrame(rows)
    return (table.sort_values(["test_dataset", "fraction", "model"], kind="stable")
            .reset_index(drop=True) if rows else table)


def write_external(results_root: str | Path | None = None, n_boot: int = 2000,
                   seed: int = 0) -> Path | None:
    """Write ``<results>/external.csv`` (None, and no file, when no run was scored on another
    dataset)."""
    root = Path(results_root or paths.results_dir())
    table = external_table(root, n_boot, seed)
    (root / EXTERNAL_FILE).unlink(missing_ok=True)
    if table.empty:
        return None
    return paths.write_atomic(root / EXTERNAL_FILE,  # never through a link there
                              lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))


def readable(table: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """The external table for people: one line per run and test set, ``mean [95 % CI]`` in each
    column."""
    if table.empty:
        return pd.DataFrame()

    def cell(row, key):
        return f"{row[key]:.3f} [{row[key + '_ci_low']:.3f}, {row[key + '_ci_high']:.3f}]"

    return pd.DataFrame({
        "model": table["model"], "fraction": [f"{100 * f:.0f} %" for f in table["fraction"]],
        "trained on": table["trained_on"], "tested on": table["test_dataset"],
        "images (own / external)": [f"{a} / {b}"
                                    for a, b in zip(table["n_in"], table["n_external"])],
        f"{metric}, own test split": [cell(r, f"{metric}_in") for _, r in table.iterrows()],
        f"{metric}, external": [cell(r, f"{metric}_external") for _, r in table.iterrows()],
        "drop (own − external)": [cell(r, f"{metric}_drop") for _, r in table.iterrows()]})


def choose_source(data_source: str | None, results_root: str | Path | None = None) -> str:
    """Notebook 04's ``EXTERNAL_SOURCE``: as given, or for None, ``synthetic`` when the runs here
    were trained on the offline sample (so the demo shows the section) and ``""`` (no external test)
    otherwise."""
    if data_source is not None:
        return data_source
    trained = {scoring.run_config(p).get("dataset") for p in scoring.list_run_dirs(results_root)
               if scoring.run_status(p)[0] == "ok"}
    return "synthetic" if trained and all(str(d).startswith("synthetic") for d in trained) else ""


def score_on(config: RunConfig, data_source: str, data_dir: str | None = None,
             results_root: str | Path | None = None, *, overwrite: bool = False,
             on_bad_file: str = "raise", mask_suffix: str | None = "auto",
             **options) -> pd.DataFrame:
    """Prepare a dataset as an external test set at the size of every evaluated run with its
    checkpoint here, and score those runs on it (nothing is prepared when there is none, e.g. in a
    committed study).

    Returns:
        One row per run folder and size: ``run_id``, ``test_dataset``, ``action``; empty without
        such runs.
    """
    root = Path(results_root or paths.results_dir())
    sizes = sorted({int(scoring.run_config(p)["image_size"]) for p in scoring.list_run_dirs(root)
                    if scoring.run_status(p)[0] == "ok" and runs.has_checkpoint(p)})
    done = [evaluate_external_runs(prepare_external(config, data_source, data_dir, size,
                                                    on_bad_file, mask_suffix),
                                   root, overwrite=overwrite, **options) for size in sizes]
    return (pd.concat(done, ignore_index=True) if done
            else pd.DataFrame(columns=["run_id", "test_dataset", "action"]))


def main(argv: list[str] | None = None) -> int:
    """Command line: prepare another dataset as an external test set and score every evaluated run
    on it."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluation.external",
                                     description=main.__doc__)
    parser.add_argument("--data-source", default="folder", choices=SOURCES)
    parser.add_argument("--data-dir", help="the dataset's folder or zip (ISIC, PH2 or a generic "
                                           "images/masks layout)")
    parser.add_argument("--results", help="results folder (default: the kit's results/)")
    parser.add_argument("--profile", default="", choices=["", *PROFILES],
                        help="profile whose split seed to use (default: $KIT_PROFILE, else class "
                             "on Colab or with a GPU and cpu otherwise)")
    parser.add_argument("--overwrite", action="store_true",
                        help="score runs again that were scored on it already")
    parser.add_argument("--on-bad-file", default="raise", choices=("raise", "skip"))
    parser.add_argument("--mask-suffix", default="auto",
                        help="plain image/mask folders: how mask names end (auto: detected)")
    cli.add_device(parser)
    args = cli.add_debug(parser).parse_args(argv)
    cli.use_device(args.device)
    root = Path(args.results or paths.results_dir())
    done = score_on(resolve_config(args.profile), args.data_source, args.data_dir, root,
                    overwrite=args.overwrite, on_bad_file=args.on_bad_file,
                    mask_suffix=args.mask_suffix)
    if done.empty:
        print(f"✗ {scoring.runs_dir(root)}: no evaluated run with its checkpoint to score (train, "
              f"then run notebook 04).", file=sys.stderr)
        return 1
    print(done.to_string(index=False))
    path = write_external(root)
    if path:
        print(readable(pd.read_csv(path)).to_string(index=False))
        print(f"\nwritten: {path} (notebook 04 adds it to the report: python -m helpers.pipeline "
              f"--only 04)")
    return 1 if done["action"].str.startswith("failed").all() else 0


if __name__ == "__main__":
    sys.exit(main())
