"""Notebook hygiene: no committed outputs, a literal parameters cell first, one repository URL."""
import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from helpers import paths
from helpers.pipeline import NOTEBOOKS, notebooks_present

ROOT = Path(__file__).resolve().parents[2]
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
def test_training_notebooks_take_every_setting(path):
    """Each setting is a form field of the parameters cell or a name that notebook's SETTINGS takes."""
    from helpers.pipeline import SETTINGS_KEYS
    from helpers.profiles import SETTINGS

    first = _code_cells(path)[0]
    names = {node.targets[0].id for node in ast.parse("".join(first["source"])).body}
    assert "SETTINGS" in names
    missing = [name for name in SETTINGS if name not in ("synthetic_count", "data_subset")
               and name.upper() not in names and name not in SETTINGS_KEYS[path.name]]
    assert not missing, missing


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_what_a_student_changes_is_a_short_colab_form_at_the_top(path):
    """At most 10 code lines above the papermill-only part, every one of them a Colab form field."""
    first = _code_cells(path)[0]
    source = "".join(first["source"])
    top = source.split("\n# The rest is for papermill")[0]
    fields = [line for line in top.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert source.startswith("#@title ") and first["metadata"].get("cellView") == "form"
    assert 1 <= len(fields) <= 10 and all("#@param" in line for line in fields), fields
    if path.name[:2] in ("01", "02", "03"):  # the whole cell, papermill's names included
        code = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert len(code) <= 10, len(code)


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


@pytest.mark.parametrize("path", [p for p in NOTEBOOK_FILES if p.name[:2] in ("02", "03")], ids=lambda p: p.name)
def test_colab_badge_opens_a_t4_runtime(path):  # only where it trains: 01 and 04 open a CPU (tests/notebooks/test_course_0104.py)
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


FORM_LINE = re.compile(r'^([A-Z_]+) = (.+?)  #@param (\[.*\]|\{type:"(raw|string|boolean|number)"\})'
                       r'( \{allow-input: true\})?$')


def _declared_settings() -> dict:
    """Every declared setting's field by name: the study, the run config and the grid options."""
    from helpers import profiles
    from helpers.data import study

    kinds = (dataclasses.fields(study.Study), dataclasses.fields(study.GridOptions), profiles.SETTINGS.values())
    return {f.name: f for fields in kinds for f in fields if f.metadata}


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_a_form_field_that_is_a_setting_shows_its_declared_help(path):
    """The form's description of a setting is its one declaration's help (what --help and --list print),
    after a bold title and before what the form adds (None: the profile's). PROFILE is the exception: in 01 it
    chooses the study's profile, in 02-04 it defaults to the one 01 chose, so each form says which."""
    declared = _declared_settings()
    lines = "".join(_code_cells(path)[0]["source"]).splitlines()
    checked = []
    for k, line in enumerate(lines):
        name = line.split(" = ")[0]
        if "#@param" not in line or name == "PROFILE" or name.lower() not in declared:
            continue
        text = lines[k - 1].removeprefix("#@markdown ")
        title, _, described = text.partition(": ")
        assert title.startswith("**") and title.endswith("**"), f"{path.name}: {name}'s description has no title"
        assert described.startswith(declared[name.lower()].metadata["help"]), \
            f"{path.name}: {name}'s form help is not its declared help {declared[name.lower()].metadata['help']!r}"
        checked.append(name)
    if path.name.startswith(("01", "02", "03")):
        assert checked, f"{path.name}: no form field is a declared setting"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_colab_form_fields_follow_colabs_syntax_and_match_their_defaults(path):
    """Each #@param line is one Colab form field: a dropdown whose list holds the default, or a typed field whose
    type fits it; a #@markdown line above it describes it (what `python -m helpers.pipeline --list` shows)."""
    lines = "".join(_code_cells(path)[0]["source"]).splitlines()
    for k, line in enumerate(lines):
        if "#@param" not in line:
            continue
        match = FORM_LINE.match(line)
        assert match, line
        name, default, spec, kind = match.group(1, 2, 3, 4)
        value = ast.literal_eval(default)
        assert lines[k - 1].startswith("#@markdown "), f"{name}: no description above it"
        if spec.startswith("["):
            assert value in ast.literal_eval(spec), f"{name}: default {value!r} not among {spec}"
        elif kind == "string":
            assert isinstance(value, str), name
        elif kind == "boolean":
            assert isinstance(value, bool), name
        elif kind == "number":
            assert isinstance(value, (int, float)) and not isinstance(value, bool), name
