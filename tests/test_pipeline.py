"""The headless runner: parameters from the command line, executed copies, failures named."""
import json

from helpers import pipeline


def test_parse_value_reads_literals_and_keeps_strings():
    assert pipeline.parse_value("96") == 96
    assert pipeline.parse_value("[0.1, 1.0]") == [0.1, 1.0]
    assert pipeline.parse_value("folder") == "folder"
    assert pipeline.parse_value("/data/isic") == "/data/isic"


def test_runner_writes_executed_notebook_with_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    code = pipeline.main(["--profile", "smoke", "--only", "01", "-p", "SPLIT_SEED", "7"])
    assert code == 0
    executed = tmp_path / "results" / "notebooks" / "smoke" / "01_data_prep.ipynb"
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert "SPLIT_SEED = 7" in "".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                                 for c in nb["cells"])
    assert (tmp_path / "results" / "data" / "synthetic-60-s0_seed_64px_s7" / "splits.csv").is_file()
    assert list((tmp_path / "data" / "prepared").glob("*_s7"))


def test_failing_notebook_is_reported_with_its_executed_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    code = pipeline.main(["--profile", "smoke", "--only", "01", "-p", "DATA_SOURCE", "kaggle"])
    assert code == 1
    err = capsys.readouterr().err
    assert "01_data_prep.ipynb failed (DataError" in err and "01_data_prep.ipynb" in err
