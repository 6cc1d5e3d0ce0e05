"""The same fit() under torchrun: two CPU processes (gloo) match one process on the same global batch.

Tolerance: the final weights of the two-process run equal the single-process run's to within
1e-6 (absolute, per weight; measured: below 1e-7). The only difference is the order of float
additions (DDP averages two half-batch gradients instead of summing one batch). The model is the
tiny UNet with GroupNorm in place of BatchNorm: on the CPU each process normalises with its own
half-batch statistics (SyncBatchNorm needs GPUs), which is a real difference, not a bug
(on GPUs ``helpers.distributed.wrap`` converts to SyncBatchNorm).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.training.checkpoints import load_checkpoint
from tests.builders import make_tiny_prepared

pytestmark = pytest.mark.slow  # torchrun pipelines of two processes

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "train_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _run(cmd, env):
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def _final(results):
    return load_checkpoint(next(Path(results).glob("runs/*/checkpoints/last.pt")))


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    prepared = make_tiny_prepared(tmp_path / "tiny_seed_32px_s0")
    args = ["--prepared", str(prepared.root), "--epochs", "3", "--batch-size", "4", "--groupnorm"]
    _run([sys.executable, str(WORKER), "--results", str(tmp_path / "one"), *args], _env())
    out = _run([*TORCHRUN, str(WORKER), "--results", str(tmp_path / "two"), *args], _env())
    assert out.count("RESULT trained") == 2  # both ranks ran fit
    one, two = _final(tmp_path / "one"), _final(tmp_path / "two")
    assert one["epoch"] == two["epoch"] == 3
    for key, weights in one["model"].items():
        assert torch.allclose(weights, two["model"][key], rtol=0, atol=1e-6), key
    moved = max((one["model"][k] - w).abs().max() for k, w in load_checkpoint(
        next((tmp_path / "one").glob("runs/*/checkpoints/last.prev.pt")))["model"].items())
    assert moved > 1e-5  # the last epoch changed the weights by far more than the tolerance
    config = json.loads(next((tmp_path / "two").glob("runs/*/config.json")).read_text())
    assert config["hardware"].endswith("× 2 processes")


def test_command_line_under_torchrun_then_skips_when_rerun(tmp_path):
    env = _env(KIT_DATA_DIR=str(tmp_path / "data"), KIT_RESULTS_DIR=str(tmp_path / "results"))
    args = ["-m", "helpers.training", "--profile", "smoke", "--models", "unet", "--fractions", "0.25", "--epochs", "2"]
    out = _run([*TORCHRUN, *args], env)
    assert out.count("best_val_dice") == 1  # the table is printed by rank 0 only
    folder, = (tmp_path / "results" / "runs").glob("unet-tiny_f025_64px_seed_s42_synthetic-60-s0_*")
    done = json.loads((folder / "done.json").read_text())
    assert (done["epochs"], done["status"]) == (2, "finished")
    assert (folder / "checkpoints" / "best.pt").is_file()
    again = _run([sys.executable, *args], env)  # one process, same run id: finished, so skipped
    assert "finished earlier with these settings (2 epochs" in again and " skipped " in again
