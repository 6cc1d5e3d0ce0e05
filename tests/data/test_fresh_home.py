"""Workers started at once on a fresh home prepare the data once: one prepares, the others wait and
use it."""
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.data import locks, sources
from helpers.data.isic import DataError
from helpers.profiles import resolve_config
from tests.builders import make_dataset

ROOT = Path(__file__).resolve().parents[2]
TRIES, WORKERS = 10, 3


def _prepare(home: str, data_dir: str, barrier, results) -> None:
    """One worker: on the go signal, get the prepared data of the folder (preparing it if nobody
    has)."""
    os.environ["KIT_DATA_DIR"] = home
    config = resolve_config("smoke", image_size=32, split_seed=0)
    barrier.wait()
    try:
        prepared = sources.ensure_prepared(config, "folder", data_dir)
        results.put(("ok", len(prepared.table)))
    except Exception as err:  # noqa: BLE001 (reported to the test, whatever it is)
        results.put(("failed", f"{type(err).__name__}: {err}"))


def test_three_workers_started_at_once_on_a_fresh_home_prepare_once_and_all_use_it(tmp_path, capfd):
    data = make_dataset(tmp_path / "dataset", 12)
    # started at the same instant, without an interpreter's start
    context = multiprocessing.get_context("fork")
    for attempt in range(TRIES):
        home = tmp_path / f"home{attempt}"
        barrier, results = context.Barrier(WORKERS), context.Queue()
        workers = [context.Process(target=_prepare, args=(str(home), str(data), barrier, results))
                   for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        assert outcomes == [("ok", 12)] * WORKERS, f"try {attempt + 1}: {outcomes}"
        assert [w.exitcode for w in workers] == [0] * WORKERS
    printed = capfd.readouterr()
    assert printed.out.count("Waiting for another process") >= 1  # the others waited for the first


def test_a_preparation_held_by_a_stuck_process_is_waited_for_then_named(tmp_path):
    out_dir = tmp_path / "prepared" / "data_seed_32px_s0"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from helpers.data import locks; "
        "from pathlib import Path\n"
        "with locks.preparing(Path(sys.argv[2])):\n    print('held', flush=True); time.sleep(60)"),
        str(ROOT), str(out_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        refused = (r"data_seed_32px_s0: another process \(.*:\d+ since .*\) has been preparing it "
                   r"for longer than 1 s.*KIT_PREP_WAIT_S")
        with pytest.raises(DataError, match=refused), locks.preparing(out_dir, wait_s=1):
            pass
        assert 1 <= time.monotonic() - started < 10
        # a killed holder's lock goes with it: the next one takes over at once
        holder.kill()
        holder.wait(10)
        with locks.preparing(out_dir, wait_s=5):
            pass
    finally:
        holder.kill()


@pytest.mark.slow
def test_three_training_commands_started_at_once_on_a_fresh_home_all_finish(tmp_path):
    """The command line itself, as a Slurm array on a fresh dataset starts it: 3 workers, 3 tries
    (each try starts three Python processes; the 10-try race is the test above, on preparation)."""
    data = make_dataset(tmp_path / "dataset", 12)
    command = [sys.executable, "-m", "helpers.training", "--profile", "smoke", "--data-source",
               "folder", "--data-dir", str(data), "--image-size", "32", "--models", "unet",
               "--fractions", "1.0", "--epochs", "1", "--new-study"]
    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        env = {**os.environ, "KIT_HOME": str(home), "KIT_DATA_DIR": str(home / "data"),
               "KIT_RESULTS_DIR": str(home / "results"), "OMP_NUM_THREADS": "1"}
        workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for _ in range(WORKERS)]
        logs = [worker.communicate(timeout=300)[0] for worker in workers]
        tails = "\n".join(log[-1500:] for log in logs)
        assert [w.returncode for w in workers] == [0] * WORKERS, f"try {attempt + 1}:\n{tails}"
