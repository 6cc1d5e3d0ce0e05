"""The fault table (tests/FAULTS.md): one test per bad input or broken folder, each checking what the kit does.

Cases of issue 25 whose test lives beside its feature are named in tests/FAULTS.md (tests/evaluation/test_predict.py,
tests/evaluation/test_external.py, tests/evaluation/test_export.py); the ones here are those that cross modules: broken run folders,
errors reaching the command line, notebook 04's helpers on a broken run, and two processes on a fresh home.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import cli
from helpers.evaluation import external, predict, scoring
from helpers.models import build_model
from helpers.reporting import figures, report
from helpers.reporting.viewer import PredictionViewer
from helpers.training import runs
from helpers.training.checkpoints import save_weights_atomic
from tests.builders import make_run, write_pair

ROOT = Path(__file__).resolve().parents[2]


def _photo(path: Path) -> Path:
    pixels = np.full((48, 48, 3), 40, np.uint8)
    pixels[12:36, 12:36] = 220
    Image.fromarray(pixels).save(path)
    return path


def _one_line_error(capsys, code, expected_code=1) -> str:
    err = capsys.readouterr().err
    assert code == expected_code and err.startswith("✗ ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture
def home(tmp_path, shifted):
    """A run folder with its tiny UNet's best.pt, and one photo to predict on."""
    return make_run(tmp_path / "results", "unet_f100", "unet", 1.0, shifted.root), _photo(tmp_path / "x.png")


# --- broken run files name themselves ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "eval.json"])
def test_a_truncated_json_file_of_the_run_is_named(home, tmp_path, capsys, name):
    run, photo = home
    text = (run / "config.json").read_text() if name == "config.json" else '{"threshold": 0.4, "tta": false}'
    (run / name).write_text(text[: len(text) // 2])
    err = _one_line_error(capsys, predict.main([str(run), str(photo), str(tmp_path / "out")]))
    assert f"{run / name} is unreadable" in err and "JSONDecodeError" not in err.split("(")[0]


def test_a_checkpoint_of_another_model_says_so_naming_both(home, tmp_path, capsys):
    run, photo = home
    save_weights_atomic(build_model("unetpp", "tiny"), run / "checkpoints" / "best.pt", metric=0.5, epoch=1)
    err = _one_line_error(capsys, predict.main([str(run), str(photo), str(tmp_path / "out")]))
    assert "holds unetpp 'tiny'" in err and "config.json names unet 'tiny'" in err and len(err) < 600


def test_a_checkpoint_of_an_unknown_model_gives_its_size(home):
    run, _ = home
    weights = {"layer.weight": torch.zeros(3, 3)}
    torch.save({"model": weights, "best_metric": 0.5, "epoch": 1}, run / "checkpoints" / "best.pt")
    with pytest.raises(RuntimeError, match=r"holds another model \(1 tensors, 9 weights\)"):
        runs.load_run_model(run)


def test_a_truncated_checkpoint_is_called_truncated(home, tmp_path, capsys):
    run, photo = home
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:500])
    err = _one_line_error(capsys, predict.main([str(run), str(photo), str(tmp_path / "out")]))
    assert "truncated or corrupt" in err and "best.pt" in err


def test_a_garbled_history_is_named(home):
    run, _ = home
    (run / "history.csv").write_text('epoch,train_loss\n1,"0.5\n2,0.4,9,9,9\n')
    with pytest.raises(ValueError, match="history.csv is (unreadable|garbled)"):
        runs.read_history(run)


# --- the command lines: one line and an exit code, the traceback with --debug ----------------------------------------

def test_the_funnel_gives_one_line_and_exit_codes(capsys):
    def fails(error):
        def main(argv):
            raise error
        return main

    assert cli.run(fails(cli.BadValue("--threshold 2 is not ...")), []) == 2
    assert cli.run(fails(FileNotFoundError("results/runs/x/config.json does not exist")), []) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "✗ --threshold 2 is not ..." and "--debug for the traceback" in err[1] and len(err) == 2
    with pytest.raises(FileNotFoundError):
        cli.run(fails(FileNotFoundError("x")), ["--debug"])
    with pytest.raises(TypeError):  # a bug in the kit keeps its traceback
        cli.run(fails(TypeError("x")), [])
    assert cli.run(lambda argv: 0 if argv == ["a"] else 5, ["a", "--debug"]) == 0  # --debug never reaches the parser


def _mask_of_other_size(root):
    _, mask = write_pair(root, "train", "ISIC_0000601")
    Image.open(mask).resize((20, 20)).save(mask)


def _missing_mask(root):
    write_pair(root, "train", "ISIC_0000602")[1].unlink()


def _coloured_mask(root):
    _, mask = write_pair(root, "train", "ISIC_0000603")
    colours = np.zeros((30, 40, 3), np.uint8)
    colours[5:20, 5:30] = (255, 0, 0)
    colours[20:, :10] = (0, 255, 0)
    Image.fromarray(colours).save(mask)


