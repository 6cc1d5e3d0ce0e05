"""Tests for helpers.training.checkpoints: exact resume, fallback to the previous file, refusal of foreign
pickles, the local copy of a checkpoint on Drive, retries and a clear error on failed writes."""
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.training import checkpoints
from helpers.training.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_latest,
    make_state,
    restore_state,
    save_checkpoint,
    save_weights_atomic,
)


def _build(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(),
                                torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=1)
    return model, optimizer, scheduler, scaler


def _train_step(model, optimizer, scheduler, scaler):
    images, targets = torch.randn(6, 4), torch.randn(6, 1)  # torch RNG, and dropout too
    weight = 1 + np.random.rand() + random.random()  # numpy and python RNGs
    loss = ((model(images) - targets) ** 2).mean() * weight
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def _draws():
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]


def _seed(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.filterwarnings("error")
def test_resume_matches_unbroken_run_exactly(tmp_path):
    _seed(0)
    parts = _build(0)
    for _ in range(2):
        _train_step(*parts)
    history = [{"loss": np.float32(0.5)}, {"loss": torch.tensor(0.25)}]
    config = {"lr": 1e-2, "data": Path("data/cache"), "sizes": (64, 64), "amp": True, "note": None}
    state = make_state(*parts, epoch=2, best_metric=np.float64(0.75), history=history, config=config)
    save_checkpoint(state, tmp_path / "last.pt")
    for _ in range(2):  # the unbroken run goes on
        _train_step(*parts)
    expected_params = [p.detach().clone() for p in parts[0].parameters()]
    expected_draws = _draws()

    _seed(123)
    resumed = _build(123)
    loaded, path = load_latest(tmp_path)
    assert path == tmp_path / "last.pt"
    info = restore_state(loaded, *resumed)
    assert info == {"epoch": 2, "best_metric": 0.75, "history": [{"loss": 0.5}, {"loss": 0.25}],
                    "config": {"lr": 1e-2, "data": "data/cache", "sizes": [64, 64], "amp": True,
                               "note": None}}
    for _ in range(2):
        _train_step(*resumed)
    for got, want in zip(resumed[0].parameters(), expected_params):
        assert torch.equal(got, want)
    draws = _draws()
    assert torch.equal(draws[0], expected_draws[0])
    assert np.array_equal(draws[1], expected_draws[1]) and draws[2] == expected_draws[2]
    assert resumed[2].get_last_lr() == parts[2].get_last_lr()
    assert resumed[3].get_scale() == parts[3].get_scale() == 2.0 ** 12


def test_wrapped_models_are_saved_without_prefixes(tmp_path):
    model = _build(0)[0]
    for wrapped in (torch.compile(model, backend="eager"), torch.nn.DataParallel(model)):
        state = make_state(wrapped, None, None, None, 0, 0.0, [], {}, rng=False)
        assert list(state["model"]) == list(model.state_dict())
    fresh = torch.nn.DataParallel(torch.compile(_build(1)[0], backend="eager"))
    restore_state(state, fresh)
    for got, want in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(got, want)
    foreign = {"model": torch.nn.DataParallel(torch.compile(model, backend="eager")).state_dict()}
    assert next(iter(foreign["model"])).startswith("module._orig_mod.")  # as other code saves it
    plain = _build(2)[0]
    restore_state(foreign, plain)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))


def test_make_state_rejects_unpicklable_config_naming_the_key():
    with pytest.raises(TypeError, match=r"config\['fn'\]"):
        make_state(_build(0)[0], None, None, None, 0, 0.0, [], {"fn": object()})


