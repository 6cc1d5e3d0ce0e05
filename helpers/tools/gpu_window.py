"""The GPU study in a time budget you choose, on any CUDA GPU you have: the T4 check, the benchmark rows, the recipe
comparison and the grid, each within its share of the minutes, then a compact bundle of what was measured.

    python -m helpers.tools.shrink /path/to/isic2018 --out data/isic2018_task1_256 --size 256   # once, to take the data
    python -m helpers.tools.gpu_window --out OUT --minutes 9 --data-dir data/isic2018_task1_256 [--previous DIR ...]
    python -m helpers.tools.gpu_window --out /tmp/window --dry-run     # tiny models, synthetic data, CPU, seconds

This module holds the command line, the window's budget and the bundle; the steps themselves, the window's
settings and its clock are in :mod:`helpers.tools.gpu_window_steps`. First the data is prepared (``data``); then the
steps, in priority order (``t4``: the T4 path emulated in fp16 within 15 GB; ``bench``: :mod:`helpers.tools.bench`'s
rows on this device; ``recipes``: ``seed`` against ``kit`` on UNet++; ``grid``: the ``t4`` profile's grid), each
within a share of the window (:data:`SHARES`), what one leaves going on to the next.

The clock is read between steps, before each run and after every epoch: what does not fit is left, and said so.
Finished runs of an earlier window (``runs.tar.gz`` in ``--out`` or a ``--previous`` folder) are brought back
(:func:`bring_back`) and not trained again; rows an earlier window measured on the same hardware are kept.

The bundle, seven files flat in ``--out`` (easy to copy off a remote machine): ``window.log``, ``window.json`` (per
step: status, seconds, notes, what was left), ``t4_check.csv``, ``bench.csv``, ``recipes.csv``, ``grid.csv``
and ``runs.tar.gz`` (the run folders without checkpoints and ``test_preds.npz``). It is rewritten after every step.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd

from helpers import cli, paths
from helpers.tools.gpu_window_steps import (
    Window,
    step_bench,
    step_data,
    step_grid,
    step_recipes,
    step_t4,
)

STEPS = ("t4", "bench", "recipes", "grid")
SHARES = {"data": 0.25, "t4": 0.2, "bench": 0.2, "recipes": 0.5, "grid": 1.0}  # the most of the window each may use
TABLES = {"t4": "t4_check", "bench": "bench", "recipes": "recipes", "grid": "grid"}
SKIPPED_FILES = ("test_preds.npz",)  # recomputable from a checkpoint, and too large for the bundle


def bring_back(w: Window) -> list[str]:
    """Copy the finished run folders of earlier windows' bundles into this window's results; returns their names."""
    from helpers.training import runs  # torch: only once --dry-run has hidden the GPU

    dest, found = w.work / "results" / "runs", []
    dest.mkdir(parents=True, exist_ok=True)
    for k, place in enumerate([w.out, *w.previous]):
        unpacked = w.work / "earlier" / str(k)
        if (place / "runs.tar.gz").is_file():
            with tarfile.open(place / "runs.tar.gz") as tar:
                tar.extractall(unpacked, filter="data")
            place = unpacked
        for folder in sorted((place / "runs").glob("*")) if (place / "runs").is_dir() else []:
            if runs.is_finished(folder) and not (dest / folder.name).exists():
                shutil.copytree(folder, dest / folder.name, ignore=shutil.ignore_patterns("checkpoints", "*.pt"))
                found.append(folder.name)
    return found


def write_bundle(w: Window) -> None:
    """The tables, window.json and runs.tar.gz in ``--out``, each written whole (temp file, then rename)."""
    for step, rows in w.tables.items():
        paths.write_atomic(w.out / f"{TABLES[step]}.csv", lambda tmp, r=rows: pd.DataFrame(r).to_csv(tmp, index=False))
    summary = {"minutes": w.minutes, "dry_run": w.dry_run, "data_dir": w.data_dir,
               "seconds": round(time.monotonic() - w.start, 1), "steps": w.report,
               "left": [f"{step}: {x}" for step, entry in w.report.items() for x in entry["left"]]}
    paths.write_atomic(w.out / "window.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1, default=str)))
    root = w.work / "results" / "runs"

    def pack(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for file in sorted(root.rglob("*")) if root.is_dir() else []:
                rel = file.relative_to(root)
                if file.is_file() and "checkpoints" not in rel.parts and file.suffix != ".pt" \
                        and file.name not in SKIPPED_FILES:
                    tar.add(file, arcname=f"runs/{rel}")
    paths.write_atomic(w.out / "runs.tar.gz", pack)


def run_step(w: Window, name: str, step) -> None:
    """One step within its share of the time; a failure is noted and the next step goes on."""
    entry = w.report.setdefault(name, {"status": "skipped", "seconds": 0.0, "notes": [], "left": []})
    deadline = min(time.monotonic() + SHARES[name] * 60 * w.minutes, w.end())
    entry["budget_s"] = round(deadline - time.monotonic(), 1)
    if deadline - time.monotonic() < w.min_run_s:
        entry["left"].append(f"the whole step, not started: {max(0.0, w.end() - time.monotonic()):.1f} s were left "
                             f"in the window (at least {w.min_run_s:g} s needed)")
        print(f"== {name}: skipped, no time left")
        return write_bundle(w)
    print(f"== {name}: up to {entry['budget_s']:.0f} s")
    started = time.monotonic()
    try:
        step(w, deadline, entry)
        entry["status"] = "stopped" if entry["left"] else "done"
    except Exception as err:  # one failed step must not cost the window's other steps
        traceback.print_exc()
        entry["status"], entry["notes"] = "failed", [*entry["notes"], f"{type(err).__name__}: {err}"]
    entry["seconds"] = round(time.monotonic() - started, 1)
    print(f"== {name}: {entry['status']} in {entry['seconds']:.0f} s" + "".join(f"\n   left: {x}" for x in entry["left"]))
    write_bundle(w)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m helpers.tools.gpu_window``."""
    parse = argparse.ArgumentParser(prog="python -m helpers.tools.gpu_window", description=__doc__.split("\n\n")[0])
    parse.add_argument("--out", required=True, help="folder for the bundle (an earlier bundle there is built on)")
    parse.add_argument("--minutes", type=float, default=9.0, help="the time budget, writing the bundle included")
    parse.add_argument("--data-dir", default=None, help="ISIC 2018 copy made with helpers.tools.shrink (default: synthetic)")
    parse.add_argument("--previous", nargs="*", default=[], help="earlier bundles, comma-separated (folders with "
                       "runs.tar.gz or runs/)")
    parse.add_argument("--only", default=",".join(STEPS), help=f"steps to run, of {','.join(STEPS)}")
    parse.add_argument("--t4-steps", type=int, default=None, help="training steps per model in the t4 check "
                                                                    "(default 300; dry run 4)")
    parse.add_argument("--grid-recipe", default=None, help="recipe of the grid (default: the t4 profile's, seed)")
    parse.add_argument("--dry-run", action="store_true", help="tiny models, the smoke profile's synthetic data, seconds")
    return cli.add_debug(parse)


