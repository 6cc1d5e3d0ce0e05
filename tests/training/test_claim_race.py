"""Claims under races and odd files: exactly one worker takes over a stale claim, an unreadable or
future-dated claim goes stale, a worker whose claim was taken over stops before its next save."""
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from helpers.training import claims

RACES = 100
WORKERS = 3


def _write_stale_claim(folder: Path) -> None:
    path = folder / claims.CLAIM_NAME
    path.write_text(json.dumps({"worker": "gone-host:1", "claimed_at": 0, "token": "old"}))
    os.utime(path, (time.time() - 100, time.time() - 100))  # no heartbeat for 100 s


def _racer(folder: str, barrier, results) -> None:
    """One worker: at each race, try to claim the stale run; report; the winner releases once all
    reported."""
    os.environ[claims.STALE_ENV] = "5"
    for _ in range(RACES):
        barrier.wait()                     # the stale claim is in place: go
        held = claims.claim_run(folder, heartbeat_s=60)
        results.put(held is not None)
        barrier.wait()                     # everyone has tried
        if held is not None:
            held.release()
        barrier.wait()                     # the claim is gone: the parent writes the next stale one


def test_three_workers_racing_on_one_stale_claim_give_exactly_one_winner_every_time(tmp_path,
                                                                                    capfd):
    folder = tmp_path / "runs" / "run"
    folder.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads forked
    barrier, results = context.Barrier(WORKERS + 1), context.Queue()
    workers = [context.Process(target=_racer, args=(str(folder), barrier, results), daemon=True)
               for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    winners = []
    try:
        for _ in range(RACES):
            _write_stale_claim(folder)
            barrier.wait(timeout=60)
            barrier.wait(timeout=60)
            winners.append(sum(results.get(timeout=10) for _ in range(WORKERS)))
            barrier.wait(timeout=60)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    capfd.readouterr()
    odd = [w for w in winners if w != 1]
    assert winners.count(1) == RACES, f"races without exactly one winner: {odd}"
    assert not (folder / claims.CLAIM_NAME).exists() and not list(folder.glob("*stale*"))


@pytest.mark.parametrize("content", ['{"worker": "other:1", "claim', ""])
def test_an_unreadable_claim_goes_stale_after_stale_after_from_when_it_was_first_seen(tmp_path,
                                                                                     monkeypatch,
                                                                                     content):
    monkeypatch.setenv(claims.STALE_ENV, "0.4")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / claims.CLAIM_NAME).write_text(content)
    # first seen now: a live worker may be behind it
    assert claims.claim_run(folder) is None
    assert claims.holder(folder)["worker"] == "?"
    time.sleep(0.5)
    # unchanged for longer than stale_after: stale
    with claims.claim_run(folder) as taken:
        assert taken is not None and claims.holder(folder)["worker"] == claims.worker_name()


def test_a_claim_dated_in_the_future_goes_stale_after_stale_after_from_when_first_seen(tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setenv(claims.STALE_ENV, "0.4")
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / claims.CLAIM_NAME
    path.write_text('{"worker": "skewed-host:7", "claimed_at": 0}')
    os.utime(path, (time.time() + 3600, time.time() + 3600))  # its host's clock is an hour ahead
    assert claims.claim_run(folder) is None
    time.sleep(0.5)
    with claims.claim_run(folder) as taken:
        assert taken is not None


def test_a_future_dated_claim_whose_worker_still_beats_stays_held(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.STALE_ENV, "0.4")
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / claims.CLAIM_NAME
    path.write_text('{"worker": "skewed-host:7", "claimed_at": 0}')
    for beat in range(4):  # the other host's heartbeat: a new time (an hour ahead) every 0.2 s
        os.utime(path, (time.time() + 3600 + beat, time.time() + 3600 + beat))
        assert claims.claim_run(folder) is None
        time.sleep(0.2)


def test_a_worker_whose_claim_was_taken_over_stops_before_its_next_save(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.STALE_ENV, "0.3")
    folder = tmp_path / "run"
    mine = claims.claim_run(folder, heartbeat_s=0.05)
    claims.check_held(folder)                          # still mine: nothing happens
    assert claims.lost_message(folder) is None
    # taken over
    (folder / claims.CLAIM_NAME).write_text('{"worker": "other:2", "token": "theirs"}')
    time.sleep(0.2)
    # its heartbeat noticed, and stopped touching the file
    assert mine.lost
    assert "another worker took this run over" in claims.lost_message(folder)
    with pytest.raises(claims.ClaimLost, match="stops training it"):
        claims.check_held(folder)
    mine.release()                                     # never removes the other worker's claim
    assert json.loads((folder / claims.CLAIM_NAME).read_text())["token"] == "theirs"
    claims.check_held(folder)                          # released: no longer this process's business


def test_a_released_claim_leaves_no_file_in_the_run_folder(tmp_path):
    folder = tmp_path / "runs" / "run"
    with claims.claim_run(folder) as held:
        assert held is not None
    assert list(folder.iterdir()) == []
