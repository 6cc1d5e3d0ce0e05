"""The headless runner: parameters from the command line, executed copies, failures named."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import pipeline
from helpers.data import study


def test_parse_value_reads_literals_and_keeps_strings():
    assert pipeline.parse_value("96") == 96
    assert pipeline.parse_value("[0.1, 1.0]") == [0.1, 1.0]
    assert pipeline.parse_value("folder") == "folder"
    assert pipeline.parse_value("/data/isic") == "/data/isic"


@pytest.mark.slow
def test_runner_writes_executed_notebook_with_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    code = pipeline.main(["--profile", "smoke", "--only", "01", "-p", "SPLIT_SEED", "7"])
    assert code == 0
    executed = tmp_path / "results" / "notebooks" / "smoke" / "01_data_prep.ipynb"
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    injected = next("".join(c["source"]) for c in nb["cells"]
                    if "injected-parameters" in c.get("metadata", {}).get("tags", []))
    assert "SETTINGS = " in injected and '"split_seed": 7' in injected  # 01 takes the setting in SETTINGS
    assert (tmp_path / "results" / "data" / "synthetic-60-s0_seed_64px_s7" / "splits.csv").is_file()
    assert list((tmp_path / "data" / "prepared").glob("*_s7"))


@pytest.mark.slow
def test_failing_notebook_is_reported_with_its_executed_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    code = pipeline.main(["--profile", "smoke", "--only", "01", "-p", "DATA_SOURCE", "folder",
                          "-p", "DATA_DIR", str(tmp_path / "not-there")])
    assert code == 1
    err = capsys.readouterr().err
    assert "01_data_prep.ipynb failed (DataError" in err and "01_data_prep.ipynb" in err


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DATA_SOURCE", "kaggle", "DATA_SOURCE = 'kaggle' is not valid: expected one of"),
    ("FRACTIONS", "[1.5]", "FRACTIONS = .* whole percentages"),
    ("MODELS", "foo", "MODELS = 'foo' is not valid"),
    ("LR", "nan", "LR = .* a finite number"),
    ("IMAGE_SIZE", "70", "IMAGE_SIZE = 70 .* a multiple of 16"),
    ("BATCH_SIZE", "-3", "BATCH_SIZE = -3 .* above 0"),
])
def test_bad_values_for_any_notebook_are_refused_before_the_first_one_runs(recorded, capsys, name, value, message):
    assert pipeline.main(["--profile", "smoke", "-p", name, value]) == 2
    assert re.search(message, capsys.readouterr().err) and recorded == []


def test_the_runner_follows_the_recorded_study(recorded, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    study.choose("smoke", data_source="synthetic")
    assert pipeline.main(["--only", "02", "-p", "DATA_SOURCE", "folder"]) == 2
    err = capsys.readouterr().err
    assert "DATA_SOURCE = 'folder', but the study has 'synthetic'" in err and "run notebook 01" in err
    assert pipeline.main(["--only", "02", "--profile", "cpu"]) == 2 and recorded == []
    assert pipeline.main(["--only", "02", "-p", "BATCH_SIZE", "2"]) == 0
    assert recorded == [("02_unet.ipynb", {"PROFILE": "", "SETTINGS": {"batch_size": 2}})]


def _notebook(path, parameters_source=None):
    """A tiny notebook at ``path``: a parameters cell with ``parameters_source`` (none if None), then a print."""
    import nbformat

    cells = []
    if parameters_source is not None:
        cells.append(nbformat.v4.new_code_cell(parameters_source, metadata={"tags": ["parameters"]}))
    cells.append(nbformat.v4.new_code_cell("print('hello')"))
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    return path


@pytest.fixture
def recorded(monkeypatch):
    """papermill.execute_notebook replaced by a recorder: the list of (notebook name, parameters) it was called with."""
    import papermill

    calls = []

    def execute_notebook(notebook, target, parameters=None, **kwargs):
        calls.append((Path(notebook).name, dict(parameters or {})))
        Path(target).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


@pytest.fixture
def tiny_notebooks(tmp_path, monkeypatch):
    """Three tiny notebooks as the study: 01 knows A, 02 knows A and LR, 03 has no PROFILE."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", 'PROFILE = ""  # the profile\nA = 1  # shared\n')
    _notebook(folder / "02_b.ipynb", 'PROFILE = ""\nA = 1\nLR = None    # learning rate\n')
    _notebook(folder / "03_c.ipynb", 'B = "x"\n')
    present = [folder / "01_a.ipynb", folder / "02_b.ipynb", folder / "03_c.ipynb"]
    monkeypatch.setattr(pipeline, "notebooks_present", lambda folder=None: list(present))
    return folder


def test_notebook_parameters_reads_names_and_comments(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", 'X = 1  # the x # with a hash\nY: int = 2\nZ = "#not a comment"\n'
                                            'A, B = 1, 2   # both\nprint(X)\n')
    assert pipeline.notebook_parameters(path) == {"X": "the x # with a hash", "Y": "", "Z": "", "A": "both", "B": "both"}
    real = pipeline.notebook_parameters(Path(pipeline.__file__).parents[1] / "notebooks" / "02_unet.ipynb")
    assert real["LR"].startswith("Learning rate: peak AdamW learning rate") and "PROFILE" in real and "SETTINGS" in real
    assert len([name for name in real if name not in ("SETTINGS", "KIT_HOME", "MOUNT_DRIVE", "KIT_REPO", "KIT_REF")]) <= 5


