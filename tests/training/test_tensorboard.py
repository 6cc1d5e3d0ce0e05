"""TensorBoard event files: history.csv's numbers per epoch, a few predictions; none, silently, without tensorboard."""
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.profiles import resolve_config
from helpers.training import engine, runs
from helpers.training import tensorboard as board

WORKER = Path(__file__).resolve().parents[1] / "train_worker.py"
SCALARS = ["train_loss", "val_loss", "val_dice", "lr", "epoch_seconds", "images_per_s"]


def _spec(tiny, num_epochs=3):
    config = resolve_config("smoke", image_size=32, batch_size=4, num_epochs=num_epochs, split_seed=0)
    return runs.make_spec("unet", 1.0, 0, tiny, config)


def _events(run_dir):
    """TensorBoard's own reading of the run's event files (orphaned steps purged, as it shows them)."""
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = reader.EventAccumulator(str(Path(run_dir) / board.FOLDER), size_guidance={"images": 0})
    return events.Reload()


def _raw_steps(run_dir):
    """How often each (tag, step) occurs in the event files, read without TensorBoard's purging."""
    loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
    files = sorted((Path(run_dir) / board.FOLDER).glob("events.out.tfevents.*"))
    return files, Counter((value.tag, event.step) for file in files for event in loader.EventFileLoader(str(file)).Load()
                          for value in event.summary.value)


def _interrupt_validation_at(monkeypatch, epoch):
    """Make ``validate`` raise KeyboardInterrupt (a disconnect) at ``epoch``: epochs before it are saved."""
    real, calls = engine.validate, []

    def validate(run):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt("simulated disconnect")
        return real(run)
    monkeypatch.setattr(engine, "validate", validate)


def _assert_scalars_equal_history(run_dir):
    events, history = _events(run_dir), runs.read_history(run_dir)
    for name in SCALARS:
        logged = events.Scalars(name)
        assert [e.step for e in logged] == list(history["epoch"]), name
        np.testing.assert_array_equal([e.value for e in logged], history[name].to_numpy(np.float32), err_msg=name)


def test_event_files_hold_history_csv_and_the_predictions_of_fixed_validation_images(tiny, results):
    result = engine.fit(_spec(tiny), tiny, progress=False)
    _assert_scalars_equal_history(result["run_dir"])
    images = _events(result["run_dir"]).Images(board.IMAGE_TAG)
    assert [e.step for e in images] == [1, 3]  # the first epoch and the last (every 5th: none in 3)
    panel = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    rows = tiny.indices("val")[:board.IMAGE_COUNT]
    assert panel.shape == (len(rows) * 32, 3 * 32, 3)  # one row per image: image | truth | prediction
    np.testing.assert_array_equal(panel[:, :32], np.concatenate(tiny.images[rows]))
    np.testing.assert_array_equal(panel[:, 32:64, 0], np.concatenate(tiny.masks[rows]) * 255)


@pytest.mark.parametrize("off", ["not installed", "KIT_TENSORBOARD=0"])
def test_without_tensorboard_training_works_and_says_nothing_about_it(tiny, results, monkeypatch, capsys, off):
    if off == "not installed":
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now fails
    else:
        monkeypatch.setenv(board.ENV, "0")
    result = engine.fit(_spec(tiny, num_epochs=2), tiny, progress=False)
    assert result["status"] == "trained" and list(runs.read_history(result["run_dir"])["epoch"]) == [1, 2]
    assert not (Path(result["run_dir"]) / board.FOLDER).exists()
    said = capsys.readouterr()
    assert "tensorboard" not in (said.out + said.err).lower()


def test_a_failing_event_write_is_said_once_and_training_goes_on(tiny, results, monkeypatch, capsys):
    class FullDisk:  # every write fails, as on a full Drive
        def __init__(self, folder, purge_step):
            pass

        def add_scalar(self, *args):
            raise OSError(28, "No space left on device")

        close = add_scalar

    monkeypatch.setattr(board, "summary_writer", FullDisk)
    result = engine.fit(_spec(tiny), tiny, progress=False)
    assert result["status"] == "trained" and len(runs.read_history(result["run_dir"])) == 3
    said = capsys.readouterr().out
    assert said.count("TensorBoard: writing to") == 1 and "No space left on device" in said


def test_a_resumed_run_writes_only_its_later_epochs(tiny, results, monkeypatch):
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _interrupt_validation_at(patch, 3)
        engine.fit(_spec(tiny), tiny, progress=False)
    result = engine.fit(_spec(tiny), tiny, progress=False)
    assert result["status"] == "resumed"
    files, steps = _raw_steps(result["run_dir"])
    assert len(files) == 2  # the interrupted process's and the resumed one's
    assert {step for (tag, step) in steps if tag == "val_dice"} == {1, 2, 3}
    assert set(steps.values()) == {1}, "a step was written twice"
    _assert_scalars_equal_history(result["run_dir"])


def test_a_run_resumed_from_an_older_checkpoint_hides_the_epochs_it_trains_again(tiny, results, monkeypatch):
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _interrupt_validation_at(patch, 3)
        engine.fit(_spec(tiny), tiny, progress=False)
    checkpoints = Path(runs.run_dir(_spec(tiny))) / "checkpoints"
    (checkpoints / "last.pt").unlink()  # lost: the run goes on from last.prev.pt (epoch 1) and trains epoch 2 again
    result = engine.fit(_spec(tiny), tiny, progress=False)
    assert _raw_steps(result["run_dir"])[1][("val_dice", 2)] == 2  # in the files twice,
    _assert_scalars_equal_history(result["run_dir"])                  # shown once (purge_step)


def test_starting_over_deletes_the_event_files(tiny, results):
    first = engine.fit(_spec(tiny, num_epochs=1), tiny, progress=False)
    again = engine.fit(_spec(tiny, num_epochs=1), tiny, restart=True, progress=False)
    files, steps = _raw_steps(again["run_dir"])
    assert first["run_dir"] == again["run_dir"] and len(files) == 1 and set(steps.values()) == {1}


@pytest.mark.slow
def test_under_torchrun_only_rank_0_writes(tiny, tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*torchrun, str(WORKER), "--prepared", str(tiny.root), "--results", str(tmp_path)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.count("RESULT trained") == 2, (done.stdout + done.stderr)[-3000:]
    run_dir, = (tmp_path / "runs").glob("*")
    files, steps = _raw_steps(run_dir)
    assert len(files) == 1 and set(steps.values()) == {1}  # one writer: rank 0's
    _assert_scalars_equal_history(run_dir)


@pytest.mark.parametrize(("epoch", "last", "drawn"), [(1, False, True), (2, False, False), (5, False, True),
                                                        (7, True, True), (9, False, False), (10, False, True)])
def test_predictions_are_drawn_at_the_first_every_fifth_and_the_last_epoch(epoch, last, drawn):
    assert board.draws_images(epoch, last) is drawn
