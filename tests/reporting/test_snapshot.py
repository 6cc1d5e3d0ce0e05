"""Publishing a study: the small files, named by data, protocol, profile and hardware; never checkpoints."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from helpers.evaluation import scoring
from helpers.reporting import report
from helpers.reporting.snapshot import main, snapshot, study_name
from tests.builders import Brightness, make_run, shifted_prepared


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "results"
    prepared = shifted_prepared(root.parent / "data")
    make_run(root, "unet_f100", "unet", 1.0, prepared.root)
    make_run(root, "unetpp_f100", "unetpp", 1.0, prepared.root)
    make_run(root, "unet_f050_unfinished", "unet", 0.5, prepared.root, finished=False)
    scoring.evaluate_runs(root, load_model=lambda _: Brightness(), progress=False)
    (root / "notes.md").write_text("The worst cases all show a ruler.")
    report.write_report(root, n_boot=50)
    pd.DataFrame([{"section": "train", "images_per_s": 9.0, "hardware": "cpu: test"},
                  {"section": "train", "images_per_s": 900.0, "hardware": "other GPU"}]).to_csv(root / "bench.csv")
    return root


def test_copies_report_tables_figures_and_per_image_scores_only(reported, tmp_path):
    folder = snapshot(results_root=reported, dest_root=tmp_path)
    assert folder.name == "shifted_seed_smoke_cpu-test"
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"report.md", "summary.csv", "comparisons.csv", "failures.csv", "bench.csv", "notes.md"} <= files
    assert "### Notes of the people who ran it (`notes.md`)\n\nThe worst cases all show a ruler." in \
        (folder / "report.md").read_text()
    assert {"runs/unet_f100/test_metrics.csv", "runs/unet_f100/history.csv", "runs/unet_f100/config.json",
            "runs/unetpp_f100/eval.json", "runs/unet_f050_unfinished/config.json"} <= files
    assert not [f for f in files if f.endswith((".pt", ".npz", ".npy", ".jpg"))]
    for link in [line.split("](")[1].rstrip(")") for line in (folder / "report.md").read_text().splitlines()
                 if line.startswith("![")]:
        assert (folder / link).is_file(), link
    assert pd.read_csv(folder / "bench.csv")["hardware"].tolist() == ["cpu: test"]
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["run_id"]) == {p.name for p in (folder / "runs").iterdir()}


def test_names_and_errors(reported, tmp_path, capsys):
    summary = pd.read_csv(reported / "summary.csv")
    assert study_name(summary.assign(hardware="NVIDIA H200")) == "shifted_seed_smoke_nvidia-h200"
    assert main(["--results", str(tmp_path), "--name", "x"]) == 1
    assert "no report.md" in capsys.readouterr().err
    assert main(["--results", str(reported), "--dest", str(tmp_path), "--name", "mine"]) == 0
    assert (tmp_path / "mine" / "report.md").is_file()


def test_report_without_predictions_or_data_says_so_instead_of_crashing(reported, tmp_path):
    copy = tmp_path / "results"  # a study folder elsewhere: no predictions, no prepared data
    shutil.copytree(reported, copy, ignore=shutil.ignore_patterns("checkpoints", "*.npz"))
    for config in copy.glob("runs/*/config.json"):  # as committed: checkpoints in the run's own (absent) folder
        config.write_text(json.dumps({**json.loads(config.read_text()), "checkpoint_dir": "checkpoints"}))
    text = report.write_report(copy, n_boot=50).read_text()  # no warning: a study without predictions is normal
    assert "## Where the best run fails\n\n_(not available for `unet" in text and "test_preds.npz" in text
    assert "## Test results" in text and "figures/cases.png" not in text


def test_copied_run_configs_carry_no_absolute_paths(reported, tmp_path):
    source = json.loads((reported / "runs" / "unet_f100" / "config.json").read_text())
    assert Path(source["prepared_dir"]).is_absolute()  # the fixture writes them as older versions did
    folder = snapshot(results_root=reported, dest_root=tmp_path)
    config = json.loads((folder / "runs" / "unet_f100" / "config.json").read_text())
    assert config["prepared_dir"] == f"prepared/{Path(source['prepared_dir']).name}"
    assert config["checkpoint_dir"] == "checkpoints"
    assert {k: v for k, v in config.items() if k not in ("prepared_dir", "checkpoint_dir")} == \
        {k: v for k, v in source.items() if k not in ("prepared_dir", "checkpoint_dir")}


def test_committed_studies_carry_no_absolute_paths_of_the_machine_that_made_them():
    root = Path(__file__).resolve().parents[2]
    results = root / "results"
    listed = subprocess.run(["git", "ls-files", "results"], cwd=root, capture_output=True, text=True)
    committed = [root / name for name in listed.stdout.splitlines()] if listed.returncode == 0 else results.rglob("*")
    found = [f"{p.relative_to(results)}: {m.group(0)}" for p in committed  # not what `make demo` wrote here
             if p.is_file() and p.suffix in (".json", ".csv", ".md", ".log", ".txt", ".ipynb")
             for m in [re.search(r"(?<![\w.])/(work|root|home|tmp|Users|mnt)/[^\s\"',)]*", p.read_text())] if m]
    assert not found, found[:5]


def test_a_committed_study_opens_as_the_results_folder_without_touching_it(tmp_path, monkeypatch):
    from helpers import paths
    from helpers.reporting import snapshot as snap
    from helpers.reporting import tables

    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setattr(snap, "_results_before_study", None)
    name = "isic2018-task1-512_seed_cpu_cpu-2-cores"
    assert name in snap.committed_studies()
    committed = paths.repo_root() / "results" / name
    before = {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    opened = snap.open_study(name)
    assert opened == tmp_path / "results" / "studies" / name and paths.results_dir() == opened
    summary = pd.read_csv(tables.write_summary(n_boot=200, seed=42))
    stored = pd.read_csv(committed / "summary.csv")
    assert len(summary) == 12 and (summary["status"] == "ok").all()
    pd.testing.assert_series_equal(summary.set_index("run_id")["dice_mean"].sort_index(),
                                   stored.set_index("run_id")["dice_mean"].sort_index())
    assert "No pictures of" in report.best_run_gallery(summary)  # no predictions or data in a committed study
    assert before == {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    assert snap.open_study(name) == opened  # opening it again does not nest a study inside the study
    assert snap.close_study() == tmp_path / "results" and paths.results_dir() == tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="choose one of: isic2018"):
        snap.open_study("no-such-study")
