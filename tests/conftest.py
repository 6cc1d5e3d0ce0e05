"""Test-session setup: the smoke profile and throw-away data/results folders.

Set here, before anything runs, so the notebooks that nbval executes (in kernels that
inherit this environment) take the smoke path and never touch your own data/ or results/.
"""
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_scratch = Path(tempfile.mkdtemp(prefix="kit-tests-"))
os.environ.setdefault("KIT_PROFILE", "smoke")
os.environ.setdefault("KIT_DATA_DIR", str(_scratch / "data"))
os.environ.setdefault("KIT_RESULTS_DIR", str(_scratch / "results"))
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = ROOT.parent / "shared" / "data" / "isic2018_task1_512"


def pytest_sessionfinish(session, exitstatus):
    """Remove the scratch folder this session made (unless the caller chose the folders)."""
    import shutil

    if os.environ.get("KIT_DATA_DIR", "").startswith(str(_scratch)):
        shutil.rmtree(_scratch, ignore_errors=True)
