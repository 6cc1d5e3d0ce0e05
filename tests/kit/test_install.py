"""The kit installed like its peers: a wheel (``pip install .``, not editable) in a fresh virtual environment, run from
another folder without ``KIT_HOME``, predicts with the shipped UNet++ and writes only where it was told and in the
working directory it names, never into ``site-packages``; its console scripts answer ``--version``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "results" / "isic2018-task1-512_seed_cpu-kit_cpu-2-cores" / "runs" / \
    "unetpp-cpu+deep_supervision_f100_128px_seed_s42_isic2018_task1_512_d50524d0"
BUILD_FILES = ["pyproject.toml", "README.md", "LICENSE", "NOTICE", "requirements.txt"]
SCRIPTS = ["lesion-train", "lesion-pipeline", "lesion-predict", "lesion-export", "lesion-external", "lesion-snapshot"]


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv that sees this environment's packages (torch and the rest: not installed twice, through a .pth
    file) and the kit installed from a wheel built offline from this checkout."""
    base = tmp_path_factory.mktemp("install")
    source, wheels = base / "source", base / "wheels"
    source.mkdir()
    for name in BUILD_FILES:  # a copy: building in the checkout would leave build/ and *.egg-info there
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "helpers", source / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                           str(source), "-w", str(wheels)], capture_output=True, text=True, timeout=600, cwd=base)
    if done.returncode != 0:
        pytest.skip(f"the wheel does not build here (setuptools, offline): {done.stderr[-500:]}")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "kit-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("skin_lesion_kit-*.whl"))
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600, cwd=base)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"python": python, "bin": python.parent, "site": site, "base": base}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_") and k != "PYTHONPATH"}
    return env  # no KIT_HOME, no KIT_RESULTS_DIR: the defaults are what is tested


@pytest.mark.slow
def test_the_installed_kit_is_the_wheel_not_this_checkout(installed):
    work = installed["base"] / "elsewhere"
    work.mkdir()
    done = subprocess.run([str(installed["python"]), "-c", "import helpers, helpers.paths as p; print(helpers.__file__);"
                           " print(p.installed()); print(p.home_dir())"], capture_output=True, text=True, cwd=work, env=_env())
    where, flag, home = done.stdout.split("\n")[:3]
    assert Path(where).is_relative_to(installed["site"]) and flag == "True" and Path(home) == work.resolve()


@pytest.mark.slow
def test_every_console_script_answers_version(installed):
    for script in SCRIPTS:
        done = subprocess.run([str(installed["bin"] / script), "--version"], capture_output=True, text=True, timeout=300,
                              cwd=installed["base"], env=_env())
        assert done.returncode == 0 and done.stdout.strip() == f"skin-lesion-kit {helpers.__version__}", \
            (script, done.stdout, done.stderr[-2000:])


@pytest.mark.slow
def test_predict_with_the_shipped_model_from_another_folder_writes_nothing_into_site_packages(installed):
    work = installed["base"] / "my-project"
    photos = work / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        image = np.full((96, 120, 3), (200, 160, 140), np.uint8)
        image[30:70, 40:90] = (90, 50, 40)
        Image.fromarray(np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)).save(
            photos / f"lesion{k}.jpg")
    site_before, repo_results = _files(installed["site"]), _files(ROOT / "results")
    done = subprocess.run([str(installed["bin"] / "lesion-predict"), str(SHIPPED), "photos", "--out", "masks",
                           "--device", "cpu"], capture_output=True, text=True, timeout=600, cwd=work, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines()[0].startswith(f"kit home: {work.resolve()}")  # said where it writes, at start
    written = _files(work / "masks")
    assert {"lesion0_segmentation.png", "lesion1_segmentation.png", "predictions.csv"} <= written
    assert _files(installed["site"]) == site_before, "the installed kit wrote into site-packages"
    assert _files(ROOT / "results") == repo_results, "the installed kit wrote into the checkout it came from"
    elsewhere = sorted(f for f in _files(work) if not f.startswith(("photos/", "masks/", "data/", "results/")))
    assert not elsewhere, f"written outside the output folder and the kit's home: {elsewhere}"
