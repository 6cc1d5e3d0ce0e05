"""The modules the notebooks import are lines a student reads: at most 100 characters, and ruff holds them to it
(they are in what `make test` lints, with no E501 exception)."""
import ast
import json
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def course_modules() -> set[str]:
    """The helpers modules the four notebooks import (``from helpers.x import y``: y's file, else x's)."""
    found = set()
    for notebook in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.startswith(("%", "!")))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
                    base = ROOT / node.module.replace(".", "/")
                    for alias in node.names:
                        for path in (base / f"{alias.name}.py", base.with_suffix(".py"), base / "__init__.py"):
                            if path.is_file():
                                found.add(path.relative_to(ROOT).as_posix())
                                break
    return found


def test_the_notebooks_import_the_course_modules():
    modules = course_modules()
    assert {"helpers/training/loop.py", "helpers/data/study.py", "helpers/runtime.py"} <= modules
    assert len(modules) >= 30


def test_course_modules_fit_100_characters_and_ruff_checks_them():
    modules = course_modules()
    long = [f"{m}:{n}" for m in sorted(modules)
            for n, line in enumerate((ROOT / m).read_text(encoding="utf-8").splitlines(), 1) if len(line) > 100]
    assert not long, f"lines over 100 characters: {long}"
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 100
    excused = [m for m in modules for pattern, rules in ruff["lint"]["per-file-ignores"].items()
               if "E501" in rules and fnmatch(m, pattern)]
    assert not excused, f"course modules excused from the line length: {excused}"
    listed = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-files", "helpers", "tests"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    linted = {Path(line.strip()).resolve().relative_to(ROOT).as_posix() for line in listed.splitlines() if line.strip()}
    assert modules <= linted, f"make test's ruff does not see {sorted(modules - linted)}"
    assert "tests/data/test_isic.py" in linted  # a folder named data is linted too
