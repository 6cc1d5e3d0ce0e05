"""Run the notebooks in order, headlessly, with papermill: the whole study in one command.

    python -m helpers.pipeline --profile smoke
    python -m helpers.pipeline --profile t4 -p DATA_SOURCE folder -p DATA_DIR /path/to/isic

Each notebook runs from ``notebooks/`` with the same parameters; its executed copy goes to
``results/notebooks/<profile>/``. A notebook that fails stops the run, and the error names
the executed copy to open.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from helpers import paths

NOTEBOOKS = ("01_data_prep.ipynb", "02_unet.ipynb", "03_unetpp_transunet.ipynb", "04_results.ipynb")


def notebooks_present(folder: Path | None = None) -> list[Path]:
    """The study's notebooks that exist, in order."""
    folder = folder or paths.repo_root() / "notebooks"
    return [folder / name for name in NOTEBOOKS if (folder / name).exists()]


def parse_value(text: str):
    """A parameter value from the command line: a Python literal if it is one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_notebooks(profile: str, parameters: dict | None = None, only: list[str] | None = None,
                  out_dir: Path | None = None) -> list[Path]:
    """Execute the notebooks in order with papermill.

    Args:
        profile: profile name passed as the ``PROFILE`` parameter.
        parameters: further notebook parameters (e.g. ``{"DATA_SOURCE": "folder"}``).
        only: run only notebooks whose names start with one of these prefixes (e.g. ``["01"]``).
        out_dir: where executed copies go (default ``results/notebooks/<profile>``).

    Returns:
        Paths of the executed notebooks.

    Raises:
        RuntimeError: a notebook failed; names the executed copy holding the traceback.
    """
    import papermill as pm

    out_dir = Path(out_dir or paths.results_dir() / "notebooks" / profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile, **(parameters or {})}
    done = []
    for notebook in notebooks_present():
        if only and not notebook.name.startswith(tuple(only)):
            continue
        target = out_dir / notebook.name
        start = time.perf_counter()
        print(f"▶ {notebook.name} (profile {profile}) → {target}", flush=True)
        try:
            pm.execute_notebook(notebook, target, parameters=params, cwd=str(notebook.parent),
                                kernel_name="python3", progress_bar=False)
        except pm.PapermillExecutionError as err:
            raise RuntimeError(f"{notebook.name} failed ({err.ename}: {err.evalue}); the executed copy with "
                               f"the traceback is {target}") from None
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
        done.append(target)
    return done


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Run the study's notebooks with papermill.")
    parser.add_argument("--profile", default="smoke", help="smoke, cpu or t4 (default smoke)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter, e.g. -p DATA_SOURCE folder")
    parser.add_argument("--only", action="append", help="run only notebooks starting with this prefix")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        done = run_notebooks(args.profile, {k: parse_value(v) for k, v in args.parameter}, args.only)
    except RuntimeError as err:
        print(f"✗ {err}", file=sys.stderr)
        return 1
    print(f"✓ {len(done)} notebook(s) in {time.perf_counter() - start:.1f} s; executed copies in "
          f"{done[0].parent if done else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
