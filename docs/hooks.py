"""MkDocs hook: the four executed demo notebooks (``results/demo_notebooks/*.ipynb``) become pages of the course site.

They live beside the studies under ``results/``, not in ``docs/``; this hook adds each to the site as
``demo_notebooks/<name>.ipynb`` before mkdocs-jupyter renders it (hence the high priority: it runs before the
plugins). A notebook's relative links name files beside it in the repository's ``notebooks/`` folder (its
``README.md``, ``../helpers/...``); on the site they point to those files on GitHub instead.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[1] / "results"
FOLDER = "demo_notebooks"


@event_priority(100)
def on_files(files: Files, config) -> Files:
    """Add every published notebook to the site's files (mkdocs-jupyter then turns each into a page)."""
    for path in sorted((RESULTS / FOLDER).glob("*.ipynb")):
        files.append(File(f"{FOLDER}/{path.name}", src_dir=str(RESULTS), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


RELATIVE_HREF = re.compile(r'href="(?![a-z][a-z0-9+.-]*:|#|/)([^"]+)"')


def on_page_content(html: str, page, config, files: Files) -> str:
    """In a notebook page, relative links to repository files become links to them on GitHub."""
    if not page.file.src_uri.startswith(f"{FOLDER}/"):
        return html
    base = f"{config['repo_url'].rstrip('/')}/blob/main/notebooks/"
    return RELATIVE_HREF.sub(lambda m: f'href="{base}{m[1]}"', html)

