"""Stopping a run before its end: SIGTERM/SIGUSR1 save a resumable checkpoint and say how to resume;
a run another worker took over stops before its next save; checkpoints know their run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers.profiles import resolve_config
from helpers.training import claims, engine, grid, runs, state, stops
from helpers.training.checkpoints import load_checkpoint, save_weights_atomic
from helpers.training.losses import DiceBCELoss

ROOT = Path(__file__).resolve().parents[2]


def _spec(tiny, **changes):
    settings = {"image_size": 32, "batch_size": 4, "num_epochs": 3, "split_seed": 0, **changes}
    config = resolve_config("smoke", **settings)
    return runs.make_spec("unet", 1.0, 0, tiny, config)


class SignalAt(DiceBCELoss):
    """Dice+BCE that sends this process ``signum`` at training step ``step`` (as a scheduler
    would)."""

    def __init__(self, step, signum):
        super().__init__()
        self.step, self.signum, self.calls = step, signum, 0

    def forward(self, logits, masks):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.step:
                os.kill(os.getpid(), self.signum)
        return super().forward(logits, masks)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_a_checkpoint_mid_epoch_and_the_run_resumes_from_it(tiny, results,
                                                                           monkeypatch, signum):
    reference = engine.fit(_spec(tiny), tiny, keep_last=True, progress=False)
    reference_history = runs.read_history(reference["run_dir"])
    for folder in Path(reference["run_dir"]).parent.iterdir():  # the same run again, interrupted
        os.rename(folder, folder.with_name(folder.name + "-reference"))
    monkeypatch.setattr(state, "DiceBCELoss", lambda: SignalAt(7, signum))  # batch 2 of epoch 2
    with stops.on_signals(), pytest.raises(stops.Preempted) as stopped:
        engine.fit(_spec(tiny), tiny, keep_last=True, progress=False)
    message = str(stopped.value)
    assert message.startswith(f"⏸ Stopped by {signal.Signals(signum).name}")
    assert "\n" not in message and "at epoch 2, batch 2 of 5" in message
    assert "Run the same command again to resume (exit code 75)" in message
    last = load_checkpoint(next(results.glob("runs/*/checkpoints/last.pt")))
    assert (last["epoch"], last["batches_done"]) == (1, 2)          # a resume goes on after batch 2
    monkeypatch.setattr(state, "DiceBCELoss", DiceBCELoss)
    resumed = engine.fit(_spec(tiny), tiny, keep_last=True, progress=False)
    assert resumed["status"] == "resumed"
    history = runs.read_history(resumed["run_dir"])
    assert history["epoch"].tolist() == [1, 2, 3]
    expected = reference_history["val_dice"].tolist()
    assert history["val_dice"].tolist() == pytest.approx(expected, abs=1e-6)


def test_outside_on_signals_a_signal_keeps_its_usual_handler():
    before = signal.getsignal(signal.SIGUSR1)
    with stops.on_signals():
        assert signal.getsignal(signal.SIGUSR1) is not before
    assert signal.getsignal(signal.SIGUSR1) is before and stops.requested() is None


def test_a_run_another_worker_took_over_stops_before_its_next_save_and_the_grid_goes_on(
        tiny, results, monkeypatch, capsys):
    monkeypatch.setattr(stops, "guards", [])
    stops.add_guard(claims.lost_message)
    config = resolve_config("smoke", image_size=32, batch_size=4, num_epochs=3, split_seed=0,
                            models="unet", fractions="0.5,1.0", seeds=0)

    def steal(run_id, history):  # after epoch 1 of the first run, another worker takes it over
        if len(history) == 1 and "f050" in run_id:
            theirs = '{"worker": "other:9", "token": "theirs"}'
            (runs.run_dir(run_id) / claims.CLAIM_NAME).write_text(theirs)

    table = grid.run_grid(config, tiny, progress=False, callbacks=[steal], claim=claims.claim_run,
                          wait_s=0.1)
    assert table["status"].tolist() == ["taken over", "trained"]
    stolen = Path(table["run_dir"].iloc[0])
    # nothing saved after it was taken over
    assert runs.read_history(stolen)["epoch"].tolist() == [1]
    # theirs, kept
    assert not (stolen / "done.json").exists() and (stolen / claims.CLAIM_NAME).exists()
    assert "another worker took this run over" in capsys.readouterr().out


def test_best_pt_records_its_run_and_another_runs_checkpoint_is_named_in_one_line(tiny, results,
                                                                                  capsys):
    done = engine.fit(_spec(tiny, num_epochs=1), tiny, progress=False)
    best = Path(done["run_dir"]) / "checkpoints" / "best.pt"
    assert load_checkpoint(best)["run_id"] == done["run_id"]
    runs.load_run_model(done["run_dir"])
    assert "saved by run" not in capsys.readouterr().out
    model = runs.load_run_model(done["run_dir"])
    save_weights_atomic(model, best, metric=0.5, epoch=1, run_id="unet-tiny_f100_other-run")
    runs.load_run_model(done["run_dir"])
    out = capsys.readouterr().out
    assert f"best.pt of run {done['run_id']} was saved by run unet-tiny_f100_other-run" in out
    assert out.count("\n") == 1


@pytest.mark.slow
def test_the_slurm_example_forwards_its_signal_and_requeues_a_run_that_saved(tmp_path):
    """SIGUSR1 to the batch script (sbatch --signal=B:USR1@...): the training saves, says how to
    resume, exits 75, and the script requeues the job; the requeued job resumes and finishes."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (fake / "scontrol").chmod(0o755)
    home = tmp_path / "home"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "4242",
           "KIT_HOME": str(home), "KIT_DATA_DIR": str(home / "data"),
           "KIT_RESULTS_DIR": str(home / "results"), "SLURM_ARRAY_TASK_ID": "",
           "SLURM_ARRAY_TASK_COUNT": ""}
    script = ROOT / "helpers" / "training" / "examples" / "slurm_array.sh"
    command = ["bash", str(script), "--profile", "smoke", "--models", "unet", "--fractions", "1.0",
               "--epochs", "4", "--checkpoint-minutes", "1e-9"]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "home" / "results").glob("runs/*/checkpoints/last.pt")):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    out, err = job.communicate(timeout=120)
    assert job.returncode == stops.EXIT_CODE, err[-2000:]
    assert "⏸ Stopped by SIGUSR1" in err and "Run the same command again to resume" in err
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert not list((tmp_path / "home" / "results").glob(f"runs/*/{claims.CLAIM_NAME}"))  # released
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and "Resuming" in again.stdout, again.stderr[-2000:]
    history = pd.read_csv(next((tmp_path / "home" / "results").glob("runs/*/history.csv")))
    assert history["epoch"].tolist() == [1, 2, 3, 4]
