"""The kit as a package: the wheel holds helpers/ only, one source per version and requirement list, the kit knows
its version and commit, the licence and citation files agree with it, and the notebooks need no install."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import setuptools
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import helpers
from helpers.runtime import read_requirements

try:
    import tomllib
except ImportError:  # Python 3.10: tomllib is 3.11's
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
BUILD_FILES = ["pyproject.toml", "README.md", "LICENSE", "NOTICE", "requirements.txt"]


def _same(listed: list[str], wanted: list[str]) -> bool:
    """Two requirement lists name the same packages with the same version ranges (in any order or spelling)."""
    def as_set(lines):
        return {(r.name.lower(), r.specifier, tuple(sorted(r.extras)), str(r.marker)) for r in map(Requirement, lines)}
    return as_set(listed) == as_set(wanted)


def test_the_project_table_names_the_kit_and_reads_its_version_and_dependencies():
    assert PROJECT["name"] == "skin-lesion-kit" and PROJECT["requires-python"] == ">=3.10"
    assert set(PROJECT["dynamic"]) == {"version", "dependencies"}
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    assert dynamic == {"version": {"attr": "helpers.__version__"}, "dependencies": {"file": ["requirements.txt"]}}
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["helpers*"]
    assert Version(helpers.__version__).major == 0


def test_the_extras_repeat_their_requirement_files():
    extras = PROJECT["optional-dependencies"]
    assert set(extras) == {"dev", "export", "tensorboard"}
    assert _same(extras["export"], read_requirements(ROOT / "requirements-export.txt"))
    dev = [line for line in extras["dev"] if not line.startswith("skin-lesion-kit")]
    assert _same(dev, read_requirements(ROOT / "requirements-dev.txt")), \
        "pyproject.toml's dev extra and requirements-dev.txt differ: change both"
    includes = (ROOT / "requirements-dev.txt").read_text()
    assert ("skin-lesion-kit[export]" in extras["dev"]) == ("-r requirements-export.txt" in includes)
    assert _same(extras["tensorboard"], ["tensorboard>=2.14"])


def test_the_same_check_tells_different_lists_apart():
    assert _same(["torch<3,>=2.1", "numpy"], ["numpy", "torch>=2.1,<3"])
    assert not _same(["torch>=2.1"], ["torch>=2.2"]) and not _same(["torch"], ["torch", "numpy"])


def test_the_configured_include_finds_helpers_and_its_subpackages_only():
    found = setuptools.find_packages(str(ROOT), include=PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    subpackages = {f"helpers.{p.name}" for p in (ROOT / "helpers").iterdir() if (p / "__init__.py").is_file()}
    assert set(found) == {"helpers", *subpackages}  # tests/ is a package too, and is left out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built offline from a copy of the repository's build files, helpers/ and decoy packages."""
    if Version(setuptools.__version__) < Version("77"):
        pytest.skip(f"setuptools {setuptools.__version__} cannot read license = \"MIT\" (77 or newer can)")
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "helpers", source / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for decoy in ("tests", "data", "results", "notebooks"):  # what the include must keep out
        (source / decoy).mkdir()
        (source / decoy / "__init__.py").write_text("")
    out = source / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", ".", "-w", str(out)], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return zipfile.ZipFile(next(out.glob("skin_lesion_kit-*.whl")))


