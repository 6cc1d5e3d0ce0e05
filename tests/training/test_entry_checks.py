"""Every entry checks its values: config.json field types, the notebook helpers' keyword arguments,
devices, seeds, pipes, refused checkpoints, a home or output path that is a file, encrypted zips,
repeated epochs."""
import io
import json
import os
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import cli, paths
from helpers.data import prep, study
from helpers.data.archives import ArchiveError, safe_extract
from helpers.data.isic import DataError
from helpers.evaluation import predict as predict_module
from helpers.training import __main__ as training_cli
from helpers.training import runs
from helpers.training.checkpoints import UnsafeCheckpointError, load_checkpoint
from tests.builders import Brightness, make_run, write_pair


def _one_line(capsys, code, expected):
    err = capsys.readouterr().err
    assert code == expected and err.startswith("✗ ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module.runs, "load_run_model",
                        lambda run_dir, map_location=None: Brightness())
    photo = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photo)
    return make_run(tmp_path / "results", "bright", "unet", 1.0, tmp_path / "data"), photo


@pytest.mark.parametrize(("field", "value", "kind"), [("model_overrides", "x", "object"),
                                                      ("checkpoint_dir", 5, "text"),
                                                      ("image_size", "abc", "whole number")])
def test_a_config_json_field_of_the_wrong_type_is_named_with_its_file(run, tmp_path, capsys,
                                                                      field, value, kind):
    folder, photo = run
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    code = predict_module.main([str(folder), str(photo), str(tmp_path / "out")])
    err = _one_line(capsys, code, 1)
    assert f"{folder / 'config.json'}: {field} is {json.dumps(value)}, not a {kind}" in err


def test_a_misspelt_keyword_of_a_notebook_helper_is_refused_with_the_nearest_name():
    with pytest.raises(TypeError, match=r"fractionz=.*Did you mean: fractionz → fractions\?"):
        study.follow("smoke", fractionz=[1.0])
    with pytest.raises(ValueError, match=r"Did you mean: fractionz → fractions\?"):
        study.follow("smoke", {"fractionz": [1.0]})
    assert not study.record_path().exists()  # refused before anything was recorded


@pytest.mark.parametrize("device", ["xpu", "meta"])
def test_a_device_torch_has_not_here_is_refused_before_anything_is_written(run, tmp_path, capsys,
                                                                           device):
    folder, photo = run
    err = _one_line(capsys, predict_module.main([str(folder), str(photo), str(tmp_path / "out"),
                                                 "--device", device]), 2)
    assert f"--device {device}" in err and not (tmp_path / "out").exists()
    results = tmp_path / "grid"
    code = training_cli.main(["--profile", "smoke", "--device", device, "--out", str(results)])
    err = _one_line(capsys, code, 2)
    assert f"--device {device}" in err and not results.exists() and not study.record_path().exists()


def test_seeds_out_of_range_are_refused_before_anything_is_prepared(tmp_path, capsys):
    results = tmp_path / "grid"
    code = training_cli.main(["--profile", "smoke", "--seeds", "99999999999999999999", "--out",
                              str(results)])
    err = _one_line(capsys, code, 2)
    assert ("SEEDS = '99999999999999999999' is not valid: expected a whole number from 0 to "
            "4294967295") in err
    assert not results.exists() and not study.record_path().exists()


def test_an_output_path_that_is_a_file_is_refused_by_the_training_command(tmp_path, capsys):
    taken = tmp_path / "results.txt"
    taken.write_text("notes")
    err = _one_line(capsys, training_cli.main(["--profile", "smoke", "--out", str(taken)]), 2)
    assert f"--out {taken} is an existing file, not a folder" in err
    assert taken.read_text() == "notes"


def test_a_named_pipe_among_the_images_is_refused_by_name_and_never_blocks_preparing(tmp_path):
    """What ``external`` (and every data source) reads a folder with: a pipe is named, not read."""
    raw = tmp_path / "other"
    for k in range(4):
        write_pair(raw, "train", f"ISIC_{610 + k:07d}")
    image, _ = write_pair(raw, "train", "ISIC_0000620")
    image.unlink()
    os.mkfifo(image)  # a pipe where an image should be: reading it would wait forever
    failed = []

    def prepare():
        try:
            prep.prepare(raw, tmp_path / "prepared", 32, "external", 0, "raise")
        except DataError as err:
            failed.append(str(err))

    worker = threading.Thread(target=prepare, daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():
        with open(image, "wb"):  # unblock the reader, then fail
            pass
        pytest.fail("the preparation blocked on a named pipe")
    assert failed and "ISIC_0000620.jpg: is a named pipe, not a regular image file" in failed[0]


class Payload:
    """An object a checkpoint of this kit never holds."""


def test_a_refused_checkpoint_says_not_to_load_it_unless_its_source_is_trusted(tmp_path):
    torch.save({"model": Payload()}, tmp_path / "best.pt")
    opcode = tmp_path / "code.pt"
    opcode.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.")
    for path in (tmp_path / "best.pt", opcode):
        with pytest.raises(UnsafeCheckpointError) as refused:
            load_checkpoint(path)
        message = str(refused.value)
        assert str(path) in message and "Do not load it unless you trust its source" in message
        assert "weights_only" not in message and "safe_globals" not in message


def test_a_home_that_is_a_file_is_named_as_such(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home.txt"
    home.write_text("not a folder")
    for variable in (paths.DATA_ENV, paths.RESULTS_ENV):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    refused = r"\$KIT_HOME is .*home.txt, which is a file, not a folder"
    with pytest.raises(NotADirectoryError, match=refused):
        paths.results_dir()
    err = _one_line(capsys, cli.run(lambda argv: paths.results_dir(), []), 1)
    assert "home.txt, which is a file" in err


def _encrypted_zip(path):
    """A zip whose entries are flagged as encrypted (the standard library writes none)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/ISIC_0000001.jpg", b"secret")
    data = bytearray(buffer.getvalue())
    # the general-purpose flags: bit 0
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + offset] |= 0x1
    path.write_bytes(bytes(data))
    return path


def test_an_encrypted_zip_is_named(tmp_path):
    archive = _encrypted_zip(tmp_path / "data.zip")
    refused = r"data.zip is encrypted \(password-protected: images/ISIC_0000001.jpg\)"
    with pytest.raises(ArchiveError, match=refused):
        safe_extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "images").exists()


def test_a_history_with_repeated_epochs_keeps_the_last_row_of_each_epoch(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "history.csv").write_text("epoch,train_loss,val_loss,val_dice\n1,0.9,0.8,0.40\n"
                                        "2,0.7,0.6,0.50\n1,0.85,0.75,0.45\n2,0.65,0.55,0.55\n"
                                        "3,0.6,0.5,0.6\n")
    history = runs.read_history(folder)
    assert history["epoch"].tolist() == [1, 2, 3]                  # no zig-zag back to epoch 1
    assert history["val_dice"].tolist() == [0.45, 0.55, 0.6]       # the rows written last
    assert pd.Index(history["epoch"]).is_monotonic_increasing
