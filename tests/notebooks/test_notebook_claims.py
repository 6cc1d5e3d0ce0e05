"""What the notebooks' text names exists: every parameter-like name in their markdown is one of theirs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.pipeline import NOTEBOOKS, notebook_parameters

ROOT = Path(__file__).resolve().parents[2]
# an upper-case name in backticks (`PROTOCOL`), or assigned in the text (`NAME = value`, NAME = value)
NAMED = (re.compile(r"`([A-Z][A-Z0-9_]{2,})`"), re.compile(r"`([A-Z][A-Z0-9_]{2,})\s*="),
         re.compile(r"\b([A-Z][A-Z0-9_]{2,}) = "))
ISIC_ID = re.compile(r"ISIC_\d+$")


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def _assigned(cells: list[dict]) -> set[str]:
    """Upper-case names the notebook's code cells assign (an exercise's `THRESHOLD_TRY = 0.5`)."""
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)\s*=", code, flags=re.M))


def _environment_names() -> set[str]:
    """The environment variables the kit reads (``KIT_HOME``, ``KIT_TENSORBOARD`` ...)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "helpers").rglob("*.py"))
    return set(re.findall(r"\"(KIT_[A-Z_]+)\"", text))


def named_in_markdown(cells: list[dict]) -> dict[str, str]:
    """Each parameter-like name in the markdown → the id of the first cell that names it."""
    found = {}
    for cell in cells:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            for pattern in NAMED:
                for name in pattern.findall(text):
                    found.setdefault(name, cell.get("id", "?"))
    return {name: cell for name, cell in found.items() if not ISIC_ID.match(name)}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameter_the_text_names_is_one_of_the_notebook(name):
    notebook = ROOT / "notebooks" / name
    cells = _cells(notebook)
    known = set(notebook_parameters(notebook)) | _assigned(cells) | _environment_names()
    unknown = {n: cell for n, cell in named_in_markdown(cells).items() if n not in known}
    assert not unknown, (f"{name}: the markdown names {unknown} (name: cell id), which are neither parameters "
                         f"of this notebook nor names its cells assign; a setting is written in SETTINGS, "
                         f"e.g. SETTINGS = {{\"split_seed\": 7}}")


def test_the_check_catches_a_name_that_does_not_exist():
    cells = [{"cell_type": "markdown", "id": "m", "source": ["Set `SPLIT_SEED = 7`, or `PROTOCOL`."]},
             {"cell_type": "code", "id": "c", "source": ["TRY = 1\n"]}]
    assert named_in_markdown(cells) == {"SPLIT_SEED": "m", "PROTOCOL": "m"} and _assigned(cells) == {"TRY"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameters_cell_is_form_fields_then_settings_in_twelve_lines(name):
    cells = _cells(ROOT / "notebooks" / name)
    first = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    code = [line for line in "".join(first["source"]).splitlines() if line.strip() and not line.startswith("#")]
    names = [line.split("=")[0].strip() for line in code]
    assert len(code) <= 12, f"{name}: {len(code)} code lines in the parameters cell"
    form = [n for n, line in zip(names, code) if "#@param" in line]
    assert names[:len(form)] == form and "SETTINGS" in names, f"{name}: form fields first, then SETTINGS: {names}"
