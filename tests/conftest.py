"""Shared test settings and fixtures.

The environment (smoke profile, temporary data/results folders) is set by the plugin
``tests/kit_env.py``, which tests/pytest.ini loads for every session. The builders behind these
fixtures are in ``tests/builders.py``.
"""
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.builders import Brightness, make_run, make_tiny_prepared, shifted_prepared  # noqa: E402
from tests.httpserver import Handler  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data" / "isic2018_task1_512"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models train fastest, and steadiest on a shared CPU, with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_recorded_study():
    """Every test starts in a home where notebook 01 has not recorded a study (tests that need one record it)."""
    from helpers.data import study

    study.record_path().unlink(missing_ok=True)
    yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny prepared cache: 20 training and 4 validation images of 32 px, split seed 0."""
    return make_tiny_prepared(tmp_path_factory.mktemp("prepared") / "tiny_seed_32px_s0")


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """A prepared seed-protocol dataset of shifted-rectangle images (6 test images)."""
    return shifted_prepared(tmp_path_factory.mktemp("shifted"))


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A fresh results folder for this test (``$KIT_RESULTS_DIR``)."""
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture
def server():
    """A ThreadingHTTPServer on 127.0.0.1, port 0, with switches set per test (see tests/httpserver.py)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.script = {}, [], []
    srv.default, srv.drop_after, srv.no_length = "ok", 0, False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def scored_home(tmp_path, monkeypatch):
    """A kit home with one evaluated run (the Brightness 'model', which marks bright pixels) and its data."""
    from helpers.evaluation import scoring

    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    own = shifted_prepared(tmp_path / "data")
    make_run(tmp_path / "results", "unet_f100", "unet", 1.0, own.root)
    scoring.evaluate_runs(tmp_path / "results", progress=False, load_model=lambda _: Brightness())
    return tmp_path / "results"
