"""A grid shared by workers: three training processes on one results folder, one killed mid-run, and the result
the same as one process's grid (issue: "past one machine")."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.data import study
from helpers.training import claims

pytestmark = pytest.mark.slow  # three training processes share a grid

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["-m", "helpers.training", "--profile", "smoke", "--epochs", "2"]


def _env(results: Path, data: Path) -> dict:
    return {**os.environ, "KIT_RESULTS_DIR": str(results), "KIT_DATA_DIR": str(data), claims.STALE_ENV: "3",
            "OMP_NUM_THREADS": "1"}


def _runs(results: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(results.glob("runs/*/done.json"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The smoke study, prepared once (as notebook 01 would) before any worker starts."""
    folder = tmp_path_factory.mktemp("shared-data")
    old = os.environ.get("KIT_DATA_DIR")
    os.environ["KIT_DATA_DIR"] = str(folder)
    try:
        chosen = study.choose("smoke")
        study.prepare(chosen.config, chosen.study)
    finally:
        os.environ["KIT_DATA_DIR"] = old or ""
    return folder


def _victims_run(results: Path, pid: int) -> Path | None:
    """The run folder whose claim ``pid`` holds once its first epoch is on disk, else None."""
    for claim in results.glob(f"runs/*/{claims.CLAIM_NAME}"):
        try:
            holder = json.loads(claim.read_text())["worker"]
        except (OSError, ValueError, KeyError):
            continue
        history = claim.parent / "history.csv"
        if holder.endswith(f":{pid}") and history.is_file() and len(history.read_text().splitlines()) >= 2:
            return claim.parent
    return None


def test_three_workers_share_the_grid_and_finish_the_run_of_one_that_was_killed(data, tmp_path):
    shared = tmp_path / "shared"
    start = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, *ARGS], cwd=ROOT, env=_env(shared, data), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    victim, killed_run = workers[0], None
    deadline = time.monotonic() + 300
    while killed_run is None and time.monotonic() < deadline and victim.poll() is None:
        killed_run = _victims_run(shared, victim.pid)
        time.sleep(0.01)
    assert killed_run is not None, "worker 1 never held a run mid-training"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    logs = [w.communicate(timeout=600)[0] for w in workers[1:]]
    shared_s = time.perf_counter() - start
    assert [w.returncode for w in workers[1:]] == [0, 0], logs
    done = _runs(shared)
    assert len(done) == 12 and all(d["epochs"] == 2 for d in done.values())  # every cell, each trained once
    for history in shared.glob("runs/*/history.csv"):
        assert pd.read_csv(history)["epoch"].tolist() == [1, 2], history  # no epoch trained twice
    assert any(f"Taking over {killed_run.name}" in log for log in logs)
    assert not list(shared.glob(f"runs/*/{claims.CLAIM_NAME}*"))  # every claim released

    single = tmp_path / "single"
    start = time.perf_counter()
    alone = subprocess.run([sys.executable, *ARGS], cwd=ROOT, env=_env(single, data), capture_output=True, text=True,
                           timeout=600)
    single_s = time.perf_counter() - start
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    reference = _runs(single)
    assert set(reference) == set(done)
    for run_id, result in done.items():  # the same runs and the same results as one process
        assert result["best_val_dice"] == pytest.approx(reference[run_id]["best_val_dice"], abs=1e-5), run_id
    print(f"\nsmoke grid (12 runs, 2 epochs): 1 worker {single_s:.0f} s; 3 workers, one killed, {shared_s:.0f} s")


EXAMPLES = ROOT / "helpers" / "training" / "examples"


def test_the_slurm_array_example_splits_the_grid_into_fixed_shards(data, tmp_path):
    results = tmp_path / "sharded"
    tasks = [subprocess.run(["bash", str(EXAMPLES / "slurm_array.sh"), "--profile", "smoke", "--epochs", "1",
                             "--models", "unet"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**_env(results, data), "PYTHON": sys.executable, "SLURM_SUBMIT_DIR": str(ROOT),
                                 "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": "2"}) for k in range(2)]
    assert [t.returncode for t in tasks] == [0, 0], [t.stderr[-2000:] for t in tasks]
    trained = [{line.split()[0] for line in t.stdout.splitlines() if line.strip().startswith("unet-")} for t in tasks]
    assert len(trained[0]) == len(trained[1]) == 2 and not trained[0] & trained[1]  # 4 fractions, split 2 + 2
    assert len(_runs(results)) == 4
    bad = subprocess.run([sys.executable, *ARGS, "--shard", "2/2"], cwd=ROOT, env=_env(results, data),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--shard '2/2' is not I/N" in bad.stderr and "Traceback" not in bad.stderr


def test_the_several_gpus_example_starts_one_worker_per_gpu_on_one_grid(data, tmp_path):
    results = tmp_path / "gpus"
    done = subprocess.run(["bash", str(EXAMPLES / "several_gpus.sh"), "2", "--profile", "smoke", "--epochs", "1",
                           "--models", "unetpp"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**_env(results, data), "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs")})
    logs = [p.read_text() for p in sorted((tmp_path / "logs").glob("worker-*.log"))]
    assert done.returncode == 0 and len(logs) == 2, done.stderr + "".join(logs)[-3000:]
    assert len(_runs(results)) == 4  # the 4 UNet++ runs, each trained by one of the two workers
    for history in results.glob("runs/*/history.csv"):
        assert pd.read_csv(history)["epoch"].tolist() == [1]