def main(argv: list[str] | None = None) -> int:
    """Run the window's steps in order and write the bundle; 0 even when a step stopped or failed (see window.json).
    Errors before the window starts as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := sorted(set(steps) - set(STEPS)):
        raise cli.BadValue(f"--only names unknown step(s) {unknown}; choose from {list(STEPS)}.")
    if args.dry_run and "torch" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path, also on a GPU machine
    import torch  # torch: only once --dry-run has hidden the GPU

    if args.dry_run:
        torch.set_num_threads(1)  # tiny models run fastest, and steadiest on a shared CPU, with one thread

    if not (args.dry_run or torch.cuda.is_available()):
        raise cli.BadValue("No CUDA GPU here: the GPU study needs one. Try it on the CPU with --dry-run.")
    out, data_dir = Path(args.out).resolve(), str(Path(args.data_dir).resolve()) if args.data_dir else None
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kit-gpu-window-"))
    w = Window(out, work, args.minutes, args.dry_run, data_dir, [Path(p).resolve() for p in cli.comma_list(args.previous)],
               args.t4_steps or (4 if args.dry_run else 300), args.grid_recipe)
    functions = {"data": step_data, "t4": step_t4, "bench": step_bench, "recipes": step_recipes, "grid": step_grid}
    with open(out / "window.log", "a") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
            contextlib.redirect_stderr(_Tee(sys.stderr, log)), \
            paths.scoped_env(**{paths.RESULTS_ENV: work / "results", paths.DATA_ENV: work / "data"}):
        try:
            print(f"gpu window {time.strftime('%Y-%m-%d %H:%M')}: {args.minutes:g} min, steps {steps}, data "
                  f"{data_dir or 'synthetic'}{' (dry run)' if args.dry_run else ''}")
            if earlier := bring_back(w):
                print(f"{len(earlier)} finished run(s) of earlier windows, not trained again: {', '.join(earlier)}")
            for name in ["data", *steps]:  # the data first, always
                run_step(w, name, functions[name])
        finally:
            write_bundle(w)
            shutil.rmtree(work, ignore_errors=True)
    print(f"bundle in {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
