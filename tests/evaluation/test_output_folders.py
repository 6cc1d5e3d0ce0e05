"""Outputs stay in their folder and keep earlier work: predict and export never replace files they
did not write, never write through a link, keep earlier rows, stay consistent after Ctrl-C, name
outputs apart without regard to case; every input left out is named; checkpoints get the process's
normal file mode."""
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.evaluation import export, outputs
from helpers.evaluation import predict as predict_module
from helpers.evaluation.predict import main, predict
from helpers.evaluation.predict_files import (
    collect_inputs,
    left_out_line,
    output_names,
    read_manifest,
)
from helpers.training.checkpoints import save_checkpoint
from tests.builders import Brightness, make_run


def _photo(path):
    pixels = np.full((48, 64, 3), 40, np.uint8)
    pixels[10:30, 20:40] = 220
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module.runs, "load_run_model",
                        lambda run_dir, map_location=None: Brightness())
    return make_run(tmp_path / "results", "bright", "unet", 1.0, tmp_path / "data")


def _consistent(out):
    """Every row of predictions.csv has its mask and overlay; every file there is in the
    manifest."""
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    for name in table["id"]:
        assert (out / f"{name}_segmentation.png").is_file()
        assert (out / f"{name}_overlay.jpg").is_file()
    listed = read_manifest(out) | {predict_module.MANIFEST}
    assert {p.name for p in out.iterdir()} <= listed
    return table


