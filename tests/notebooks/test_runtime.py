"""The runtime set-up of the notebooks: what is installed on Colab, the kit's home on Drive, the GPU check."""
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from PIL import Image

from helpers import paths, runtime
from helpers.data import prep

ROOT = Path(__file__).resolve().parents[2]
COLAB = Path(__file__).resolve().parents[1] / "colab"
DEV_TOOLS = {"ipykernel", "jupyterlab", "papermill", "nbval", "nbformat", "pytest", "isic-challenge-scoring", "ruff"}


@pytest.fixture(autouse=True)
def same_environment_after():
    """runtime.start sets KIT_HOME / KIT_LOCAL_DIR in os.environ, as it must in a notebook; undo that here."""
    saved = dict(os.environ)
    runtime._user_home = runtime._UNSET
    yield
    runtime._user_home = runtime._UNSET
    os.environ.clear()
    os.environ.update(saved)


def colab_packages() -> dict[str, str]:
    """Colab's GPU runtime: canonical name → version (tests/colab/pip-freeze.gpu.txt, the kit's one list of it)."""
    found = {}
    for line in (COLAB / "pip-freeze.gpu.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition(" @ ")[0].partition("==")
            found[runtime.requirement_name(name)] = version or "0"
    return found


def test_colab_has_every_runtime_requirement_so_the_setup_installs_nothing():
    calls = []
    assert runtime.install_missing(installed=colab_packages(), run=calls.append) == [] and calls == []


@pytest.mark.parametrize("requirement", runtime.read_requirements(), ids=runtime.requirement_name)
def test_every_runtime_requirement_admits_the_version_colab_ships(requirement):
    name = runtime.requirement_name(requirement)
    specifier = SpecifierSet(requirement[len(requirement) - len(requirement.lstrip("abcdefghijklmnopqrstuvwxyz_-.")):]
                             .split(";")[0].strip())
    version = Version(colab_packages()[name])
    assert specifier.contains(version, prereleases=True), f"{requirement} refuses Colab's {name} {version}"


def test_development_tools_are_not_runtime_requirements():
    names = {runtime.requirement_name(r) for r in runtime.read_requirements()}
    dev = {runtime.requirement_name(r) for r in runtime.read_requirements(ROOT / "requirements-dev.txt")}
    assert not names & DEV_TOOLS and dev >= DEV_TOOLS
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    assert {"torch", "ipywidgets", "albumentations"} <= names


def test_a_missing_package_is_installed_alone_and_nothing_installed_can_change():
    installed = colab_packages()
    del installed["albumentations"]
    seen = {}

    def pip(command, check):
        seen["command"], seen["pins"] = command, Path(command[command.index("-c") + 1]).read_text().splitlines()

    asked = runtime.install_missing(installed=installed, run=pip)
    assert asked == ["albumentations>=1.4.3,<3"] and seen["command"][-1] == asked[0]
    assert seen["command"][:4] == [sys.executable, "-m", "pip", "install"]
    assert {"torch==2.11.0+cu128", "ipywidgets==7.7.1", "ipykernel==6.17.1", "notebook==6.5.7"} <= set(seen["pins"])
    assert not Path(seen["command"][seen["command"].index("-c") + 1]).exists()  # the constraints file is removed


def test_requirement_names():
    assert runtime.requirement_name("isic-challenge-scoring==5.6.0") == "isic-challenge-scoring"
    assert runtime.requirement_name("Jupyter_Client>=7") == "jupyter-client"
    with pytest.raises(ValueError, match="package name"):
        runtime.requirement_name(">=1.0")


def test_home_on_drive_or_local(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    assert runtime.choose_home("", tmp_path / "MyDrive") == tmp_path / "MyDrive" / "skin-lesion-kit"
    assert runtime.choose_home("class/2026", tmp_path / "MyDrive") == tmp_path / "MyDrive" / "class" / "2026"
    assert runtime.choose_home(str(tmp_path / "x"), tmp_path / "MyDrive") == tmp_path / "x"
    assert runtime.choose_home("", None) == paths.repo_root()
    assert runtime.choose_home("elsewhere", None) == paths.repo_root() / "elsewhere"


@pytest.mark.parametrize(("profile", "colab", "needs_gpu", "cuda", "stops"), [
    ("", True, True, False, True), ("t4", True, True, False, True), ("cpu", True, True, False, False),
    ("smoke", True, True, False, False), ("", True, False, False, False), ("", True, True, True, False),
    ("", False, True, False, False)])
def test_only_a_training_notebook_on_colab_without_gpu_and_without_a_cpu_profile_stops(
        profile, colab, needs_gpu, cuda, stops, monkeypatch):
    monkeypatch.delenv("KIT_PROFILE", raising=False)
    if stops:
        with pytest.raises(runtime.NoGPU, match="Runtime → Change runtime type → T4 GPU.*PROFILE = \"cpu\""):
            runtime.check_gpu(profile, colab, needs_gpu, cuda)
    else:
        runtime.check_gpu(profile, colab, needs_gpu, cuda)


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """This process as a Colab runtime: the tests' google.colab imported, /content and Drive in tmp_path."""
    monkeypatch.syspath_prepend(str(COLAB / "fake"))
    for name in [m for m in sys.modules if m == "google" or m.startswith("google.")]:
        monkeypatch.delitem(sys.modules, name)
    import google.colab  # noqa: F401

    for name in (paths.HOME_ENV, paths.DATA_ENV, paths.RESULTS_ENV, paths.LOCAL_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(paths.CONTENT_ENV, str(tmp_path / "content"))
    monkeypatch.setenv("FAKE_COLAB_DRIVE", str(tmp_path / "drive"))
    (tmp_path / "content").mkdir()
    (tmp_path / "drive").mkdir()
    yield tmp_path
    for name in [m for m in sys.modules if m == "google" or m.startswith("google.")]:
        sys.modules.pop(name)


def test_on_colab_the_home_is_on_drive_and_the_local_disk_is_a_cache(fake_colab, capsys):
    kit = runtime.start("smoke", install=False)
    mydrive = fake_colab / "content" / "drive" / "MyDrive"
    assert "Mounted at" in capsys.readouterr().out and kit.on_drive and kit.colab
    assert kit.home == (mydrive / "skin-lesion-kit").resolve()
    assert paths.data_dir() == kit.home / "data" and paths.results_dir() == kit.home / "results"
    assert (fake_colab / "drive" / "skin-lesion-kit" / "results").is_dir()  # on the shared Drive
    assert kit.local == fake_colab / "content" / "kit-local" and paths.raw_dir("x") == kit.local / "data" / "raw" / "x"
    assert paths.mirror(paths.results_dir() / "runs" / "r") == kit.local / "results" / "runs" / "r"
    assert paths.mirror(fake_colab / "elsewhere") is None
    assert paths.downloads_dir() == kit.local / "data" / "downloads"  # 11 GB of zips stay off Drive
    assert "(on Google Drive)" in repr(kit) and "nothing: Colab has every runtime requirement" in repr(kit)
    runtime.start("smoke", install=False)  # a second setup cell run: Drive is mounted already
    assert "Mounted at" not in capsys.readouterr().out


def test_on_colab_without_drive_it_warns_that_nothing_stays(fake_colab, capsys):
    kit = runtime.start("smoke", mount_drive=False, install=False)
    assert not kit.on_drive and kit.local is None and "gone when it ends" in capsys.readouterr().out


def test_outside_colab_nothing_is_mounted_and_asking_for_drive_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    monkeypatch.delenv(paths.LOCAL_ENV, raising=False)
    kit = runtime.start("smoke", home=str(tmp_path / "home"))
    assert kit.home == tmp_path / "home" and not kit.colab and kit.local is None and kit.installed == ()
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    assert paths.data_dir() == tmp_path / "home" / "data"
    with pytest.raises(RuntimeError, match="only be mounted inside Colab"):
        runtime.start("smoke", mount_drive=True)


def test_a_preparation_on_drive_is_read_from_a_local_copy_made_once(fake_colab, capsys):
    from tests.builders import make_tiny_prepared

    runtime.start("smoke", install=False)
    home_copy = make_tiny_prepared(paths.prepared_root() / "tiny_seed_32px_s0")
    local = fake_colab / "content" / "kit-local" / "data" / "prepared" / "tiny_seed_32px_s0"
    shutil.rmtree(local)  # the next runtime's disk is empty
    capsys.readouterr()
    loaded = prep.load_prepared(home_copy.root)
    assert loaded.root == home_copy.root and loaded.read_from == local  # named by its home, read locally
    assert Path(loaded.images.filename) == local / "images.npy" and "Copying the prepared data" in capsys.readouterr().out
    prep.load_prepared(home_copy.root)
    assert "Copying" not in capsys.readouterr().out  # copied once per runtime
    manifest = home_copy.root / "prepared.json"
    manifest.write_text(manifest.read_text().replace("}", ', "note": "prepared again"}'))
    assert prep.load_prepared(home_copy.root).manifest["note"] == "prepared again"
    assert "Copying" in capsys.readouterr().out and (local / "prepared.json").read_text() == manifest.read_text()


def test_running_the_setup_again_without_drive_really_leaves_drive(fake_colab, capsys):
    runtime.start("smoke", install=False)
    kit = runtime.start("smoke", mount_drive=False, install=False)  # the user's own KIT_HOME (none): the repository
    assert kit.home == paths.repo_root() and not kit.on_drive and "not on Google Drive" in capsys.readouterr().out
    elsewhere = runtime.start("smoke", home=str(fake_colab / "scratch"), install=False)  # Drive mounted, home not on it
    assert not elsewhere.on_drive and elsewhere.local is None and paths.local_dir() is None


def test_a_dead_drive_mount_is_mounted_again(fake_colab, capsys):
    runtime.start("smoke", install=False)
    mydrive = fake_colab / "content" / "drive" / "MyDrive"
    mydrive.unlink()
    mydrive.symlink_to(mydrive)  # listing it fails as a dead FUSE mount does (not "no such file")
    capsys.readouterr()
    assert paths.mount_drive() == mydrive and "Mounted at" in capsys.readouterr().out
    assert (mydrive / "skin-lesion-kit").is_dir()


def test_a_local_copy_of_an_older_preparation_with_the_same_settings_is_replaced(fake_colab, tmp_path):
    from helpers.data.synthetic import generate_sample

    runtime.start("smoke", install=False)
    source = generate_sample(paths.raw_dir("sample"), 12, 0)
    out = paths.prepared_root() / "sample_seed_32px_s0"
    first = prep.prepare(source, out, 32, seed=0, progress=False)
    shutil.rmtree(out)  # deleted on Drive and prepared again after an image was fixed: same settings, same count
    image = next((source / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))
    Image.new("RGB", Image.open(image).size, (10, 200, 10)).save(image)
    second = prep.prepare(source, out, 32, seed=0, progress=False)
    assert second.read_from == first.read_from  # the same local copy folder
    assert np.array_equal(prep.load_prepared(out).images, np.load(out / "images.npy"))  # not the stale local copy
