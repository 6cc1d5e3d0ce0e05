"""The README and docs/: short where they must be, numbers true to the committed CSVs, every link resolving, and the
course site (MkDocs) building offline with its internal links intact."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest

from helpers import paths

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = ["index", "colab", "data", "profiles", "training", "results", "predict", "gpu", "speed", "troubleshooting",
         "layout", "licences", "publishing"]
SHIPPED = ROOT / "results" / "isic2018-task1-512_seed_cpu-kit_cpu-2-cores"
REPO_LINK = re.compile(re.escape(paths.REPO_URL) + r"/(?:blob|tree)/[\w.-]+/([^)\s#\"'>]+)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_readme_is_read_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: at most 200; move the detail to a page in docs/"


def test_every_docs_page_exists_and_is_in_the_site_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert (DOCS / f"{page}.md").is_file(), f"docs/{page}.md is missing"
        assert f" {page}.md" in nav, f"mkdocs.yml's nav does not list docs/{page}.md"


def test_the_readme_results_table_is_the_shipped_models_summary():
    summary = pd.read_csv(SHIPPED / "summary.csv").set_index("model")
    text = README.read_text()
    for model, label in (("unet", "| UNet |"), ("unetpp", "| UNet++, deep supervision |"), ("transunet", "| TransUNet |")):
        row = summary.loc[model]
        line = next(line for line in text.splitlines() if line.startswith(label))
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        assert cells[1] == f"{row['params'] / 1e6:.2f} M", (model, cells)
        assert cells[2] == f"{row['dice_mean']:.3f} [{row['dice_ci_low']:.3f}, {row['dice_ci_high']:.3f}]", (model, cells)
        assert cells[3] == f"{row['jaccard_thresholded_mean']:.3f}", (model, cells)


def test_the_profile_table_is_the_profiles():
    from helpers.profiles import DEFAULT_DATA, PROFILES

    words = {"bundled": "bundled archive", "isic2018": "official download", "synthetic": "synthetic sample"}
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.strip("|").split("|")]
            for line in (DOCS / "profiles.md").read_text().splitlines() if line.startswith("| `")}
    assert set(rows) == set(PROFILES), "docs/profiles.md: one row per profile"
    for name, config in PROFILES.items():
        _, _, data, size, _, epochs, *_ = rows[name]
        assert size == f"{config.image_size} px" and epochs == str(config.num_epochs), (name, rows[name])
        assert data.startswith(words[DEFAULT_DATA[name]]), (name, data)
        if config.data_subset:
            assert f"subset of {config.data_subset} pairs" in data, (name, data)


def test_the_readme_predict_line_names_a_shipped_run():
    run = re.search(r"lesion-predict (results/\S+)", README.read_text())
    assert run and (ROOT / run[1] / "checkpoints" / "best.pt").is_file() and (ROOT / run[1] / "MODEL_CARD.md").is_file()


def test_links_to_files_of_the_repository_resolve():
    """Relative links in the README and docs/, and links to this repository on GitHub, name files that exist."""
    broken = []
    for page in _markdown():
        text = page.read_text()
        for path in REPO_LINK.findall(text):
            if not (ROOT / unquote(path)).exists():
                broken.append(f"{page.relative_to(ROOT)}: {path}")
        for target in MD_LINK.findall(text):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            target = unquote(target.split("#", 1)[0])
            here = page.parent / target
            if not (here.exists() or (page.parent == DOCS and (ROOT / "results" / target).exists())):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


class _Links(HTMLParser):
    """Every href and src of an HTML page."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


NO_NETWORK = ("import socket\n"
              "def _refuse(*args, **kwargs):\n"
              "    raise OSError('the course site must build offline: something tried the network')\n"
              "socket.socket.connect = socket.socket.connect_ex = _refuse\n"
              "socket.create_connection = socket.getaddrinfo = _refuse\n"
              "import sys\n"
              "from mkdocs.__main__ import cli\n"
              "sys.argv = ['mkdocs', 'build', '--strict', '--site-dir', sys.argv[1]]\n"
              "cli()\n")


@pytest.mark.slow
def test_the_course_site_builds_offline_and_its_internal_links_resolve(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocs_jupyter")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK, str(site)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not list(ROOT.glob(".cache/mkdocs-jupyter")), "the build wrote a cache into the repository"
    for name in ("01_data_prep", "02_unet", "03_unetpp_transunet", "04_results"):
        page = site / "demo_notebooks" / name / "index.html"
        assert page.is_file() and "jp-OutputArea" in page.read_text(), f"{name}: no page with outputs"
    broken = []
    for page in site.rglob("*.html"):
        if page.name == "404.html":  # absolute links by design: it is served for any missing path
            continue
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for link in parser.found:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("#", "mailto:", "data:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
    assert not broken, "internal links of the site that lead nowhere:\n" + "\n".join(sorted(set(broken))[:40])
