"""The kit's code, grouped by the study's stages; the notebooks import it, the tools use it.

Layers, lowest first; a module imports only from its own layer or lower ones, there are no import cycles,
and no course module imports ``tools/`` (``tests/kit/test_architecture.py`` checks all three):

    cli          how a command line reports an error: one line and an exit code        every command
    paths        where things live: the kit's home, local or on Drive; Colab detection   all notebooks
    profiles     the one typed run config, each setting declared once; named profiles    all notebooks
    recipes      the named training recipes (``seed``, the original study's; ``kit``)    02, 03
    runtime      every notebook's setup: Drive and the home on Colab, what Colab lacks   all notebooks
    data/        sources, validation, the prepared cache, splits, loaders                01 (02, 03 reload)
    models/      UNet, UNet++, TransUNet, encoders, the registry of named configs        02, 03
    training/    loss, metrics, the loop, resume, run folders, devices, the grid         02, 03
    evaluation/  inference, scoring, statistics, failures, export, challenge format      04
    reporting/   tables, figures, report, viewer, study snapshots                        04 (figures: 01-03)
    pipeline     the papermill runner: the four notebooks in one command (make demo)     none: runs them
    tools/       benchmarks, the GPU window, shrink, fork, publishing notebooks          none: maintainers

:data:`__version__` is the kit's version (``pyproject.toml`` reads it from here) and :func:`version_info` adds
the git commit of a checkout. Importing a module here has no side effects: nothing seeds, downloads, mounts,
plots or runs git.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.5.0"

_CHECKOUT = Path(__file__).resolve().parent.parent  # the repository, when the kit runs from a clone


def git_commit(root: str | Path | None = None) -> str | None:
    """The short commit of the git checkout at ``root`` (default: the one holding this package), or None.

    None when ``root`` has no ``.git`` (an installed copy, a zip download), when git is not installed or
    refuses (e.g. a repository owned by another user), or when it does not answer within 10 s.
    """
    root = Path(root) if root else _CHECKOUT
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def version_info() -> dict:
    """What a run records to say which code made it: ``{"kit_version": "0.4.0", "git_commit": "abc1234" or None}``."""
    return {"kit_version": __version__, "git_commit": git_commit()}
