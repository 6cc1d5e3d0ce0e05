"""Notebook hygiene: no committed outputs, a literal parameters cell first, one repository URL."""
import ast
import json
from pathlib import Path

import pytest

from helpers import paths
from helpers.pipeline import NOTEBOOKS, notebooks_present

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_FILES = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebooks_exist_in_study_order():
    assert NOTEBOOK_FILES, "no notebooks found"
    assert [p.name for p in notebooks_present()] == [n for n in NOTEBOOKS if (ROOT / "notebooks" / n).exists()]
    assert NOTEBOOK_FILES[0].name == "01_data_prep.ipynb"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    for cell in _code_cells(path):
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
            f"{path.name} carries outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_first_code_cell_is_a_literal_parameters_cell(path):
    first = _code_cells(path)[0]
    assert "parameters" in first["metadata"].get("tags", [])
    tree = ast.parse("".join(first["source"]))
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell may only assign literals"
        ast.literal_eval(node.value)                      # raises if not a literal
        names.append(node.targets[0].id)
    assert "PROFILE" in names


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_every_parameter_is_used_after_the_parameters_cell(path):
    """A parameter that nothing reads would be injected by papermill and silently ignored."""
    first, *rest = _code_cells(path)
    names = [node.targets[0].id for node in ast.parse("".join(first["source"])).body]
    used = set()
    for cell in rest:
        code = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.startswith("%"))
        used |= {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}
    assert not [name for name in names if name not in used], f"{path.name}: parameters nothing reads"


@pytest.mark.parametrize("path", [p for p in NOTEBOOK_FILES if p.name[:2] in ("02", "03")], ids=lambda p: p.name)
def test_training_notebooks_expose_every_result_changing_setting(path):
    from helpers.profiles import FIELDS

    first = _code_cells(path)[0]
    names = {node.targets[0].id for node in ast.parse("".join(first["source"])).body}
    settings = set(FIELDS) - {"name", "description", "synthetic_count", "model_configs", "model_overrides"}
    if path.name.startswith("02"):
        settings -= {"models", "deep_supervision", "pretrained"}  # notebook 02 trains UNet only
    assert {s.upper() for s in settings} <= names, sorted({s.upper() for s in settings} - names)


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_skeleton_title_first_summary_last_and_short_cells(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    assert "What you will learn" in "".join(cells[0]["source"])
    assert cells[-1]["cell_type"] == "markdown" and "Summary" in "".join(cells[-1]["source"])
    for cell in _code_cells(path):
        tree = ast.parse("\n".join(line for line in "".join(cell["source"]).splitlines()
                                   if not line.startswith("%")))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.end_lineno - node.lineno < 15, f"{path.name}: move {node.name} into helpers/"


def test_repository_url_is_the_same_everywhere():
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOK_FILES:
        text = path.read_text()
        assert f'KIT_REPO = \\"{paths.REPO_URL}\\"' in text, f"{path.name}: clone address differs from helpers/paths.py"
        assert paths.colab_url(path.name) in text, f"{path.name}: Colab badge differs"
        assert paths.colab_url(path.name) in readme, f"README: Colab badge for {path.name} missing or different"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_bootstrap_is_at_most_five_lines_and_calls_one_helper(path):
    boot = "".join(_code_cells(path)[1]["source"])
    assert len(boot.splitlines()) <= 5
    calls = {f"{node.func.value.id}.{node.func.attr}" for node in ast.walk(ast.parse(boot))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)}
    assert "runtime.start" in calls and calls <= {"runtime.start", "subprocess.run", "os.path", "sys.path"}, calls
    assert "GIT_TERMINAL_PROMPT" in boot and "KIT_REPO" in boot and "KIT_REF" in boot
    assert ("needs_gpu=True" in boot) == path.name.startswith(("02", "03"))


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_colab_badge_opens_a_t4_runtime(path):
    metadata = json.loads(path.read_text())["metadata"]
    assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4"


def test_the_parameter_reference_lists_every_parameter_of_every_notebook():
    from helpers.pipeline import format_parameters, notebook_parameters

    listing = format_parameters({path: notebook_parameters(path) for path in notebooks_present()})
    assert listing.strip() in (ROOT / "notebooks" / "README.md").read_text(), \
        "notebooks/README.md is out of date: paste in what `python -m helpers.pipeline --list` prints"


def test_no_code_cell_is_copied_between_notebooks():
    """Set-up the notebooks share lives in helpers/; only the parameters and bootstrap cells may repeat."""
    seen = {}
    for path in NOTEBOOK_FILES:
        for cell in _code_cells(path)[2:]:  # after the parameters cell and the five-line bootstrap
            text = "".join(cell["source"]).strip()
            seen.setdefault(text, []).append(path.name)
    copied = {text[:80]: names for text, names in seen.items() if len(names) > 1}
    assert not copied, copied


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_exercises_with_hidden_answers_before_the_summary(path):
    cells = json.loads(path.read_text())["cells"]
    heading = next(k for k, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises"))
    text = "".join(cells[heading]["source"])
    assert heading < len(cells) - 1 and "Summary" in "".join(cells[-1]["source"])
    assert 3 <= text.count("<details>") == text.count("</details>") <= 5, "3 to 5 exercises, each with its answer"
    assert "Predict, then run" in text
    assert any(c["cell_type"] == "code" and "exercise" in "".join(c["source"]).lower() for c in cells[heading:]), \
        "a code exercise that runs as given"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_cell_ids_are_unique(path):
    ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_papermill_reads_every_parameter_of_the_parameters_cell(path, caplog):
    """papermill parses the parameters cell line by line: a comment it cannot parse (one with an `=` in it) loses
    that parameter's name, type and help in `papermill --help-notebook` and prints a warning on every run."""
    import papermill

    first = _code_cells(path)[0]
    names = [node.targets[0].id for node in ast.parse("".join(first["source"])).body]
    with caplog.at_level("WARNING"):
        found = papermill.inspect_notebook(str(path))
    assert list(found) == names
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]
