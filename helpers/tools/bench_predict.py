"""Benchmark predicting on your own images: images/s and peak memory for 512-px and 6,000-px JPEGs.

    python -m helpers.tools.bench_predict [RUN] [--device cpu]

RUN is a run folder or an exported model (default: the newest run under ``results/runs`` with a checkpoint).
Every case runs in a fresh Python process, so its peak memory (resident set) is its own: first a process that
only loads the model (the baseline: Python, torch and the model), then one per case that predicts on generated
JPEGs, 20 of 512 × 512 px and 5 of 6,000 × 4,000 px (a camera's full size). ``images_per_s`` is the images over
the seconds of the ``predict`` call (loading the model, reading the images and writing masks, overlays and the CSV
included; Python's start-up not); ``seconds`` is the whole process. Peak memory is the process's maximum resident
set (``ru_maxrss``, read as KiB: Linux), CPU memory only. Rows are printed and appended to ``results/bench.csv``
(section ``predict``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers import cli, paths
from helpers.training import runs

CASES = (("512 px JPEGs", 20, (512, 512)), ("6000 px JPEGs", 5, (6000, 4000)))
CHILD = """
import json, resource, sys, time
begun = time.perf_counter()
from helpers.evaluation import predict
run, inputs, out, device = sys.argv[1:5]
if inputs == "-":
    predict.load_predictor(run, device)
    predicting = 0.0
else:
    start = time.perf_counter()
    predict.predict(run, [inputs], out, device=device, progress=False)
    predicting = time.perf_counter() - start
print(json.dumps({"seconds": time.perf_counter() - begun, "predicting": predicting,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))
"""


def write_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``count`` smooth random JPEGs of ``size`` (width, height), quality 90, as a camera would save them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        small = Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8))
        small.resize(size, Image.BICUBIC).save(folder / f"photo_{k:02d}.jpg", quality=90)
    return folder


def _child(run: Path, inputs: str, out: str, device: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(run), inputs, out, device], cwd=paths.repo_root(),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"predicting with {run} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def newest_run() -> Path | None:
    """The most recently changed run folder that has a best checkpoint, if any."""
    found = [p for p in (paths.results_dir() / "runs").glob("*") if p.is_dir() and runs.has_checkpoint(p)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def bench_predict(run: str | Path, device: str = "cpu") -> list[dict]:
    """One row for the baseline and one per case of :data:`CASES`."""
    run = Path(run)
    base = _child(run, "-", "-", device)
    rows = [{"section": "predict", "name": "load the model only", "peak_gb": base["peak_gb"], "seconds": base["seconds"]}]
    with tempfile.TemporaryDirectory(prefix="kit-bench-predict-") as scratch:
        for name, count, size in CASES:
            photos = write_photos(Path(scratch) / name.replace(" ", "_"), count, size)
            got = _child(run, str(photos), str(Path(scratch) / "out"), device)
            rows.append({"section": "predict", "name": f"{count} {name}", "images": count,
                         "images_per_s": count / got["predicting"], "seconds": got["seconds"],
                         "peak_gb": got["peak_gb"], "extra_gb": got["peak_gb"] - base["peak_gb"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the prediction benchmark, print the table, append the rows to results/bench.csv; errors as one line
    (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.bench_predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="a run folder or an exported model (default: the newest run)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or mps where torch has it")
    args = cli.add_debug(parser).parse_args(argv)
    cli.check_device(args.device)
    run = Path(args.run) if args.run else newest_run()
    if run is None or not run.exists():
        raise FileNotFoundError(f"{args.run or paths.results_dir() / 'runs'}: no run with a checkpoint and no "
                                f"exported model given; train one (e.g. make demo) or give a run folder.")
    model = runs.load_run_config(run).get("run_id", run.name) if run.is_dir() else run.name
    table = pd.DataFrame(bench_predict(run, args.device)).assign(model=model, device=args.device,
                                                                 date=time.strftime("%Y-%m-%d"))
    print(table.round(3).to_string(index=False))
    out = paths.results_dir() / "bench.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([pd.read_csv(out) if out.exists() else None, table], ignore_index=True).to_csv(out, index=False)
    print(f"rows appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
