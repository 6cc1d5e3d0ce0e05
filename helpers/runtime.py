"""Set up the runtime a notebook runs in: the kit's home (on Google Drive on Colab), what Colab
lacks, the GPU.

Every notebook's setup cell clones the kit if needed and then makes one call, before anything
touches data::

    kit = runtime.start(PROFILE, MOUNT_DRIVE, KIT_HOME, needs_gpu=True)

On Colab each notebook opened from its badge, and every reconnect, gets a fresh machine, so
:func:`start`

1. mounts Google Drive (``MOUNT_DRIVE``: None means on Colab, off elsewhere) and makes a folder on
   it the kit's **home** (``KIT_HOME``, default ``MyDrive/skin-lesion-kit``): prepared data, run
   folders, checkpoints and results go there, where the next runtime finds them; the runtime's own
   disk holds a cache (raw files, local copies of the prepared arrays, previous checkpoints);
2. installs the runtime requirements Colab lacks, and only those: whatever is installed stays at its
   version (a constraints file pins every installed package), so Colab's torch, kernel and widgets
   are never upgraded;
3. stops a training notebook on a Colab runtime without a GPU, saying how to get one, unless the
   study's profile is one made for a CPU: the notebook's ``PROFILE``, else the one notebook 01
   recorded in the home (checked once Drive is mounted, before anything is installed).

Elsewhere it changes nothing unless asked: the home is the repository (or ``KIT_HOME``), nothing is
installed (``make`` does that) and the device is whatever there is. Nothing here runs on import.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers import paths

DEFAULT_DRIVE_HOME = "skin-lesion-kit"   # the home's folder under MyDrive
CPU_PROFILES = ("cpu", "demo", "smoke")  # profiles made for a CPU (class and t4 expect a GPU)


_UNSET = object()
_user_home = _UNSET  # $KIT_HOME as the user set it, before start() set it for the helpers


def user_home() -> str:
    """``$KIT_HOME`` as it was before the first :func:`start` of this kernel (which sets it): the
    user's own."""
    global _user_home
    if _user_home is _UNSET:
        _user_home = os.environ.get(paths.HOME_ENV, "")
    return _user_home


class NoGPU(RuntimeError):
    """A training notebook on a Colab runtime without a GPU, with no CPU profile chosen."""


@dataclass(frozen=True)
class Kit:
    """What :func:`start` set up (shown as the setup cell's output)."""

    home: Path
    local: Path | None
    on_drive: bool
    colab: bool
    installed: tuple[str, ...]
    device: str

    def __repr__(self) -> str:
        where = "on Google Drive" if self.on_drive else (
            "on this runtime's disk only: lost when it ends" if self.colab else "local")
        lines = [f"kit home   {self.home} ({where})", f"data       {paths.data_dir()}",
                 f"results    {paths.results_dir()}"]
        if self.local:
            lines.append(f"local cache {self.local} (raw files, copies of the prepared arrays, "
                         f"previous checkpoints)")
        if self.colab:
            lines.append("installed  " + (", ".join(self.installed) if self.installed else
                                          "nothing: Colab has every runtime requirement"))
        lines.append(f"device     {self.device}")
        return "\n".join(lines)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: str | os.PathLike | None = None) -> list[str]:
    """The requirement lines of a requirements file (comments, blanks and ``-r`` includes left
    out)."""
    path = Path(path) if path else paths.repo_root() / "requirements.txt"
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def requirement_name(requirement: str) -> str:
    """``'torch>=2.1,<3'`` → ``'torch'`` (canonical: lower case, ``-`` for ``_`` and ``.``)."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not found:
        raise ValueError(f"Cannot read a package name from the requirement {requirement!r}.")
    return _canonical(found[1])


def installed_packages() -> dict[str, str]:
    """Every installed distribution of this Python: canonical name → version."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_canonical(name), dist.version)
    return found


def missing_requirements(requirements: list[str], installed: dict[str, str]) -> list[str]:
    """The requirements whose package is not installed at all (an installed one is never
    upgraded)."""
    return [r for r in requirements if requirement_name(r) not in installed]


def install_missing(requirements: list[str] | None = None, installed: dict[str, str] | None = None,
                    run=subprocess.run) -> list[str]:
    """pip-install the runtime requirements that are missing, keeping every installed package as it
    is.

    Args:
        requirements: default the lines of ``requirements.txt``.
        installed: default :func:`installed_packages` (the tests pass Colab's list).
        run: runs the pip command (``subprocess.run``).

    Returns:
        The requirements it asked pip for (empty when nothing was missing: then pip is not run).

    Raises:
        subprocess.CalledProcessError: pip failed (its message says why: e.g. a missing package
            that would need a newer version of one Colab ships).
    """
    requirements = read_requirements() if requirements is None else requirements
    installed = installed_packages() if installed is None else installed
    missing = missing_requirements(requirements, installed)
    if not missing:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="kit-constraints-",
                                     delete=False) as pins:
        pins.write("".join(f"{name}=={version}\n" for name, version in sorted(installed.items())))
    try:
        print("Installing what this runtime lacks (installed packages are kept as they are):",
              ", ".join(missing))
        run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name, *missing], check=True)
    finally:
        os.unlink(pins.name)
    return missing


