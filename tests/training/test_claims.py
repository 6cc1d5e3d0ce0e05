"""The shared grid's claims: one worker per run, a heartbeat, stale claims taken over, fixed shards."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.profiles import resolve_config
from helpers.training import claims, grid

ROOT = Path(__file__).resolve().parents[2]


def test_one_worker_claims_a_run_and_a_second_is_refused_until_it_is_released(tmp_path):
    first = claims.claim_run(tmp_path / "run")
    assert first is not None and claims.holder(tmp_path / "run")["worker"] == claims.worker_name()
    assert claims.claim_run(tmp_path / "run") is None       # a live claim: nobody else trains this run
    first.release()
    assert not (tmp_path / "run" / claims.CLAIM_NAME).exists()
    with claims.claim_run(tmp_path / "run") as again:         # released: the next worker gets it
        assert again is not None
    assert claims.holder(tmp_path / "run") is None


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.STALE_ENV, "0.5")
    held = claims.claim_run(tmp_path / "run", heartbeat_s=0.05)
    time.sleep(0.8)
    assert claims.claim_run(tmp_path / "run") is None and claims.holder(tmp_path / "run")["age_s"] < 0.5
    held.release()


def test_a_stale_claim_of_a_dead_worker_is_taken_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(claims.STALE_ENV, "1")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / claims.CLAIM_NAME).write_text('{"worker": "gone:123", "claimed_at": 0}')
    os.utime(folder / claims.CLAIM_NAME, (time.time() - 5, time.time() - 5))  # no heartbeat for 5 s
    taken = claims.claim_run(folder)
    assert taken is not None and "Taking over run: its worker gone:123 stopped (no heartbeat for 5 s)" in capsys.readouterr().out
    assert claims.holder(folder)["worker"] == claims.worker_name() and len(list(folder.iterdir())) == 1
    taken.release()


@pytest.mark.parametrize(("text", "expected"), [("0/3", (0, 3)), ("2/3", (2, 3)), ("", None), (None, None)])
def test_shards_split_the_grid_into_fixed_disjoint_parts(text, expected):
    assert claims.parse_shard(text) == expected
    if expected:
        cells = [k for k in range(12) if claims.in_shard(k, expected)]
        assert cells == list(range(expected[0], 12, expected[1]))


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2"])
def test_a_bad_shard_is_a_clear_error(text):
    with pytest.raises(ValueError, match="is not I/N with 0 ≤ I < N, e.g. 0/4"):
        claims.parse_shard(text)


def test_a_claim_of_a_process_of_this_machine_that_ended_is_stale_at_once(tmp_path):
    import socket
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / claims.CLAIM_NAME).write_text(f'{{"worker": "{socket.gethostname()}:{ended.stdout.strip()}"}}')
    with claims.claim_run(folder) as taken:  # fresh heartbeat, but its process is gone
        assert taken is not None


def test_importing_the_notebooks_training_leaves_the_claims_module_unimported():
    code = "import sys, helpers.training.live; print('helpers.training.claims' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_notebooks_grid_writes_no_claim_file(tiny, results):
    config = resolve_config("smoke", image_size=32, batch_size=4, num_epochs=1, split_seed=0,
                            models="unet", fractions="1.0", seeds=0)
    seen = []  # claim files present while the run trains (after each of its epochs)
    table = grid.run_grid(config, tiny, progress=False,
                          callbacks=[lambda run_id, history: seen.extend(results.rglob("claim.json*"))])
    assert list(table["status"]) == ["trained"] and seen == []
