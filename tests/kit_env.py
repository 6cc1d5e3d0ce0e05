"""pytest plugin (loaded by tests/pytest.ini with ``-p tests.kit_env``): the smoke profile and
throw-away data/results folders for every test session.

It is a plugin rather than conftest code so that it also applies when only notebooks are
collected (``pytest -c tests/pytest.ini --rootdir . notebooks``): the kernels nbval starts
inherit this environment, take the smoke path and never touch your own data/ or results/.
"""
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

_scratch = Path(tempfile.mkdtemp(prefix="kit-tests-"))
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("KIT_TESTS_SCRATCH"):
    # a pytest-xdist worker: its own folders, not the ones it inherited from the process that started it
    for name in ("KIT_DATA_DIR", "KIT_RESULTS_DIR"):
        if os.environ.get(name, "").startswith(os.environ["KIT_TESTS_SCRATCH"]):
            del os.environ[name]
os.environ["KIT_TESTS_SCRATCH"] = str(_scratch)
os.environ.setdefault("KIT_PROFILE", "smoke")
os.environ.setdefault("KIT_DATA_DIR", str(_scratch / "data"))
os.environ.setdefault("KIT_RESULTS_DIR", str(_scratch / "results"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call to PyPI when a test imports albumentations


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects: ``-m "not slow"`` leaves the notebooks out
def pytest_collection_modifyitems(config, items):
    """Mark every notebook cell nbval runs as ``slow``: running a notebook is a notebook execution."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the longest groups first, so that no worker ends alone on one
        weight = Counter()
        for item in items:
            weight[_group(item.nodeid)] += 20 if item.get_closest_marker("slow") else 1
        items.sort(key=lambda item: -weight[_group(item.nodeid)])  # stable: a group's tests keep their order


def _group(nodeid: str) -> str:
    """What one worker runs whole: a test file, or the four notebooks together."""
    path = nodeid.split("::", 1)[0]
    return "notebooks" if path.endswith(".ipynb") else path


class _Scheduling:
    """pytest-xdist's scheduler for ``make test -n auto``: each test file goes whole to one worker (its module
    fixtures are built once); the four notebooks go together, in order, to one worker, because 02-04 follow
    the study 01 records in that worker's home."""

    @staticmethod
    def pytest_xdist_make_scheduler(config, log):
        from xdist.scheduler import LoadFileScheduling

        class FilesAndTheCourse(LoadFileScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _group(nodeid)

        config.option.loadscopereorder = False  # keep the order of the collection: longest groups first
        return FilesAndTheCourse(config, log)


def pytest_configure(config):
    """Schedule as above where pytest-xdist is loaded (it is optional: without it the tests run in one process)."""
    if hasattr(config.hook, "pytest_xdist_make_scheduler"):
        config.pluginmanager.register(_Scheduling(), "kit-scheduling")


def pytest_sessionfinish(session, exitstatus):
    """Remove the scratch folder this session made."""
    shutil.rmtree(_scratch, ignore_errors=True)
