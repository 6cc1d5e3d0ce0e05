"""``google.colab.drive`` emulated: ``mount`` makes a shared folder of the test machine appear as Google Drive.

The real ``mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False)`` (googlecolab/colabtools,
google/colab/drive.py) asks for access, starts a FUSE file system and prints ``Mounted at <mountpoint>``.
This one keeps its signature and the checks it makes of the mount point (no space in it, not a symlink, empty,
a folder or nothing, in a folder that exists; already mounted: a message, nothing else), then links
``<mountpoint>/MyDrive`` (and ``My Drive``) to ``$FAKE_COLAB_DRIVE``: every emulated runtime that mounts sees
the same files, as every Colab runtime of one user sees the same Drive.
"""
import os

__all__ = ["flush_and_unmount", "mount"]


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    """Mount the test's fake Drive at ``mountpoint`` (see the module docstring)."""
    if " " in mountpoint:
        raise ValueError("Mountpoint must not contain a space.")
    mountpoint = os.path.expanduser(mountpoint)
    if not force_remount and os.path.isdir(os.path.join(mountpoint, "My Drive")):
        print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, call "
              f'drive.mount("{mountpoint}", force_remount=True).')
        return
    if os.path.islink(mountpoint):
        raise ValueError("Mountpoint must not be a symlink")
    if os.path.isdir(mountpoint) and os.listdir(mountpoint) and not force_remount:
        raise ValueError("Mountpoint must not already contain files")
    if not os.path.isdir(mountpoint) and os.path.exists(mountpoint):
        raise ValueError("Mountpoint must either be a directory or not exist")
    normed = os.path.normpath(mountpoint)
    if "/" in normed and not os.path.exists(os.path.dirname(normed)):
        raise ValueError("Mountpoint must be in a directory that exists")
    os.makedirs(mountpoint, exist_ok=True)
    for name in ("MyDrive", "My Drive"):
        link = os.path.join(mountpoint, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.environ["FAKE_COLAB_DRIVE"], link, target_is_directory=True)
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    """Unmount: remove the links (the fake Drive's files stay, as on Drive)."""
    mountpoint = os.path.join(os.environ.get("KIT_CONTENT_ROOT", "/content"), "drive")
    for name in ("MyDrive", "My Drive"):
        link = os.path.join(mountpoint, name)
        if os.path.islink(link):
            os.unlink(link)
