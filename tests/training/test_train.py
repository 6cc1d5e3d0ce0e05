"""The training engine: exact resume after SIGKILL, fallback to last.prev.pt, NaN stops, skips, repeatability."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.profiles import resolve_config
from helpers.training import __main__ as training_cli
from helpers.training import checkpoints, devices, engine, grid, runs, state
from helpers.training.checkpointer import Checkpointer
from helpers.training.checkpoints import load_checkpoint
from helpers.training.losses import DiceBCELoss

WORKER = Path(__file__).resolve().parents[1] / "train_worker.py"
STEPS_PER_EPOCH = 5  # 20 training images, batch 4


def _config(**changes):
    return resolve_config("smoke", **{"image_size": 32, "batch_size": 4, "num_epochs": 3, "split_seed": 0, **changes})


def _spec(tiny, model="unet", **changes):
    return runs.make_spec(model, 1.0, 0, tiny, _config(**changes))


def _hook(monkeypatch, step, action):
    """Make every run built from now on use :class:`StepHook` as its loss."""
    monkeypatch.setattr(state, "DiceBCELoss", lambda: StepHook(step, action))


def _weights(results_dir, name="last.pt"):
    path = next(Path(results_dir).glob(f"runs/*/checkpoints/{name}"))
    return load_checkpoint(path)


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


class StepHook(DiceBCELoss):
    """Dice+BCE that, from training step ``step`` on, returns NaN (``nan``), makes the gradients NaN
    while the loss stays finite (``nan_grad``, at that step only), or raises KeyboardInterrupt."""

    def __init__(self, step, action):
        super().__init__()
        self.step, self.action, self.calls = step, action, 0

    def forward(self, logits, masks):
        loss = super().forward(logits, masks)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.step and self.action == "nan_grad":
                logits.register_hook(lambda grad: grad * float("nan"))
            elif self.calls >= self.step and self.action == "nan":
                return loss * float("nan")
            elif self.calls >= self.step and self.action == "raise":
                raise KeyboardInterrupt("simulated disconnect")
        return loss


# ---- subprocess: SIGKILL in the middle of an epoch, then restart -------------------------------

def _worker(tiny, results, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, str(WORKER), "--prepared", str(tiny.root), "--results", str(results),
            "--epochs", "3", *extra], env


def _run_worker(tiny, results, *extra):
    cmd, env = _worker(tiny, results, *extra)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _kill_worker_at(tiny, results, step, *extra):
    """Start a worker that hangs inside training step ``step``; SIGKILL it there."""
    cmd, env = _worker(tiny, results, "--hang-at-step", str(step), *extra)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker, deadline = Path(results) / "hanging", time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "worker never reached the step"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    _run_worker(tiny, folder)
    return _weights(folder), pd.read_csv(next(folder.glob("runs/*/history.csv")))


@pytest.mark.slow
def test_sigkill_in_epoch_2_resumes_from_epoch_1_and_ends_bit_exact(tiny, tmp_path, uninterrupted):
    reference, reference_history = uninterrupted
    _kill_worker_at(tiny, tmp_path, STEPS_PER_EPOCH + 3)  # batch 3 of epoch 2
    assert _weights(tmp_path)["epoch"] == 1
    assert list(pd.read_csv(next(tmp_path.glob("runs/*/history.csv")))["epoch"]) == [1]
    assert not list(tmp_path.glob("runs/*/done.json"))
    out = _run_worker(tiny, tmp_path)
    assert "(epoch 1 done)" in out and "RESULT resumed" in out
    final = _weights(tmp_path)
    assert final["epoch"] == 3
    _assert_same_weights(final["model"], reference["model"])  # bit-exact on the CPU
    history = pd.read_csv(next(tmp_path.glob("runs/*/history.csv")))
    columns = ["epoch", "train_loss", "val_loss", "val_dice", "lr"]
    pd.testing.assert_frame_equal(history[columns], reference_history[columns], check_exact=True)


@pytest.mark.slow
def test_timed_checkpoints_resume_mid_epoch_bit_exact(tiny, tmp_path, uninterrupted):
    reference, _ = uninterrupted
    _kill_worker_at(tiny, tmp_path, STEPS_PER_EPOCH + 3, "--checkpoint-minutes", "1e-9")  # saves after every batch
    state = _weights(tmp_path)
    assert (state["epoch"], state["batches_done"]) == (1, 2)
    out = _run_worker(tiny, tmp_path, "--checkpoint-minutes", "1e-9")
    assert "(epoch 1 done, batch 2 of epoch 2)" in out
    _assert_same_weights(_weights(tmp_path)["model"], reference["model"])


@pytest.mark.slow
def test_a_weight_average_resumes_mid_epoch_bit_exact_and_is_what_best_pt_keeps(tiny, tmp_path):
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    _run_worker(tiny, reference_dir, "--ema-epochs", "1")
    reference = _weights(reference_dir)
    _kill_worker_at(tiny, resumed_dir, STEPS_PER_EPOCH + 3, "--checkpoint-minutes", "1e-9", "--ema-epochs", "1")
    assert _weights(resumed_dir)["average"]["updates"] == STEPS_PER_EPOCH + 2
    _run_worker(tiny, resumed_dir, "--checkpoint-minutes", "1e-9", "--ema-epochs", "1")
    resumed = _weights(resumed_dir)
    _assert_same_weights(resumed["model"], reference["model"])
    _assert_same_weights(resumed["average"]["model"], reference["average"]["model"])
    assert resumed["average"]["updates"] == reference["average"]["updates"] == 3 * STEPS_PER_EPOCH


# ---- in-process -------------------------------------------------------------------------------

def test_truncated_last_checkpoint_falls_back_to_previous(tiny, results, tmp_path, monkeypatch):
    reference = engine.fit(_spec(tiny), tiny, keep_last=True, progress=False)
    reference_weights = _weights(results)["model"]
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "second"))
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # a disconnect in epoch 3
        _hook(patch, 2 * STEPS_PER_EPOCH + 1, "raise")
        engine.fit(_spec(tiny), tiny, progress=False)
    last = next((tmp_path / "second").glob("runs/*/checkpoints/last.pt"))
    assert load_checkpoint(last)["epoch"] == 2
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # half-copied to Drive
    with pytest.warns(RuntimeWarning, match="Skipping unreadable checkpoint"):
        result = engine.fit(_spec(tiny), tiny, keep_last=True, progress=False)
    assert result["status"] == "resumed" and result["best_val_dice"] == reference["best_val_dice"]
    _assert_same_weights(_weights(tmp_path / "second")["model"], reference_weights)


@pytest.mark.parametrize(("action", "step", "where"), [
    ("nan", STEPS_PER_EPOCH + 2, "training, by batch 2"),  # the loss itself becomes NaN
    ("nan_grad", 2 * STEPS_PER_EPOCH, "validation"),  # finite last loss, NaN weights after its step
])
def test_nan_stops_the_run_and_leaves_the_best_checkpoint_intact(tiny, results, action, step, where, monkeypatch):
    spec = _spec(tiny)
    with monkeypatch.context() as patch, pytest.raises(engine.TrainingDiverged,
                                                       match=rf"NaN/inf in epoch 2 \({where}\).*\(epoch 1\)"):
        _hook(patch, step, action)
        engine.fit(spec, tiny, progress=False)
    folder = runs.run_dir(spec)
    best, last = load_checkpoint(folder / "checkpoints/best.pt"), load_checkpoint(folder / "checkpoints/last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 1
    _assert_same_weights(best["model"], last["model"])
    assert all(torch.isfinite(t).all() for t in best["model"].values() if t.is_floating_point())
    assert list(pd.read_csv(folder / "history.csv")["epoch"]) == [1]
    assert not runs.is_finished(folder)
    assert engine.fit(spec, tiny, progress=False)["status"] == "resumed"  # and it can go on


def test_grid_skips_finished_runs_and_reports_their_results(tiny, results, capsys):
    config = _config(num_epochs=1, models="unet", fractions="0.5,1.0", seeds=0)
    first = grid.run_grid(config, tiny, progress=False)
    assert list(first["status"]) == ["trained", "trained"]
    assert [name.rsplit("_", 1)[0] for name in first["run_id"]] == ["unet-tiny_f050_32px_seed_s0_tiny",
                                                                    "unet-tiny_f100_32px_seed_s0_tiny"]
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("runs/*/*")}
    seen = []
    second = grid.run_grid(config, tiny, progress=False,
                           callbacks=[lambda run_id, history: seen.append((run_id, len(history)))])
    assert list(second["status"]) == ["skipped", "skipped"]
    assert list(second["best_val_dice"]) == list(first["best_val_dice"])
    assert "finished earlier with these settings (1 epochs" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in results.glob("runs/*/*")}  # nothing rewritten
    assert seen == [(name, 1) for name in first["run_id"]]


def test_cpu_run_is_repeatable(tiny, results, tmp_path, monkeypatch):
    state.seed_everything(0, deterministic=True)
    try:
        first = engine.fit(_spec(tiny, num_epochs=2), tiny, keep_last=True, progress=False)
        monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "again"))
        torch.manual_seed(123)  # fit seeds itself from the spec: what ran before does not matter
        second = engine.fit(_spec(tiny, num_epochs=2), tiny, keep_last=True, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    assert first["best_val_dice"] == second["best_val_dice"]
    _assert_same_weights(_weights(results)["model"], _weights(tmp_path / "again")["model"])


def test_failed_drive_write_retries_then_stops_with_what_to_do(tiny, results, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(checkpoints, "time", SimpleNamespace(sleep=sleeps.append))  # its retries only
    (tmp_path / "drive").write_text("not a folder")  # writes below it fail like an unmounted Drive
    spec = _spec(tiny, num_epochs=2)
    with pytest.raises(checkpoints.CheckpointWriteError, match=r"best.pt after 4 attempts.*LOCAL_FALLBACK = True"):
        engine.fit(spec, tiny, checkpoint_dir=tmp_path / "drive" / "ckpt", progress=False)
    assert sleeps == [0.5, 1.0, 2.0]  # retried, then stopped: no silent switch to local disk
    assert not runs.is_finished(runs.run_dir(spec)) and not (runs.run_dir(spec) / "checkpoints").exists()


def test_local_fallback_is_an_explicit_opt_in_and_says_so(tiny, results, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoints, "time", SimpleNamespace(sleep=lambda s: None))
    (tmp_path / "drive").write_text("not a folder")
    spec = _spec(tiny, num_epochs=1)
    with pytest.warns(RuntimeWarning, match="only on this runtime's disk"):
        result = engine.fit(spec, tiny, checkpoint_dir=tmp_path / "drive" / "ckpt", local_fallback=True, progress=False)
    assert result["status"] == "trained" and "⚠ LOCAL_FALLBACK: best.pt" in capsys.readouterr().out
    local = runs.run_dir(spec) / "checkpoints"
    assert {p.name for p in local.glob("*.pt")} == {"best.pt", "last.pt"}  # the only copies: kept
    assert "local only" in runs.load_done(runs.run_dir(spec))["checkpoints"]
    assert runs.load_run_config(runs.run_dir(spec))["checkpoint_dir"] == str(tmp_path / "drive" / "ckpt")
    assert isinstance(runs.load_run_model(runs.run_dir(spec)), torch.nn.Module)


def test_early_stopping_stops_after_patience_epochs_without_a_better_dice(tiny, results, monkeypatch):
    scripted = iter([(0.5, 0.50), (0.4, 0.60), (0.4, 0.55), (0.4, 0.58), (0.3, 0.70)])  # (val loss, val Dice)
    monkeypatch.setattr(engine, "validate", lambda run: next(scripted))
    spec = _spec(tiny, num_epochs=5, early_stopping=2)
    result = engine.fit(spec, tiny, progress=False)
    summary = (result["epochs"], result["best_epoch"], result["best_val_dice"], result["stopped_early"])
    assert summary == (4, 2, 0.6, True)
    assert load_checkpoint(runs.run_dir(spec) / "checkpoints/best.pt")["epoch"] == 2
    assert engine.fit(spec, tiny, progress=False)["status"] == "skipped"


def test_a_weight_average_is_validated_kept_as_best_pt_and_changes_the_run_id(tiny, results):
    spec = _spec(tiny, num_epochs=1, ema_epochs=1.0)
    assert runs.run_id(spec) != runs.run_id(_spec(tiny, num_epochs=1))
    assert runs.run_id(_spec(tiny, num_epochs=1, ema_epochs=0.0)) == runs.run_id(_spec(tiny, num_epochs=1))
    result = engine.fit(spec, tiny, keep_last=True, progress=False)
    last, best = _weights(results), _weights(results, "best.pt")
    assert last["average"]["updates"] == STEPS_PER_EPOCH
    _assert_same_weights(best["model"], last["average"]["model"])  # the average, not the live weights
    assert any(not torch.equal(last["model"][k], last["average"]["model"][k]) for k in last["model"])
    model = runs.load_run_model(runs.run_dir(spec))
    loader = runs.load_run_data(runs.run_dir(spec))
    assert result["best_val_dice"] == pytest.approx(_val_dice(model, loader), abs=1e-6)


def _val_dice(model, prepared):
    """Mean per-image validation Dice at 0.5, as the loop computes it."""
    from helpers.data.loaders import make_loaders, to_model_input
    val = make_loaders(prepared, 1.0, 4, 0, 0).val
    _, dice = engine.loop.validate(model, val, DiceBCELoss(), torch.device("cpu"),
                                   to_input=lambda images: to_model_input(images, torch.device("cpu")))
    return dice


def test_unetpp_with_deep_supervision_trains_and_reloads(tiny, results):
    spec = _spec(tiny, model="unetpp", num_epochs=1)  # every profile trains UNet++ with deep supervision
    assert runs.run_id(spec).startswith("unetpp-tiny+deep_supervision_f100_32px_seed_s0_tiny_")
    result = engine.fit(spec, tiny, progress=False)
    assert np.isfinite(result["best_val_dice"])
    model = runs.load_run_model(runs.run_dir(spec))
    assert model.config.deep_supervision and not model.training
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize(("kind", "expected"), [("cosine", [0.5, 1.0, 1.0, 0.8535534, 0.5, 0.1464466]),
                                                ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0])])
def test_schedules_with_warmup(kind, expected):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = state.lr_schedule(optimizer, total_steps=6, warmup_steps=2, kind=kind)
    lrs = []
    for _ in range(6):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx(expected)


def test_device_and_mixed_precision_choice(monkeypatch):
    cuda = torch.device("cuda", 0)
    assert devices.pick_device() == torch.device("cpu")
    assert devices.amp_dtype(torch.device("cpu"), "fp16") is None  # fp32 on the CPU, whatever was asked
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 5))  # a T4
    assert devices.amp_dtype(cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))  # an A100
    assert devices.amp_dtype(cuda) == torch.bfloat16
    assert devices.amp_dtype(cuda, "fp16") == torch.float16  # the T4 path forced on a newer GPU
    assert devices.amp_dtype(cuda, "off") is None
    with pytest.raises(ValueError, match="AMP = 'fp8'"):
        devices.amp_dtype(cuda, "fp8")


def test_imagenet_initialisation_loads_the_resnet_where_the_vit_does_not_fit(monkeypatch):
    import torchvision

    from helpers.models import build_model

    resnet = torchvision.models.resnet50().state_dict()
    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", lambda self, progress: resnet)
    model = build_model("transunet", "tiny", resnet_width=64)
    state.init_from_imagenet(model)
    assert torch.equal(model.backbone.conv1.weight, resnet["conv1.weight"])
    assert torch.equal(model.backbone.layer1[0].conv2.weight, resnet["layer1.0.conv2.weight"])


def test_live_curves_collect_every_run_and_match_the_files(tiny, results):
    from helpers.training import live

    curves = live.LiveCurves(live=False)
    table = grid.run_grid(_config(num_epochs=2, models="unet", fractions="0.5,1.0", seeds=0), tiny, progress=False,
                          callbacks=[curves])
    assert list(curves.histories) == list(table["run_id"])
    fig = curves.figure()
    ax_loss, ax_dice = fig.axes
    assert len(ax_loss.lines) == 4 and len(ax_dice.lines) == 2  # train + val loss, Dice, per run
    assert [t.get_text() for t in fig.legends[0].texts] == ["unet-tiny f050", "unet-tiny f100"]
    from_files = live.plot_runs(curves.histories).axes[1]
    for live_line, file_line in zip(ax_dice.lines, from_files.lines, strict=True):
        assert list(live_line.get_ydata()) == list(file_line.get_ydata())


def test_live_curves_redraw_at_most_every_few_seconds_and_once_more_at_the_end(monkeypatch):
    import IPython.display

    from helpers.training import live

    shown = []

    class Handle:
        def update(self, fig):
            shown.append("update")

    monkeypatch.setattr(IPython.display, "display", lambda fig, display_id: shown.append("new") or Handle())
    clock = iter([0.0, 0.5, 1.0, 3.5, 4.0, 4.2, 4.3, 4.4])
    monkeypatch.setattr(live.time, "monotonic", lambda: next(clock))
    curves = live.LiveCurves(live=True)
    for epoch in range(1, 5):  # epochs end at 0.0 (drawn), 1.0, 3.5 (drawn: 3 s since the last) and 4.2 s
        curves("run", [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_dice": 0.5} for e in range(1, epoch + 1)])
    assert shown == ["new", "update"]  # not after every epoch: each redraw is an image the notebook keeps
    curves.show()  # what live.train does after the grid: the last epochs are always drawn
    assert shown == ["new", "update", "update"]


def test_command_line_options_reach_the_run_config_and_zero_is_a_value(capsys):
    args = training_cli.parser().parse_args(["--profile", "cpu", "--models", "unet,unetpp", "--fractions", "0.1", "1.0",
                                     "--seeds", "1,2", "--weight-decay", "0", "--num-workers", "0", "--lr", "3e-4",
                                     "--amp", "fp16", "--no-deep-supervision", "--split-seed", "7"])
    config = training_cli.config_from_args(args)
    assert (config.models, config.fractions, config.seeds) == (("unet", "unetpp"), (0.1, 1.0), (1, 2))
    assert (config.weight_decay, config.num_workers, config.lr, config.amp) == (0.0, 0, 3e-4, "fp16")
    assert (config.deep_supervision, config.split_seed, config.num_epochs) == (False, 7, 16)  # epochs: the profile's
    assert training_cli.main(["--models", "vnet"]) == 2  # a clear error, nothing trained
    assert "MODELS = 'vnet' is not valid" in capsys.readouterr().err


def test_space_estimate_bounds_the_real_checkpoints_and_counts_only_runs_still_to_train(tiny, results, capsys):
    config = _config(num_epochs=1, models="unet,unetpp", fractions="1.0", seeds=0)
    need = grid.space_needed(config, tiny, keep_last=True)
    assert need["runs"] == 2
    grid.run_grid(config, tiny, keep_last=True, progress=False)
    assert "Checkpoint space: up to" in capsys.readouterr().out
    sizes = {(p.parent.parent.name.split("-")[0], p.name): p.stat().st_size for p in results.glob("runs/*/checkpoints/*.pt")}
    best, last = max(sizes[m, "best.pt"] for m in ("unet", "unetpp")), max(sizes[m, "last.pt"] for m in ("unet", "unetpp"))
    assert best <= need["best"] <= best + 300_000 and last <= need["last"] <= last + 1_200_000
    assert need["bytes"] >= sum(sizes.values())  # what stays, plus what a run in flight adds
    assert grid.space_needed(config, tiny)["runs"] == 0 and grid.space_needed(config, tiny, restart=True)["runs"] == 2


def test_a_grid_that_does_not_fit_is_refused_before_any_run_starts(tiny, results, monkeypatch):
    monkeypatch.setattr(grid.paths, "free_bytes", lambda folder: 1_000_000)
    config = _config(num_epochs=1, models="unet", fractions="0.5,1.0", seeds=0)
    with pytest.raises(grid.NotEnoughSpace, match=r"needs up to 7\.6 MB for checkpoints in .*only 1\.0 MB is free"):
        grid.run_grid(config, tiny, progress=False)
    assert not list(results.glob("runs/*"))


def test_with_a_home_on_drive_the_local_copies_follow_the_run(tiny, results, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_LOCAL_DIR", str(tmp_path / "local"))  # what runtime.start sets on Colab
    spec = _spec(tiny, num_epochs=2)
    engine.fit(spec, tiny, keep_last=True, progress=False)
    drive, local = runs.run_dir(spec) / "checkpoints", tmp_path / "local" / "results" / "runs" / runs.run_id(spec) / "checkpoints"
    assert {p.name for p in drive.iterdir()} == {"best.pt", "last.pt"}  # one copy of each on Drive
    assert {p.name for p in local.iterdir()} == {"best.pt", "last.pt", "last.prev.pt"}  # the previous one stays local
    again = engine.fit(spec, tiny, restart=True, progress=False)  # RESTART: local copies go too, nothing is resumed
    assert again["status"] == "trained" and again["epochs"] == 2
    assert {p.name for p in drive.iterdir()} == {"best.pt"} and {p.name for p in local.iterdir()} == {"best.pt"}


def test_a_bad_last_pt_on_drive_resumes_from_this_runtimes_local_copy(tiny, results, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_LOCAL_DIR", str(tmp_path / "local"))
    spec = _spec(tiny)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # interrupted in epoch 3
        _hook(patch, 2 * STEPS_PER_EPOCH + 1, "raise")
        engine.fit(spec, tiny, progress=False)
    (runs.run_dir(spec) / "checkpoints" / "last.pt").write_bytes(b"half-synced")  # Drive keeps no previous copy
    with pytest.warns(RuntimeWarning, match="Skipping unreadable"):
        result = engine.fit(spec, tiny, progress=False)
    assert result["status"] == "resumed" and result["epochs"] == 3


def test_local_fallback_on_a_home_on_drive_keeps_the_local_checkpoints_and_says_so(tiny, results, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setattr(checkpoints, "time", SimpleNamespace(sleep=lambda s: None))

    def drive_full(source):
        def write(f):
            raise OSError(28, "No space left on device")
        return write

    monkeypatch.setattr(checkpoints, "_copy_into", drive_full)  # every copy to Drive fails
    spec = _spec(tiny, num_epochs=1)
    with pytest.warns(RuntimeWarning, match="only on this runtime's disk"):
        engine.fit(spec, tiny, local_fallback=True, progress=False)
    folder = runs.run_dir(spec)
    local = tmp_path / "local" / "results" / "runs" / folder.name / "checkpoints"
    assert "local only" in runs.load_done(folder)["checkpoints"]
    assert {"best.pt", "last.pt"} <= {p.name for p in local.iterdir()}  # not dropped: they are the only copies
    assert local in runs.checkpoint_dirs(folder) and isinstance(runs.load_run_model(folder), torch.nn.Module)


def test_a_checkpoint_saved_after_the_last_batch_of_an_epoch_resumes(tiny, results, tmp_path, monkeypatch):
    """Timed checkpoints can land after an epoch's last batch, before its validation: the resume skips the whole
    epoch's batches and goes on to validate it (this crashed with a negative loader length)."""
    reference = engine.fit(_spec(tiny, num_epochs=2, batch_size=3), tiny, keep_last=True, progress=False)
    reference_weights = _weights(results)["model"]
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "second"))
    real_validate = engine.validate

    def disconnect(run):
        raise KeyboardInterrupt  # the runtime dies after the last batch of epoch 1, before validating it

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(engine, "validate", disconnect)
        engine.fit(_spec(tiny, num_epochs=2, batch_size=3), tiny, checkpoint_minutes=1e-9, keep_last=True, progress=False)
    saved = _weights(tmp_path / "second")
    assert (saved["epoch"], saved["batches_done"]) == (0, 7)  # 20 images in batches of 3: the 7th is short
    assert engine.validate is real_validate
    result = engine.fit(_spec(tiny, num_epochs=2, batch_size=3), tiny, checkpoint_minutes=1e-9, keep_last=True, progress=False)
    assert result["status"] == "resumed" and result["best_val_dice"] == reference["best_val_dice"]
    _assert_same_weights(_weights(tmp_path / "second")["model"], reference_weights)


def test_config_json_records_the_kit_version_and_git_commit(tiny, results):
    import helpers

    spec = _spec(tiny, num_epochs=1)
    engine.fit(spec, tiny, progress=False)
    config = runs.load_run_config(runs.run_dir(spec))
    assert config["kit_version"] == helpers.__version__ and config["kit_version"].count(".") >= 1
    assert config["git_commit"] == helpers.git_commit()  # None outside a git checkout (an installed copy)


def test_mid_epoch_checkpoints_are_due_every_checkpoint_minutes(tiny, results):
    saver = Checkpointer(_spec(tiny), checkpoint_minutes=0.5)  # minutes, as everywhere else
    now = time.monotonic()
    saver.last_save = now - 29
    assert not saver.mid_epoch_due()
    saver.last_save = now - 31
    assert saver.mid_epoch_due()
    assert not Checkpointer(_spec(tiny)).mid_epoch_due()  # None: after every epoch only