def test_a_second_prediction_into_a_folder_adds_its_rows(run, tmp_path):
    out = tmp_path / "out"
    predict(run, [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png")], out, progress=False)
    again = predict(run, [_photo(tmp_path / "c.png"), tmp_path / "b.png"], out, progress=False)
    assert list(again["id"]) == ["c", "b"] and again.attrs["earlier"] == 1
    table = _consistent(out)
    assert sorted(table["id"]) == ["a", "b", "c"]  # a kept, b predicted again (once), c added


def test_after_ctrl_c_the_table_lists_the_images_whose_outputs_are_complete(run, tmp_path,
                                                                            monkeypatch, capsys):
    photos = [_photo(tmp_path / "in" / f"p{k}.png") for k in range(5)]
    real, calls = predict_module.inference.iter_probs, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module.inference, "iter_probs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict(run, photos, tmp_path / "out", batch_size=2, progress=False)
    assert list(_consistent(tmp_path / "out")["id"]) == ["p0", "p1", "p2", "p3"]
    assert "lists the 4 image(s) whose outputs are complete" in capsys.readouterr().err


def test_no_output_is_written_through_a_link_in_the_output_folder(run, tmp_path, capsys):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"mine")
    # dangling: to a file not there yet
    (out / "x_segmentation.png").symlink_to(outside / "new.png")
    (out / "x_overlay.jpg").symlink_to(outside / "keep.png")         # to a file of the user's
    photo = _photo(tmp_path / "x.png")
    with pytest.raises(outputs.OutputClash, match="x_overlay.jpg, x_segmentation.png"):
        predict(run, [photo], out, progress=False)
    predict(run, [photo], out, progress=False, overwrite=True)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.png"]  # nothing written outside
    assert (outside / "keep.png").read_bytes() == b"mine"
    assert not (out / "x_segmentation.png").is_symlink() and (out / "x_segmentation.png").is_file()


def test_output_names_differ_without_regard_to_case(run, tmp_path):
    upper, lower = _photo(tmp_path / "in" / "ISIC_1.jpg"), _photo(tmp_path / "in" / "isic_1.JPG")
    names = output_names([upper, lower])
    assert len({name.lower() for name in names.values()}) == 2
    out = tmp_path / "out"
    predict(run, [upper], out, progress=False)
    # another file whose name differs only in case
    later = predict(run, [lower], out, progress=False)
    assert later["id"].iloc[0].lower() != "isic_1"
    assert len(_consistent(out)) == 2
    (out / "ISIC_2_segmentation.png").write_bytes(b"the user's")   # a file predict did not write
    with pytest.raises(outputs.OutputClash, match="ISIC_2_segmentation.png"):
        predict(run, [_photo(tmp_path / "isic_2.png")], out, progress=False)


def test_an_output_path_that_is_an_existing_file_is_refused(run, tmp_path, capsys):
    photo, taken = _photo(tmp_path / "x.png"), tmp_path / "results.txt"
    taken.write_text("notes")
    assert main([str(run), str(photo), str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"{taken} is an existing file, not a folder" in err and taken.read_text() == "notes"


def test_every_input_left_out_is_named_in_one_line_and_counted_at_the_end(run, tmp_path, capsys,
                                                                          monkeypatch):
    folder = tmp_path / "in"
    _photo(folder / "good.png")
    _photo(tmp_path / "elsewhere" / "linked.png")
    (folder / "linked-folder").symlink_to(tmp_path / "elsewhere")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "locked").mkdir()
    _photo(folder / "locked" / "hidden.png")
    (folder / "notes.txt").write_text("visit 3")
    real = os.scandir

    # a folder this user may not read (root reads every folder, so it is simulated)
    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, notes = collect_inputs([folder])
    assert [p.name for p in files] == ["good.png"]
    line = left_out_line(notes)
    for expected in ("locked: a folder that cannot be read (Permission denied)",
                     "linked-folder: a linked folder", "gone.png: a dangling link",
                     "loop.png: a looping link", "pipe.jpg: a named pipe",
                     "notes.txt: not an image file"):
        assert expected in line, expected
    assert line.startswith("Left out 6 input(s): ") and "\n" not in line
    assert main([str(run), str(folder), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("Left out 6 input(s)") == 1
    last = out.splitlines()[-1]
    assert "✓ 1 image(s)" in last and "6 left out (named above)" in last


@pytest.fixture
def exported_run(tmp_path):
    return make_run(tmp_path / "results", "tiny", "unet", 1.0, tmp_path / "data")


def test_export_refuses_to_replace_files_it_did_not_write_unless_asked(exported_run, tmp_path,
                                                                       capsys):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "model.pt").write_bytes(b"the user's model")
    (out / "MODEL_CARD.md").write_text("the user's card")
    assert export.main([str(exported_run), str(out), "--format", "torchscript"]) == 1
    err = capsys.readouterr().err
    assert "not written by export" in err and "MODEL_CARD.md, model.pt" in err
    assert "--overwrite" in err
    assert (out / "model.pt").read_bytes() == b"the user's model"
    done = export.export_run(exported_run, out, ["torchscript"], overwrite=True)
    assert done["files"]["torchscript"].stat().st_size > 1000
    # its own files: replaced without asking
    again = export.export_run(exported_run, out, ["torchscript"])
    assert len(again["card"].read_text()) > 200  # the card export wrote, not the user's


def test_export_writes_no_file_through_a_link_and_refuses_a_file_as_its_folder(exported_run,
                                                                                tmp_path,
                                                                                capsys):
    out, outside = tmp_path / "exported", tmp_path / "outside.md"
    out.mkdir()
    outside.write_text("keep")
    (out / "MODEL_CARD.md").symlink_to(outside)
    export.export_run(exported_run, out, ["torchscript"], overwrite=True)
    assert outside.read_text() == "keep" and not (out / "MODEL_CARD.md").is_symlink()
    taken = tmp_path / "file"
    taken.write_text("x")
    assert export.main([str(exported_run), str(taken), "--format", "torchscript"]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err


def test_checkpoints_get_the_processs_normal_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint({"model": {"w": torch.zeros(1)}}, tmp_path / "last.pt")
        # readable by the other users of a shared grid
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = save_checkpoint({"model": {"w": torch.zeros(1)}}, tmp_path / "best.pt")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a stricter umask is kept
    finally:
        os.umask(old)


def test_the_challenge_export_and_the_results_tables_never_write_through_a_link(tmp_path):
    from helpers.evaluation import challenge
    from helpers.reporting import tables

    out, outside = tmp_path / "submission", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "ISIC_0000001_segmentation.png").symlink_to(outside / "planted.png")  # dangling
    (tmp_path / "submission.zip").symlink_to(outside / "planted.zip")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / tables.SUMMARY_FILE).symlink_to(outside / "planted.csv")
    challenge.write_mask(out, "ISIC_0000001", np.ones((8, 8), bool))
    zipped = challenge.zip_folder(out)
    tables.write_summary(tmp_path / "results")
    assert list(outside.iterdir()) == []                              # nothing written outside
    assert not (out / "ISIC_0000001_segmentation.png").is_symlink() and not zipped.is_symlink()
