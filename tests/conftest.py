"""Shared test settings: the repository on sys.path and where the optional real data lives.

The environment (smoke profile, temporary data/results folders) is set by the plugin
``tests/kit_env.py``, which tests/pytest.ini loads for every session.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DATA = ROOT.parent / "shared" / "data" / "isic2018_task1_512"
