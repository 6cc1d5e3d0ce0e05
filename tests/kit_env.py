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

_scratch = Path(tempfile.mkdtemp(prefix="kit-tests-"))
os.environ.setdefault("KIT_PROFILE", "smoke")
os.environ.setdefault("KIT_DATA_DIR", str(_scratch / "data"))
os.environ.setdefault("KIT_RESULTS_DIR", str(_scratch / "results"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call to PyPI when a test imports albumentations


def pytest_sessionfinish(session, exitstatus):
    """Remove the scratch folder this session made."""
    shutil.rmtree(_scratch, ignore_errors=True)
