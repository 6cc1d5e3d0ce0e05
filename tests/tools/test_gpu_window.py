"""The prepared GPU window, as its dry run: the bundle, skipping what an earlier window finished, clean stops."""
import json
import tarfile
import time

import pandas as pd
import pytest

from helpers.tools import gpu_window, gpu_window_steps
from helpers.training import runs

BUNDLE = {"window.log", "window.json", "t4_check.csv", "bench.csv", "recipes.csv", "grid.csv", "runs.tar.gz"}


def _members(archive) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


@pytest.mark.slow
def test_dry_run_writes_the_bundle_then_skips_what_an_earlier_window_finished(tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_window.main(["--out", str(out), "--dry-run"]) == 0
    assert {p.name for p in out.iterdir()} == BUNDLE and len(BUNDLE) <= 8          # flat: what a lent machine returns
    report = json.loads((out / "window.json").read_text())
    assert [s["status"] for s in report["steps"].values()] == ["done"] * 5 and report["left"] == []
    assert list(report["steps"]) == ["data", "t4", "bench", "recipes", "grid"]
    t4 = pd.read_csv(out / "t4_check.csv")
    assert set(t4["model"]) == {"unet", "unetpp", "transunet"} and (t4["status"] == "ok").all()
    assert (t4["amp"] == "fp16").all() and (t4["gpu_memory_gb"] == 15).all() and (t4["steps"] > 0).all()
    assert set(pd.read_csv(out / "bench.csv")["section"]) == {"data", "train", "step", "infer"}
    recipes = pd.read_csv(out / "recipes.csv")
    assert list(recipes["recipe"]) == ["seed", "kit"] and list(recipes["lr"]) == [1e-4, 1e-3]   # tiny models: 1e-3
    assert (recipes["status"] == "trained").all() and (recipes["num_epochs"] == 2).all() and recipes["test_dice"].notna().all()
    assert report["steps"]["recipes"]["notes"] == ["dry run: 2 epochs for both recipes"]
    grid = pd.read_csv(out / "grid.csv")
    assert len(grid) == 6 and (grid["status"] == "trained").all() and grid["test_dice"].notna().all()
    assert list(grid["fraction"]) == [0.5] * 3 + [1.0] * 3                          # smallest fractions first
    names = _members(out / "runs.tar.gz")
    assert sum(n.endswith("/done.json") for n in names) == 8 and sum(n.endswith("/test_metrics.csv") for n in names) == 8
    assert not [n for n in names if n.endswith(".pt") or "checkpoints" in n or n.endswith("test_preds.npz")]

    capsys.readouterr()
    assert gpu_window.main(["--out", str(out), "--dry-run"]) == 0                   # a second window, same --out
    assert "8 finished run(s) of earlier windows, not trained again" in capsys.readouterr().out
    again = pd.read_csv(out / "grid.csv")
    assert (again["status"] == "skipped").all() and list(again["test_dice"]) == list(grid["test_dice"])
    assert (pd.read_csv(out / "recipes.csv")["status"] == "skipped").all()
    assert pd.read_csv(out / "t4_check.csv").equals(t4)                              # kept, not measured again
    assert len(_members(out / "runs.tar.gz")) == len(names)
    assert (out / "window.log").read_text().count("gpu window ") == 2                # one log for both windows

    fresh = tmp_path / "fresh"                                                       # an earlier bundle brought along
    assert gpu_window.main(["--out", str(fresh), "--previous", str(out), "--dry-run", "--only", "grid"]) == 0
    assert (pd.read_csv(fresh / "grid.csv")["status"] == "skipped").all()
    assert set(json.loads((fresh / "window.json").read_text())["steps"]) == {"data", "grid"}


def test_a_tiny_budget_stops_cleanly_and_says_what_was_left(tmp_path):
    out = tmp_path / "out"
    assert gpu_window.main(["--out", str(out), "--dry-run", "--minutes", "0.001"]) == 0
    report = json.loads((out / "window.json").read_text())
    assert {s["status"] for s in report["steps"].values()} == {"skipped"} and len(report["left"]) == 5
    assert report["left"][1].startswith("t4: the whole step, not started: 0.0 s were left in the window")
    assert (out / "runs.tar.gz").is_file() and "== grid: skipped, no time left" in (out / "window.log").read_text()


def test_without_a_gpu_only_the_dry_run_starts(tmp_path, capsys):
    assert gpu_window.main(["--out", str(tmp_path / "out")]) == 2
    assert "No CUDA GPU here" in capsys.readouterr().err
    assert gpu_window.main(["--out", str(tmp_path / "out"), "--only", "t4,grids"]) == 2


def test_a_run_whose_next_epoch_would_overrun_stops_and_the_rest_is_listed(tmp_path, results, monkeypatch):
    check = gpu_window_steps.stop_before(time.monotonic() + 1, num_epochs=3)
    check("r", [{"epoch": 3, "epoch_seconds": 10.0}])                               # its last epoch: nothing to stop
    with pytest.raises(gpu_window_steps.OutOfTime, match="r stopped after epoch 1 of 3: its next epoch would end after"):
        check("r", [{"epoch": 1, "epoch_seconds": 10.0}])

    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    w = gpu_window_steps.Window(tmp_path / "out", tmp_path / "work", minutes=1, dry_run=True)
    config = w.study(num_epochs=2, fractions="1.0")
    prepared = w.data(config)
    cells = [(config.with_(models=m), prepared) for m in ("unet", "transunet")]
    entry = {"notes": [], "left": []}

    def out_of_time(deadline, num_epochs):  # every run's first epoch ends with its time spent
        def stop(run_id, history):
            raise gpu_window_steps.OutOfTime(f"{run_id} stopped after epoch {history[-1]['epoch']} of {num_epochs}")
        return stop

    monkeypatch.setattr(gpu_window_steps, "stop_before", out_of_time)
    rows = gpu_window_steps.train_cells(w, "grid", cells, time.monotonic() + 60, entry)
    assert [r["status"] for r in rows] == ["stopped"] and rows[0]["model"] == "unet"
    assert "stopped after epoch 1 of 2" in entry["left"][0]
    assert entry["left"][1] == "transunet 100% custom 2 epochs (not started)"
    folder = results / "runs" / rows[0]["run_id"]
    assert (folder / "history.csv").is_file() and not runs.is_finished(folder)       # comes back unfinished

    entry = {"notes": [], "left": []}                                                # no time to start anything
    assert gpu_window_steps.train_cells(w, "grid", cells, time.monotonic(), entry) == []
    assert [x.split(" (")[0] for x in entry["left"]] == ["unet 100% custom 2 epochs", "transunet 100% custom 2 epochs"]