@pytest.mark.slow
def test_the_wheel_holds_helpers_only(wheel):
    info = f"skin_lesion_kit-{helpers.__version__}.dist-info/"
    tops = {name.split("/")[0] + "/" for name in wheel.namelist()}
    assert tops == {"helpers/", info}
    modules = {name for name in wheel.namelist() if name.endswith(".py")}
    assert modules == {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*.py")}
    assert f"{info}licenses/LICENSE" in wheel.namelist() and f"{info}licenses/NOTICE" in wheel.namelist()


@pytest.mark.slow
def test_the_wheel_metadata_has_the_kit_version_and_the_runtime_requirements(wheel):
    info = f"skin_lesion_kit-{helpers.__version__}.dist-info/"
    metadata = Parser().parsestr(wheel.read(f"{info}METADATA").decode())
    assert metadata["Name"] == "skin-lesion-kit" and metadata["Version"] == helpers.__version__
    assert metadata["Requires-Python"] == ">=3.10" and metadata["License-Expression"] == "MIT"
    runtime = [line for line in metadata.get_all("Requires-Dist") if "extra ==" not in line]
    assert _same(runtime, read_requirements(ROOT / "requirements.txt"))
    assert set(metadata.get_all("Provides-Extra")) == {"dev", "export", "tensorboard"}


SCRIPTS = {"lesion-train": "helpers.training.__main__", "lesion-pipeline": "helpers.pipeline",
           "lesion-predict": "helpers.evaluation.predict", "lesion-export": "helpers.evaluation.export",
           "lesion-external": "helpers.evaluation.external", "lesion-snapshot": "helpers.reporting.snapshot"}


def test_the_commands_users_type_are_console_scripts_of_the_modules_python_m_runs():
    assert PROJECT["scripts"] == {name: f"{module}:main" for name, module in SCRIPTS.items()}
    for module in SCRIPTS.values():
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert 'if __name__ == "__main__":' in source, f"{module}: importing it for its console script must not run it"


@pytest.mark.slow
def test_the_wheel_installs_the_console_scripts(wheel):
    info = f"skin_lesion_kit-{helpers.__version__}.dist-info/"
    entry_points = wheel.read(f"{info}entry_points.txt").decode()
    for name, module in SCRIPTS.items():
        assert f"{name} = {module}:main" in entry_points


def test_the_changelog_has_a_section_for_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {helpers.__version__} " in changelog, f"CHANGELOG.md has no section for {helpers.__version__}"


def test_version_info_names_the_version_and_the_commit_of_this_checkout():
    info = helpers.version_info()
    assert set(info) == {"kit_version", "git_commit"} and info["kit_version"] == helpers.__version__
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        assert info["git_commit"] is None
        return
    asked = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert info["git_commit"] == (asked.stdout.strip() or None)
    json.dumps(info)  # it goes into config.json


def test_git_commit_is_none_outside_a_checkout_and_without_git(tmp_path, monkeypatch):
    assert helpers.git_commit(tmp_path) is None  # an installed copy, a zip download: no .git
    (tmp_path / ".git").mkdir()
    assert helpers.git_commit(tmp_path) is None  # git refuses a broken .git: None, not an error
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert helpers.git_commit(ROOT) is None       # git not installed


def test_git_commit_reads_a_real_repository(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed here")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", "-C", str(tmp_path), *command], check=True, env=env, capture_output=True)
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, env=env)
    commit = helpers.git_commit(tmp_path)
    assert commit and sha.stdout.startswith(commit) and len(commit) >= 7


def test_importing_the_kit_runs_nothing():
    probe = ("import subprocess\n"
             "def refuse(*a, **k): raise SystemExit(3)\n"
             "subprocess.run = subprocess.Popen = refuse\n"
             "import helpers, helpers.paths, helpers.profiles, helpers.runtime, helpers.tools\n"
             "print(helpers.__version__)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == helpers.__version__, done.stderr[-2000:]


def test_the_licence_and_the_citation_agree_with_the_kit():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and PROJECT["license"] == "MIT"
    assert licence.rstrip().endswith("OTHER DEALINGS IN THE\nSOFTWARE."), "LICENSE must be the plain MIT text"
    notice = (ROOT / "NOTICE").read_text()  # the data's licence, named apart from the code's
    for what in ("CC BY-NC 4.0", "data/isic2018_task1_128.zip", "best.pt", "figures"):
        assert what in notice, f"NOTICE does not name {what}"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software" and citation["license"] == "MIT"
    assert {"message", "title", "authors"} <= set(citation)  # what CFF 1.2.0 requires
    assert citation["version"] == helpers.__version__, "CITATION.cff's version is not helpers.__version__"
    assert citation["repository-code"] == PROJECT["urls"]["Homepage"]
    isic = [r for r in citation["references"] if "1902.03368" in json.dumps(r)]
    assert isic and isic[0]["authors"][0]["family-names"] == "Codella"


def _setup_cells() -> dict[str, str]:
    """The distinct (parameters cell + setup cell) code of the notebooks, by the first notebook that has it."""
    found = {}
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
        found.setdefault("".join(code[0]["source"]) + "\n" + "".join(code[1]["source"]), notebook.name)
    return {name: source for source, name in found.items()}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(_setup_cells()))
def test_the_setup_cell_finds_the_kit_without_installing_it(notebook, tmp_path):
    try:
        distribution("skin-lesion-kit")
        pytest.skip("the kit is installed in this environment: the check would not show anything")
    except PackageNotFoundError:
        pass
    probe = _setup_cells()[notebook] + "\nimport helpers; print('KIT', helpers.__file__)\n"
    env = {**os.environ, "KIT_HOME": str(tmp_path), "KIT_PROFILE": "smoke"}
    for moved in ("KIT_DATA_DIR", "KIT_RESULTS_DIR", "KIT_LOCAL_DIR"):
        env.pop(moved, None)
    # -I: neither the repository nor the working directory is on sys.path, as in a fresh kernel elsewhere
    done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=ROOT / "notebooks", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"KIT {ROOT / 'helpers' / '__init__.py'}" in done.stdout and (tmp_path / "results").is_dir()