def test_notebook_without_parameters_cell_is_refused_naming_the_file(tmp_path, tiny_notebooks, recorded, capsys):
    bare = _notebook(tmp_path / "bare.ipynb")
    with pytest.raises(ValueError, match=r"bare\.ipynb has no code cell tagged 'parameters'"):
        pipeline.notebook_parameters(bare)
    _notebook(tiny_notebooks / "02_b.ipynb")                 # the study's 02 loses its parameters cell
    assert pipeline.main(["--profile", "smoke", "-p", "A", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("✗ ") and "02_b.ipynb has no code cell tagged 'parameters'" in err
    assert recorded == []                                    # refused before 01 ran


def test_unknown_parameter_is_refused_before_any_notebook_runs(tiny_notebooks, recorded, capsys):
    assert pipeline.main(["--profile", "smoke", "-p", "A", "2", "-p", "NOPE", "1", "-p", "ALSO_NOPE", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("✗ unknown parameters ALSO_NOPE, NOPE")
    assert "  01_a.ipynb: A, PROFILE\n" in err and "  02_b.ipynb: A, LR, PROFILE\n" in err and "  03_c.ipynb: B" in err
    assert recorded == []
    with pytest.raises(ValueError, match=r"unknown parameter LR(.|\n)*LR is a parameter of 02_b\.ipynb, which --only"):
        pipeline.run_notebooks("smoke", {"LR": 0.1}, only=["01", "03"])
    assert recorded == []


def test_each_notebook_receives_only_the_parameters_it_declares(tiny_notebooks, recorded, tmp_path):
    done = pipeline.run_notebooks("cpu", {"LR": 0.1, "A": 5, "B": "y"}, out_dir=tmp_path / "out")
    assert [p.name for p in done] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert recorded == [("01_a.ipynb", {"PROFILE": "cpu", "A": 5}),
                        ("02_b.ipynb", {"PROFILE": "cpu", "A": 5, "LR": 0.1}),
                        ("03_c.ipynb", {"B": "y"})]


def test_real_notebooks_get_training_parameters_only_where_declared(recorded, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    assert pipeline.main(["--profile", "smoke", "-p", "LR", "0.01", "-p", "N_BOOT", "10", "-p", "DATA_SOURCE", "folder",
                          "-p", "BATCH_SIZE", "4"]) == 0
    sent = dict(recorded)
    assert list(sent) == ["01_data_prep.ipynb", "02_unet.ipynb", "03_unetpp_transunet.ipynb", "04_results.ipynb"]
    assert {name for name, params in sent.items() if "LR" in params} == {"02_unet.ipynb", "03_unetpp_transunet.ipynb"}
    assert {name for name, params in sent.items() if "n_boot" in (params.get("SETTINGS") or {})} == {"04_results.ipynb"}
    assert sent["04_results.ipynb"]["SETTINGS"] == {"n_boot": 10}  # 04 takes its options in SETTINGS
    assert "DATA_SOURCE" not in sent["04_results.ipynb"] and sent["01_data_prep.ipynb"]["DATA_SOURCE"] == "folder"
    assert all(params["PROFILE"] == "smoke" for params in sent.values())
    # names a cell does not declare go into SETTINGS where the notebook takes them: 01 the study's, 02/03 all
    assert sent["01_data_prep.ipynb"].get("SETTINGS") is None
    assert sent["02_unet.ipynb"]["SETTINGS"] == sent["03_unetpp_transunet.ipynb"]["SETTINGS"] == \
        {"data_source": "folder", "batch_size": 4}


def test_list_prints_each_notebooks_parameters_and_runs_nothing(recorded, capsys):
    assert pipeline.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert recorded == []
    blocks = {block.splitlines()[0].split()[0]: block for block in out.strip().split("\n\n")}
    assert list(blocks) == ["01_data_prep.ipynb", "02_unet.ipynb", "03_unetpp_transunet.ipynb", "04_results.ipynb",
                            "SETTINGS"]
    assert any(line.split()[:2] == ["LR", "Learning"] for line in blocks["02_unet.ipynb"].splitlines())
    assert any(line.split()[:3] == ["lr", "peak", "AdamW"] for line in blocks["SETTINGS"].splitlines())
    assert "LR" not in blocks["01_data_prep.ipynb"].split() and "SETTINGS" in blocks["04_results.ipynb"].split()
    assert any(line.split()[:2] == ["n_boot", "bootstrap"] for line in blocks["SETTINGS"].splitlines())
    assert pipeline.main(["--list", "--only", "04"]) == 0
    only_04 = capsys.readouterr().out
    assert only_04.startswith("04_results.ipynb (") and "\n  PROFILE " in only_04 and "02_unet" not in only_04


@pytest.mark.slow
def test_notebook_04_discusses_a_committed_study_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    study = "isic2018-task1-512_seed_cpu_cpu-2-cores"
    assert pipeline.main(["--profile", "smoke", "--only", "04", "-p", "STUDY", study, "-p", "N_BOOT", "200"]) == 0
    opened = tmp_path / "results" / "studies" / study
    summary = pd.read_csv(opened / "summary.csv")  # rebuilt by 04 from the study's per-image scores
    assert len(summary) == 12 and (summary["status"] == "ok").all() and summary["n_test"].eq(389).all()
    nb = json.loads((tmp_path / "results" / "notebooks" / "smoke" / "04_results.ipynb").read_text())
    shown = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                    for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert f"study: {opened}" in shown and "No finished run with its checkpoint" in shown


def test_an_only_prefix_that_matches_no_notebook_is_refused(recorded, capsys):
    assert pipeline.main(["--only", "09"]) == 2
    assert "--only 09: no notebook's name starts with that" in capsys.readouterr().err and recorded == []
