"""Colab as a student uses it, emulated: every notebook on its own fresh runtime, sharing only Google Drive.

A "runtime" here is a fresh process (papermill and its kernel) with a fresh, empty ``/content``
(``$KIT_CONTENT_ROOT``, the same path each time, as on Colab) whose kernel imports a fake ``google.colab``
(``tests/colab/fake``) at start, as Colab's kernel imports the real one. The notebook comes from the kit's
repository, as a badge opens it from GitHub; its setup cell clones the kit from ``KIT_REPO`` (a git
repository made from this working tree) into the runtime, mounts the fake Drive (one folder shared by the
runtimes of a test) and puts the kit's home there. Nothing else passes from one runtime to the next.

What this cannot show about real Colab is listed in tests/colab/README.md (and docs/colab.md).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # every test executes notebooks in fresh runtimes

ROOT = Path(__file__).resolve().parents[2]
COLAB = Path(__file__).resolve().parents[1] / "colab"
HOME = "skin-lesion-kit"  # the kit's default home folder under MyDrive
# 02 in the emulation: one run of three epochs, with a checkpoint every few batches, so a kill lands mid-run
TRAIN = {"FRACTIONS": "1.0", "NUM_EPOCHS": "3", "SETTINGS": '{"batch_size": 4, "checkpoint_minutes": 0.0005}'}
LESIONS = "my-lesions"  # the course's data: a folder in the official ISIC layout on Drive, chosen in 01 only
HISTORY = ["epoch", "train_loss", "val_loss", "val_dice", "lr"]


@pytest.fixture(scope="module")
def kit_repo(tmp_path_factory):
    """A git repository holding this working tree (tracked and new files, not ignored ones): what the clone gets."""
    repo = tmp_path_factory.mktemp("kit-repo")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    git = ["git", "-c", "user.name=kit", "-c", "user.email=kit@example.org"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *command], cwd=repo, check=True)
    return repo


class Colab:
    """Runtimes that share one fake Drive (``drive``), each with a fresh ``content`` folder."""

    def __init__(self, root: Path, kit_repo: Path):
        self.root, self.kit_repo = root, kit_repo
        self.drive, self.content, self.out = root / "drive", root / "content", root / "executed"
        for folder in (self.drive, self.out):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def home(self) -> Path:
        return self.drive / HOME

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KIT_", "PYTHONPATH", "IPYTHONDIR", "JUPYTER_"))}
        return {**env, "PYTHONPATH": str(COLAB / "fake"), "IPYTHONDIR": str(COLAB / "ipython"),
                "KIT_CONTENT_ROOT": str(self.content), "FAKE_COLAB_DRIVE": str(self.drive), "OMP_NUM_THREADS": "1",
                "MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1"}

    def command(self, notebook: str, tag: str, **parameters) -> tuple[list[str], Path]:
        """A fresh runtime (empty ``content``) and the papermill command that runs ``notebook`` in it."""
        shutil.rmtree(self.content, ignore_errors=True)
        self.content.mkdir(parents=True)
        out = self.out / f"{tag}-{notebook}"
        params = {"PROFILE": "smoke", "KIT_REPO": f"file://{self.kit_repo}", **parameters}
        cmd = [sys.executable, "-m", "papermill", str(self.kit_repo / "notebooks" / notebook), str(out),
               "--cwd", str(self.content), "-k", "python3", "--no-progress-bar", "--no-log-output"]
        for name, value in params.items():
            cmd += ["-p", name, str(value)]
        return cmd, out

    def run(self, notebook: str, tag: str = "run", *, prefix: tuple = (), timeout: int = 300, env: dict | None = None,
            **parameters):
        """Run a notebook on a fresh runtime; returns (return code, text of every output of the executed copy)."""
        cmd, out = self.command(notebook, tag, **parameters)
        done = subprocess.run([*prefix, *cmd], env={**self.env(), **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        return done.returncode, outputs(out) + done.stderr[-3000:]


def outputs(notebook: Path) -> str:
    """Every text output, error name and message of an executed notebook, as one string."""
    if not notebook.is_file():
        return ""
    text = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            text.append("".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", "")))
            text.append(f"{output.get('ename', '')}: {output.get('evalue', '')}")
    return "\n".join(text)


def _histories(home: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_csv(p) for p in sorted(home.glob("results/runs/*/history.csv"))}


def _lesion_folder(colab: Colab) -> dict:
    """A dataset in the official ISIC layout on the fake Drive, and the parameters that make it 01's data."""
    from helpers.data.synthetic import generate_sample

    generate_sample(colab.drive / LESIONS, count=60, seed=3, progress=False)
    return {"DATA_SOURCE": "folder", "DATA_DIR": str(colab.content / "drive" / "MyDrive" / LESIONS)}


