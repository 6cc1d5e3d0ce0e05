"""pytest plugin (loaded by tests/pytest.ini with ``-p tests.kit_env``): the smoke profile and
throw-away data/results folders for every test session.

It is a plugin rather than conftest code so that it also applies when only notebooks are
collected (``pytest -c tests/pytest.ini --rootdir . notebooks``): the kernels nbval starts
inherit this environment, take the smoke path and never touch your own data/ or results/.
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_scratch = Path(tempfile.mkdtemp(prefix="kit-tests-"))
os.environ.setdefault("KIT_PROFILE", "smoke")
os.environ.setdefault("KIT_DATA_DIR", str(_scratch / "data"))
os.environ.setdefault("KIT_RESULTS_DIR", str(_scratch / "results"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call to PyPI when a test imports albumentations


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects and before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Mark every notebook cell nbval runs as ``slow``: running a notebook is a notebook execution.

    Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``) each file is one group, so one worker runs
    a file's tests in order: a notebook's cells share one kernel, and a module's fixtures are built once.
    """
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group(item.path.name))


def pytest_sessionfinish(session, exitstatus):
    """Remove the scratch folder this session made."""
    shutil.rmtree(_scratch, ignore_errors=True)