def test_previous_checkpoint_is_kept(tmp_path):
    model = _build(0)[0]
    for epoch in (1, 2):
        save_checkpoint(make_state(model, None, None, None, epoch, 0.0, [], {}), tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.prev.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_truncated_last_falls_back_to_previous(tmp_path):
    model = _build(0)[0]
    for epoch in (1, 2):
        save_checkpoint(make_state(model, None, None, None, epoch, 0.0, [], {}), tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="last.pt"):
        state, path = load_latest(tmp_path)
    assert path == tmp_path / "last.prev.pt" and state["epoch"] == 1


def test_no_readable_checkpoint_raises_naming_files(tmp_path):
    assert load_latest(tmp_path) == (None, None)
    (tmp_path / "last.pt").write_bytes(b"")
    (tmp_path / "last.prev.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError) as info:
        load_latest(tmp_path)
    assert "last.pt" in str(info.value) and "last.prev.pt" in str(info.value)


def _write_marker(path):
    Path(path).write_text("payload ran")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _write_marker, (self.marker,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_pickle_payload_is_refused_and_never_run(tmp_path):
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()  # the payload is live: unpickling it for real runs it

    marker = tmp_path / "marker.txt"
    torch.save({"model": _Payload(marker)}, tmp_path / "last.pt")
    with pytest.raises(UnsafeCheckpointError, match="last.pt"):
        load_checkpoint(tmp_path / "last.pt")
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"model": _Payload(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match="plain.pt"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="Refused"):
        load_latest(tmp_path)
    assert not marker.exists()


def test_a_checkpoint_on_drive_goes_through_a_local_copy_where_the_previous_one_stays(tmp_path):
    drive, local = tmp_path / "drive", tmp_path / "local"
    model = _build(0)[0]
    for epoch in (1, 2, 3):
        save_checkpoint(make_state(model, None, None, None, epoch, 0.0, [], {}), drive / "last.pt", local_copy=local)
    assert sorted(p.name for p in drive.iterdir()) == ["last.pt"]  # one file on Drive, no temp files
    assert sorted(p.name for p in local.iterdir()) == ["last.prev.pt", "last.pt"]
    assert (drive / "last.pt").read_bytes() == (local / "last.pt").read_bytes()
    assert load_checkpoint(drive / "last.pt")["epoch"] == 3 and load_checkpoint(local / "last.prev.pt")["epoch"] == 2


def test_failed_drive_writes_retry_then_raise_and_keep_the_old_file_and_the_local_copy(tmp_path, monkeypatch):
    drive, local = tmp_path / "drive", tmp_path / "local"
    model = _build(0)[0]
    save_checkpoint(make_state(model, None, None, None, 1, 0.0, [], {}), drive / "last.pt", local_copy=local)
    real_replace, attempts = os.replace, []

    def flaky_replace(src, dst):
        if Path(dst).parent == drive:
            attempts.append(dst)
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    state = make_state(model, None, None, None, 2, 0.0, [], {})
    with pytest.raises(checkpoints.CheckpointWriteError, match=r"drive/last.pt after 3 attempts \(\[Errno 28\] No space"
                                                               r".*copy is on this runtime's disk.*Drive's trash"):
        save_checkpoint(state, drive / "last.pt", retries=2, local_copy=local, backoff=0)
    assert len(attempts) == 3
    assert load_checkpoint(drive / "last.pt")["epoch"] == 1  # untouched
    assert load_checkpoint(local / "last.pt")["epoch"] == 2  # nothing of this runtime is lost
    assert sorted(p.name for p in drive.iterdir()) == ["last.pt"]  # no temp file left behind


def test_unwritable_folder_retries_then_raises(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    sleeps = []
    monkeypatch.setattr(checkpoints.time, "sleep", sleeps.append)
    state = make_state(_build(0)[0], None, None, None, 1, 0.0, [], {})
    with pytest.raises(checkpoints.CheckpointWriteError, match="a_file"):
        save_checkpoint(state, blocker / "last.pt", retries=3)
    assert sleeps == [0.5, 1.0, 2.0]


def test_interrupted_write_never_replaces_last(tmp_path, monkeypatch):
    model = _build(0)[0]
    save_checkpoint(make_state(model, None, None, None, 1, 0.0, [], {}), tmp_path / "last.pt")
    (tmp_path / ".last.pt.stale.tmp").write_bytes(b"left by a killed write")

    def half_save(state, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", half_save)
    with pytest.raises(OSError, match="last.pt"):
        save_checkpoint({"epoch": 2}, tmp_path / "last.pt", retries=0)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    save_checkpoint(make_state(model, None, None, None, 2, 0.0, [], {}), tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_best_weights_round_trip(tmp_path):
    model = _build(0)[0]
    written = save_weights_atomic(torch.compile(model, backend="eager"), tmp_path / "best.pt",
                                  metric=np.float32(0.5), epoch=7)
    fresh = _build(1)[0]
    info = restore_state(load_checkpoint(written), fresh)
    assert info["epoch"] == 7 and info["best_metric"] == 0.5
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_restore_errors_say_what_is_wrong():
    state = make_state(_build(0)[0], None, None, None, 1, 0.0, [], {}, rng=False)
    other = torch.nn.Linear(4, 1)
    with pytest.raises(RuntimeError, match="do not fit this Linear"):
        restore_state(state, other)
    model, optimizer, _, _ = _build(1)
    with pytest.raises(KeyError, match="no optimizer state"):
        restore_state(state, model, optimizer)