@pytest.fixture(scope="module")
def course(kit_repo, tmp_path_factory):
    """The four notebooks, each opened from its badge on a fresh runtime, in order, sharing one Drive; the data is
    chosen in 01 only (a folder on Drive), and 02-04 follow the study 01 recorded."""
    colab = Colab(tmp_path_factory.mktemp("colab-course"), kit_repo)
    logs = {}
    for notebook, extra in (("01_data_prep.ipynb", _lesion_folder(colab)), ("02_unet.ipynb", TRAIN),
                            ("03_unetpp_transunet.ipynb", {"FRACTIONS": "1.0"}), ("04_results.ipynb", {})):
        code, logs[notebook] = colab.run(notebook, "course", **extra)
        assert code == 0, f"{notebook} failed on its runtime:\n{logs[notebook][-4000:]}"
        assert not (colab.content / HOME / "results" / "runs").exists(), f"{notebook} wrote runs to the runtime's disk"
    return colab, logs


def test_each_notebook_on_its_own_runtime_finds_what_the_others_left_on_drive(course):
    colab, logs = course
    assert "Mounted at" in logs["01_data_prep.ipynb"] and "(on Google Drive)" in logs["02_unet.ipynb"]
    assert "nothing: Colab has every runtime requirement" in logs["01_data_prep.ipynb"]
    summary = pd.read_csv(colab.home / "results" / "summary.csv")
    assert set(summary["model"]) == {"unet", "unetpp", "transunet"}  # 04 reports the runs of 02 and 03
    assert (colab.home / "results" / "report.md").is_file()
    prepared = sorted(p.parent.name for p in colab.home.glob("data/prepared/*/prepared.json"))
    # 01 prepared the study's data once, and the bundled archive at 128 px for the shipped models' evidence once;
    # 02 and 03 reused both from Drive
    assert prepared == ["isic2018-task1-128_seed_128px_s42", "my-lesions_seed_64px_s42"]
    assert "Copying the prepared data" in logs["02_unet.ipynb"]  # ... reading it from a local copy
    assert list(colab.content.glob("kit-local/data/prepared/*/images.npy"))  # 04's runtime has its copy too
    assert not list(colab.drive.rglob("raw"))  # raw files stay on the runtimes' disks


def test_the_study_is_chosen_once_in_01_and_the_other_notebooks_follow_it(course):
    colab, logs = course
    record = json.loads((colab.home / "data" / "prepared" / "study.json").read_text())
    assert (record["profile"], record["data_source"]) == ("smoke", "folder")
    assert record["data_dir"] == str(colab.content / "drive" / "MyDrive" / LESIONS)
    for notebook in ("02_unet.ipynb", "03_unetpp_transunet.ipynb", "04_results.ipynb"):
        assert "study (recorded by notebook 01): profile smoke · data folder" in logs[notebook], notebook
    run_ids = [p.name for p in colab.home.glob("results/runs/*") if p.is_dir()]
    assert len(run_ids) == 3 and all("_my-lesions_" in run_id for run_id in run_ids)  # every run on 01's folder
    assert set(pd.read_csv(colab.home / "results" / "summary.csv")["dataset"]) == {"my-lesions"}


def test_drive_keeps_one_best_checkpoint_per_finished_run_and_nothing_else_large(course):
    colab, _ = course
    run_folders = sorted(p for p in colab.home.glob("results/runs/*") if p.is_dir())
    assert len(run_folders) == 3
    for folder in run_folders:
        assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best.pt"}
        assert (folder / "done.json").is_file() and (folder / "test_metrics.csv").is_file()
    files = [p for p in colab.drive.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith((".tmp", ".prev.pt"))]
    sizes = {"checkpoints": sum(p.stat().st_size for p in files if p.suffix == ".pt"),
             "all": sum(p.stat().st_size for p in files)}
    print(f"\nfake Drive after the smoke course: {sizes['all']} bytes in {len(files)} files, "
          f"{sizes['checkpoints']} of them checkpoints")


