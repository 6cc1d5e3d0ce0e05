"""What users read speaks to them, not about how the kit was built: no build history, no workplace words, no paths
that only the kit's builders had. Scans every tracked user-facing text: Markdown, notebooks, the strings and
docstrings of helpers/ (help texts and messages included), results' CSV and JSON, and the build files."""
from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "a path only the kit's builders had": r"\.\./shared\b|/work/(?:shared|main)\b",
    "an issue number": r"\bissues? #?\d+",
    "the builders' GPU machine": r"\bdevice window|\blent\b|\bdevice time\b",
    "build history": r"\bthe kit before\b|\bnow ends\b|\bsessions? (?:that|which) built\b",
    "workplace words": r"\bworkplace\b",
}
PATTERN = re.compile("|".join(f"(?:{p})" for p in FORBIDDEN.values()), re.IGNORECASE)
BUILD_FILES = {"Makefile", "mkdocs.yml", "pyproject.toml", "CITATION.cff", "NOTICE", "LICENSE"}


def _tracked() -> list[Path]:
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is not available")
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]


def _python_strings(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module (docstrings, help texts, messages) with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _notebook_text(path: Path) -> list[tuple[int, str]]:
    """Markdown cells, code cells and text outputs of a notebook, by cell number."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found = []
    for number, cell in enumerate(cells):
        found.append((number, "".join(cell["source"])))
        for output in cell.get("outputs", []):
            found.append((number, "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))))
    return found


def _texts(path: Path) -> list[tuple[int, str]]:
    relative = path.relative_to(ROOT).as_posix()
    if path.suffix == ".ipynb":
        return _notebook_text(path)
    if path.suffix == ".py":
        return _python_strings(path) if relative.startswith(("helpers/", "docs/")) else []
    if path.suffix == ".md" or path.name in BUILD_FILES or (
            relative.startswith("results/") and path.suffix in (".csv", ".json")):
        return list(enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1))
    return []


def test_the_pattern_finds_what_it_should_and_nothing_else():
    for bad in ("see ../shared/data/x", "issue 8", "the device window", "a lent machine", "the kit before it",
                "Issue #12", "the sessions that built these", "this workplace"):
        assert PATTERN.search(bad), bad
    for fine in ("an equivalent model", "silently", "a Jupyter session", "the device", "shared folder", "excellent",
                 "issues a warning"):
        assert not PATTERN.search(fine), fine


def test_user_facing_text_has_no_builders_words():
    found = [f"{path.relative_to(ROOT)}:{where}: {match.group(0)!r}"
             for path in _tracked() for where, text in _texts(path) for match in PATTERN.finditer(text)]
    assert not found, ("words about how the kit was built, in text its users read (write for the user: what the "
                       "kit does and how to use it):\n" + "\n".join(found[:50]))
