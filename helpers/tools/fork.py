"""Point a copy of the kit at its own GitHub address: for a class or a fork.

    python -m helpers.tools.fork https://github.com/<you>/<kit> [--ref spring-2027]

It rewrites the notebooks' Colab badges and their ``KIT_REPO``/``KIT_REF`` defaults, the badges and GitHub links of
the README and ``docs/`` (the course site's pages, and ``mkdocs.yml``'s ``repo_url``) and
:data:`helpers.paths.REPO_URL`. Run it once in the fork and commit: the badges then open the fork's notebooks,
which clone the fork at ``ref``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from helpers import cli, paths

GITHUB = "https://github.com/"


def check_url(repo_url: str) -> str:
    """``repo_url`` without a trailing slash.

    Raises:
        ValueError: it is not a ``https://github.com/<owner>/<name>`` address (Colab opens notebooks from GitHub).
    """
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo_url.rstrip("/")):
        raise ValueError(f"{repo_url!r} is not a GitHub address like https://github.com/<owner>/<name>: Colab "
                         "opens notebooks from GitHub by that address.")
    return repo_url.rstrip("/")


def point(text: str, old_url: str, new_url: str, ref: str) -> str:
    """``text`` with its Colab badges, ``REPO_URL``, ``KIT_REPO`` and ``KIT_REF`` moved from ``old_url`` to
    ``new_url`` at ``ref``."""
    old_slug, new_slug = old_url.removeprefix(GITHUB), new_url.removeprefix(GITHUB)
    text = text.replace(f"colab.research.google.com/github/{old_slug}/blob/",
                        f"colab.research.google.com/github/{new_slug}/blob/")
    text = re.sub(r"(colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/)[\w.-]+/", rf"\g<1>{ref}/", text)
    text = re.sub(rf"{re.escape(GITHUB + old_slug)}/(blob|tree)/[\w.-]+/", rf"{GITHUB}{new_slug}/\1/{ref}/", text)
    text = re.sub(rf"{re.escape(GITHUB + new_slug)}/(blob|tree)/[\w.-]+/", rf"{GITHUB}{new_slug}/\1/{ref}/", text)
    text = re.sub(rf"{re.escape(GITHUB + old_slug)}(?=[/\s\"'`)]|$)", GITHUB + new_slug, text, flags=re.M)
    text = text.replace(f'REPO_URL = "{old_url}"', f'REPO_URL = "{new_url}"')
    text = re.sub(r'^KIT_REPO = "[^"]*"', f'KIT_REPO = "{new_url}"', text, flags=re.M)
    return re.sub(r'^KIT_REF = "[^"]*"', f'KIT_REF = "{ref}"', text, flags=re.M)


def point_notebook(text: str, old_url: str, new_url: str, ref: str) -> str:
    """A notebook's JSON text with :func:`point` applied to each cell, written as the kit writes notebooks."""
    notebook = json.loads(text)
    for cell in notebook["cells"]:
        cell["source"] = point("".join(cell["source"]), old_url, new_url, ref).splitlines(keepends=True)
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def fork(repo_url: str, ref: str = "main", root: str | os.PathLike | None = None) -> list[Path]:
    """Point the kit in ``root`` (default this repository) at ``repo_url``, the notebooks' clone at ``ref``.

    Returns:
        The files it changed.

    Raises:
        ValueError: see :func:`check_url`.
    """
    repo_url, root = check_url(repo_url), Path(root or paths.repo_root())
    old_url = re.search(r'REPO_URL = "([^"]+)"', (root / "helpers" / "paths.py").read_text())[1]
    changed = []
    files = [root / "helpers" / "paths.py", root / "README.md", root / "mkdocs.yml", *sorted((root / "docs").glob("*.md")),
             *sorted((root / "notebooks").glob("*.ipynb"))]
    for file in (f for f in files if f.is_file()):
        text = file.read_text()
        rewrite = point_notebook if file.suffix == ".ipynb" else point
        new = rewrite(text, old_url, repo_url, ref)
        if new != text:
            file.write_text(new)
            changed.append(file)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tools.fork URL [--ref REF]``: point this copy of the kit at a fork; errors as one line
    (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.fork",
                                     description="Point the badges and the notebooks' clone at another repository.")
    parser.add_argument("url", help="https://github.com/<owner>/<name> of the fork")
    parser.add_argument("--ref", default="main", help="branch or tag the notebooks clone (default main)")
    args = cli.add_debug(parser).parse_args(argv)
    try:
        changed = fork(args.url, args.ref)
    except ValueError as err:  # the address or the ref: wrong where it enters
        raise cli.BadValue(str(err)) from None
    for file in changed:
        print(f"updated {file.relative_to(paths.repo_root())}")
    print("Commit these files; the badges now open the fork's notebooks, which clone it at", args.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