def choose_home(home: str | os.PathLike | None, mydrive: Path | None) -> Path:
    """The kit's home folder.

    Args:
        home: ``KIT_HOME``: empty for the default, a folder name or relative path (under MyDrive
            when Drive is mounted, else under the repository), or an absolute path.
        mydrive: the mounted ``MyDrive`` folder, or None.
    """
    home = str(home or "")
    if mydrive is not None:
        return ((Path(mydrive) / (home or DEFAULT_DRIVE_HOME)).resolve()
                if not Path(home).is_absolute() else Path(home).resolve())
    if not home:
        return Path(user_home() or paths.repo_root()).resolve()
    return (Path(home) if Path(home).is_absolute() else paths.repo_root() / home).resolve()


def recorded_profile() -> str:
    """The profile of the study notebook 01 recorded in the kit's home ("" when there is none, or
    unreadable)."""
    try:
        record = json.loads((paths.prepared_root() / "study.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(record.get("profile", "")) if isinstance(record, dict) else ""


def check_gpu(profile: str, colab: bool, needs_gpu: bool, cuda: bool) -> None:
    """Stop a training notebook on a Colab runtime without a GPU unless the study's profile is made
    for a CPU.

    Args:
        profile: the notebook's ``PROFILE``; empty: ``$KIT_PROFILE``, else the recorded study's
            profile.

    Raises:
        NoGPU: with what to do.
    """
    chosen = profile or os.environ.get("KIT_PROFILE", "") or recorded_profile()
    if colab and needs_gpu and not cuda and chosen not in CPU_PROFILES:
        which = f"The study's profile is {chosen!r}, made for a GPU, and this" if chosen else "This"
        raise NoGPU(f"{which} Colab runtime has no GPU. Choose Runtime → Change runtime type → "
                    f"T4 GPU, then run the notebook again from the top (your files on Drive stay). "
                    f"Or, to train the small CPU models here (slow), run notebook 01 with "
                    f"PROFILE = \"cpu\" (it records that study), then this notebook.")


def start(profile: str = "", mount_drive: bool | None = None, home: str | os.PathLike | None = "",
          needs_gpu: bool = False, install: bool = True) -> Kit:
    """Set up this runtime for the kit; the setup cell of every notebook calls it first.

    Args:
        profile: the notebook's ``PROFILE`` (empty: ``$KIT_PROFILE`` or by hardware).
        mount_drive: mount Google Drive and keep the kit's home there (None: on Colab only).
        home: ``KIT_HOME`` (see :func:`choose_home`).
        needs_gpu: a training notebook: on Colab without a GPU, stop unless a CPU profile was
            chosen.
        install: on Colab, install the runtime requirements it lacks.

    Returns:
        The :class:`Kit` (its repr is what the cell shows).

    Raises:
        NoGPU: see :func:`check_gpu`.
        RuntimeError: ``mount_drive`` outside Colab.
    """
    colab = paths.in_colab()
    mount_drive = colab if mount_drive is None else bool(mount_drive)
    user_home()  # remember the user's own $KIT_HOME before it is set below
    mydrive = paths.mount_drive() if mount_drive else None
    kit_home = choose_home(home, mydrive)
    os.environ[paths.HOME_ENV] = str(kit_home)
    # once the home (and so the recorded study) is known, before anything is installed
    if colab and needs_gpu:
        import torch  # Colab always has it

        check_gpu(profile, colab, needs_gpu, torch.cuda.is_available())
    on_drive = mydrive is not None and kit_home.is_relative_to(mydrive.resolve())
    local = paths.content_root() / "kit-local" if on_drive else None
    if local is not None:
        os.environ[paths.LOCAL_ENV] = str(local)
    else:
        os.environ.pop(paths.LOCAL_ENV, None)
    for folder in (paths.data_dir(), paths.results_dir(), *([local] if local else [])):
        folder.mkdir(parents=True, exist_ok=True)
    installed = tuple(install_missing()) if colab and install else ()
    import torch  # heavy: not on import of this module, and only after install_missing

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU (no GPU)"
    kit = Kit(kit_home, local, on_drive, colab, installed, device)
    if colab and not on_drive:
        print("⚠ The kit's home is not on Google Drive: everything this notebook makes stays on "
              "this runtime and is gone when it ends (and the next notebook, on its own runtime, "
              "will not see it).")
    return kit