@pytest.mark.parametrize("defect, said", [(_mask_of_other_size, "they must match"), (_missing_mask, "ISIC_0000602"),
                                          (_coloured_mask, "mask mode is RGB"), (None, "")])
def test_dataset_problems_reach_the_external_command_as_one_line(scored_home, tmp_path, capsys, defect, said):
    raw = tmp_path / "other"
    for k in range(4):
        write_pair(raw, "train", f"ISIC_{610 + k:07d}")
    if defect:
        defect(raw)
    else:  # an empty folder
        raw = tmp_path / "empty"
        raw.mkdir()
    code = external.main(["--data-dir", str(raw), "--results", str(scored_home)])
    err = capsys.readouterr().err
    assert code == 1 and "✗ " in err and "Traceback" not in err and said in err.split("✗ ")[1]  # after the progress bar


# --- notebook 04 on a broken run folder ------------------------------------------------------------------------------

@pytest.fixture
def broken_home(tmp_path, shifted):
    """An evaluated run and, listed before it, a finished run not yet evaluated whose best.pt is truncated."""
    root = tmp_path / "results"
    make_run(root, "unet_f100", "unet", 1.0, shifted.root)
    broken = make_run(root, "a_unet_f050", "unet", 0.5, shifted.root)
    best = broken / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:300])
    evaluated = scoring.evaluate_runs(root, progress=False, device="cpu")
    assert evaluated.set_index("run_id").loc["a_unet_f050", "action"].startswith("failed")
    return root


def test_the_viewer_lists_a_run_with_a_truncated_checkpoint_as_broken_and_shows_the_rest(broken_home):
    view = PredictionViewer(broken_home, device="cpu")
    assert list(view.run.options) == ["unet_f100"] and view.picture.value
    assert "a_unet_f050" in view.notice.value and "best.pt" in view.notice.value and "truncated" in view.notice.value


def test_the_viewer_survives_when_no_run_can_be_shown(broken_home):
    (broken_home / "runs" / "unet_f100" / "checkpoints" / "best.pt").write_bytes(b"")
    view = PredictionViewer(broken_home, device="cpu")
    assert list(view.run.options) == [] and view.notice.value.count("broken, not shown") == 2


def test_the_training_curves_leave_out_a_garbled_history_and_name_it(broken_home, capsys):
    summary = pd.read_csv(report.tables.write_summary(broken_home, n_boot=50))
    (broken_home / "runs" / "a_unet_f050" / "history.csv").write_text("epoch,train_loss,val_loss,val_dice\n1,x,\"y\n")
    histories = report.load_histories(summary, broken_home)
    assert set(histories["fraction"]) == {1.0} and "a_unet_f050" in histories.attrs["broken"][0]
    assert "history.csv" in capsys.readouterr().out
    fig = figures.training_curves(histories)
    assert "a_unet_f050" in fig.get_suptitle()


# --- two processes on a fresh home ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_make_the_offline_sample_at_once(tmp_path):
    code = ("import sys; from helpers.data.synthetic import generate_sample; "
            "generate_sample(sys.argv[1], 40, progress=False, workers=2)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "sample")], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    images = sorted((tmp_path / "sample").glob("*Input/*.jpg"))
    assert len(images) == 40 and all(Image.open(p).size for p in images)
    assert not list((tmp_path / "sample").rglob("*.tmp*"))
    assert json.loads((tmp_path / "sample" / "sample.json").read_text())["count"] == 40


def test_use_your_model_names_a_broken_best_run_instead_of_stopping(home):
    run, _ = home
    assert predict.run_problem(run) == "" and "train in notebooks 02 and 03" in predict.run_problem(None)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:400])
    problem = predict.run_problem(run)
    assert problem.startswith("unet_f100 is broken:") and "best.pt" in problem and "\n" not in problem


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_a_truncated_export_is_named(tmp_path, capsys, name):
    if name.endswith(".onnx"):
        pytest.importorskip("onnx")
    (tmp_path / name).write_bytes(b"\x08\x07garbage" * 10)
    err = _one_line_error(capsys, predict.main([str(tmp_path / name), str(_photo(tmp_path / "x.png")),
                                                str(tmp_path / "out")]))
    assert str(tmp_path / name) in err


def test_the_worst_cases_name_a_truncated_predictions_file_and_the_report_is_written(broken_home):
    preds = broken_home / "runs" / "unet_f100" / "test_preds.npz"
    preds.write_bytes(preds.read_bytes()[:100])
    summary = pd.read_csv(report.tables.write_summary(broken_home, n_boot=50))
    gallery = report.best_run_gallery(summary, broken_home)
    assert isinstance(gallery, str) and "test_preds.npz is unreadable" in gallery
    text = report.write_report(broken_home, n_boot=50).read_text()  # the rest of the report is written
    assert "unet_f100" in text and "test_preds.npz is unreadable" in text
