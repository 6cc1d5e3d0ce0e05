"""Forking the kit for a class: badges, the notebooks' clone and REPO_URL point at the fork (helpers.tools.fork)."""
import json
import shutil
from pathlib import Path

import pytest

from helpers.tools import fork

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def copy(tmp_path):
    """The files fork rewrites, copied into tmp_path."""
    for name in ["helpers/paths.py", "README.md", *(f"notebooks/{p.name}" for p in NOTEBOOKS)]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_fork_points_badges_and_clone_at_the_fork(copy):
    changed = fork.fork("https://github.com/my-class/lesion-kit", "spring-2027", root=copy)
    assert {p.name for p in changed} == {"paths.py", "README.md", *(p.name for p in NOTEBOOKS)}
    assert 'REPO_URL = "https://github.com/my-class/lesion-kit"' in (copy / "helpers/paths.py").read_text()
    for notebook in (copy / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]  # still a valid notebook
        text = "".join("".join(c["source"]) for c in cells)
        assert 'KIT_REPO = "https://github.com/my-class/lesion-kit"' in text and 'KIT_REF = "spring-2027"' in text
        assert f"colab.research.google.com/github/my-class/lesion-kit/blob/spring-2027/notebooks/{notebook.name}" in text
    assert "github/my-class/lesion-kit/blob/spring-2027/notebooks/04_results.ipynb" in (copy / "README.md").read_text()


def test_forking_twice_to_the_same_place_changes_nothing_more(copy):
    fork.fork("https://github.com/my-class/lesion-kit/", "main", root=copy)  # a trailing slash is dropped
    assert fork.fork("https://github.com/my-class/lesion-kit", "main", root=copy) == []


def test_notebooks_keep_the_kit_s_json_layout(copy):
    notebook = copy / "notebooks" / NOTEBOOKS[0].name
    fork.fork("https://github.com/my-class/lesion-kit", "main", root=copy)
    text = notebook.read_text()
    assert text == json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"


def test_fork_refuses_an_address_colab_cannot_open(copy):
    with pytest.raises(ValueError, match="not a GitHub address"):
        fork.fork("git@github.com:my-class/kit.git", root=copy)


def test_fork_command_line_refuses_a_bad_address(capsys):
    assert fork.main(["ftp://example.org/kit"]) == 2
    assert "not a GitHub address" in capsys.readouterr().err


def test_fork_command_line_lists_what_it_changed(copy, monkeypatch, capsys):
    monkeypatch.setattr(fork.paths, "repo_root", lambda: copy)
    assert fork.main(["https://github.com/my-class/lesion-kit", "--ref", "spring-2027"]) == 0
    out = capsys.readouterr().out
    assert "updated helpers/paths.py" in out and "updated README.md" in out and "clone it at spring-2027" in out


def test_fork_points_the_docs_and_the_site_at_the_fork(copy):
    import shutil as _shutil

    _shutil.copytree(ROOT / "docs", copy / "docs")
    _shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    changed = fork.fork("https://github.com/my-class/lesion-kit", "spring-2027", root=copy)
    assert {"mkdocs.yml", "colab.md", "results.md"} <= {p.name for p in changed}
    site = (copy / "mkdocs.yml").read_text()
    assert "repo_url: https://github.com/my-class/lesion-kit\n" in site
    colab = (copy / "docs" / "colab.md").read_text()
    assert "colab.research.google.com/github/my-class/lesion-kit/blob/spring-2027/notebooks/01_data_prep.ipynb" in colab
    assert "https://github.com/my-class/lesion-kit/blob/spring-2027/notebooks/README.md" in colab
    readme = (copy / "README.md").read_text()
    assert "git clone https://github.com/my-class/lesion-kit " in readme and "skin-lesion-kit/skin-lesion-kit" not in readme
    for page in (copy / "docs").glob("*.md"):
        assert "github.com/skin-lesion-kit/skin-lesion-kit" not in page.read_text(), page.name