def test_a_runtime_killed_in_02_is_followed_by_one_that_resumes_from_drive(course, kit_repo, tmp_path):
    reference = _histories(course[0].home)
    colab = Colab(tmp_path, kit_repo)
    assert colab.run("01_data_prep.ipynb", "study", **_lesion_folder(colab))[0] == 0  # the course's study
    cmd, _ = colab.command("02_unet.ipynb", "killed", **TRAIN)
    process = subprocess.Popen(cmd, env=colab.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    try:  # kill the whole runtime (papermill and its kernel) once epoch 1 is on Drive and the run is not done
        while time.monotonic() < deadline and process.poll() is None:
            histories = _histories(colab.home)
            if histories and len(next(iter(histories.values()))) >= 1:
                break
            time.sleep(0.02)
        assert process.poll() is None, "02 ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(30)
    folder = next(colab.home.glob("results/runs/*"))
    assert not (folder / "done.json").exists() and (folder / "checkpoints" / "last.pt").is_file()
    code, log = colab.run("02_unet.ipynb", "resumed", **TRAIN)
    assert code == 0, log[-4000:]
    assert f"Resuming {folder.name}" in log
    resumed = _histories(colab.home)
    assert list(resumed) == [folder.name] and folder.name in reference  # the same run as the course's 02
    pd.testing.assert_frame_equal(resumed[folder.name][HISTORY], reference[folder.name][HISTORY], rtol=1e-5)


def _can_mount_tmpfs() -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (it does here and in CI)."""
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


quota = pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user namespaces here: a size-limited fake Drive "
                                                          "needs `unshare --user --mount` (util-linux)")


def _unshare_tmpfs(size: str, drive: Path, filler: bool = False) -> tuple:
    """A command prefix that runs the runtime with ``drive`` on a tmpfs of ``size`` (a Drive with a quota), in a
    private mount namespace; with ``filler``, a background writer fills it once epoch 1 of a run is on it."""
    script = f'mount -t tmpfs -o size={size} tmpfs "{drive}" || exit 97\n'
    if filler:
        script += (f'( until ls "{drive}"/{HOME}/results/runs/*/history.csv >/dev/null 2>&1; do sleep 0.02; done; '
                   f'dd if=/dev/zero of="{drive}/filler" bs=64k 2>/dev/null ) &\n')
    return ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script + 'exec "$@"', "runtime")


@quota
def test_a_drive_too_small_for_the_grid_is_refused_before_training(kit_repo, tmp_path):
    colab = Colab(tmp_path, kit_repo)
    code, log = colab.run("02_unet.ipynb", "small", prefix=_unshare_tmpfs("3m", colab.drive), **TRAIN)
    assert code != 0 and "NotEnoughSpace" in log, log[-3000:]
    assert "free there, so no run was started" in log and "empty Drive's trash" in log


@quota
def test_a_drive_that_fills_up_while_training_stops_it_with_what_to_do(kit_repo, tmp_path):
    colab = Colab(tmp_path, kit_repo)
    code, log = colab.run("02_unet.ipynb", "full", prefix=_unshare_tmpfs("30m", colab.drive, filler=True), **TRAIN)
    assert code != 0 and "CheckpointWriteError" in log, log[-3000:]
    assert "No space left on device" in log and "LOCAL_FALLBACK = True" in log and "resumes from the last" in log


def test_a_colab_runtime_without_gpu_stops_a_training_notebook_unless_a_cpu_profile_is_chosen(kit_repo, tmp_path):
    colab = Colab(tmp_path, kit_repo)
    code, log = colab.run("02_unet.ipynb", "nogpu", PROFILE="", timeout=120, env={"CUDA_VISIBLE_DEVICES": ""})
    assert code != 0 and "NoGPU" in log and "Runtime → Change runtime type → T4 GPU" in log
    # Drive is mounted first (the study 01 recorded there decides), then it stops before installing or training
    assert "kit home" not in log and not list(colab.drive.rglob("runs"))  # no setup summary, no run


def test_a_wrong_kit_address_fails_at_once_with_gits_message(kit_repo, tmp_path):
    colab = Colab(tmp_path, kit_repo)
    started = time.monotonic()
    code, log = colab.run("01_data_prep.ipynb", "noclone", KIT_REPO=f"file://{tmp_path}/no-such-kit", timeout=120)
    assert code != 0 and "CalledProcessError" in log and "git" in log
    assert time.monotonic() - started < 60
