"""Tests for helpers/archives.py on zips built inside each test."""
from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image

from helpers.data.archives import ArchiveError, UnsafeArchiveError, safe_extract

IMAGES = "ISIC2018_Task1-2_Training_Input"
MASKS = "ISIC2018_Task1_Training_GroundTruth"


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 6), 255).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs.txt", "C:\\evil.txt", "C:/evil.txt",
                                  f"{IMAGES}/../../evil.txt", "..\\evil.txt"])
def test_zip_slip_entries_are_refused_before_writing(tmp_path, evil):
    zip_path = _zip(tmp_path / "bad.zip", {f"{IMAGES}/ISIC_0000000.jpg": _jpeg(0), evil: b"x"})
    dest = tmp_path / "out" / "data"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(zip_path, dest, progress=False)
    assert str(zip_path) in str(info.value) and repr(evil) in str(info.value)
    assert not dest.exists()
    assert _files(tmp_path) == ["bad.zip"]


def test_backslash_paths_extract_into_nested_folders(tmp_path):
    image = _jpeg(1)
    zip_path = _zip(tmp_path / "win.zip", {f"{IMAGES}\\ISIC_0000000.jpg": image,
                                           f"{MASKS}\\ISIC_0000000_segmentation.png": _png()})
    written = safe_extract(zip_path, tmp_path / "out", progress=False)
    assert _files(tmp_path / "out") == [f"{IMAGES}/ISIC_0000000.jpg",
                                        f"{MASKS}/ISIC_0000000_segmentation.png"]
    assert (tmp_path / "out" / IMAGES / "ISIC_0000000.jpg").read_bytes() == image
    assert len(written) == 2


def test_junk_entries_are_ignored(tmp_path):
    zip_path = _zip(tmp_path / "mac.zip", {
        f"{IMAGES}/ISIC_0000000.jpg": _jpeg(2),
        f"__MACOSX/{IMAGES}/._ISIC_0000000.jpg": b"resource fork",
        f"{IMAGES}/.DS_Store": b"ds", f"{IMAGES}/Thumbs.db": b"thumbs",
        f"{IMAGES}/ATTRIBUTION.txt": b"cite", f"{IMAGES}/LICENSE.txt": b"cc-by-nc",
        f"{IMAGES}/": b""})
    safe_extract(zip_path, tmp_path / "out", progress=False)
    assert _files(tmp_path / "out") == [f"{IMAGES}/ISIC_0000000.jpg"]


@pytest.mark.parametrize("top", ["data", "MyZip", "MyZip/inner"])
def test_nested_top_folder_is_kept(tmp_path, top):
    zip_path = _zip(tmp_path / "nested.zip", {f"{top}/{IMAGES}/ISIC_0000001.jpg": _jpeg(3)})
    safe_extract(zip_path, tmp_path / "out", progress=False)
    assert _files(tmp_path / "out") == [f"{top}/{IMAGES}/ISIC_0000001.jpg"]


def test_second_call_writes_nothing_and_fixes_wrong_sizes(tmp_path):
    entries = {f"{IMAGES}/ISIC_{i:07d}.jpg": _jpeg(i) for i in range(4)}
    zip_path = _zip(tmp_path / "set.zip", entries)
    out = tmp_path / "out"
    assert len(safe_extract(zip_path, out, progress=False)) == 4
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    assert safe_extract(zip_path, out, progress=False) == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == stamps
    broken = out / IMAGES / "ISIC_0000002.jpg"
    broken.write_bytes(b"half")
    (out / IMAGES / "ISIC_0000003.jpg").unlink()
    assert sorted(p.name for p in safe_extract(zip_path, out, progress=False)) == [
        "ISIC_0000002.jpg", "ISIC_0000003.jpg"]
    assert broken.read_bytes() == entries[f"{IMAGES}/ISIC_0000002.jpg"]


def test_truncated_zip_gives_clear_error(tmp_path):
    full = _zip(tmp_path / "full.zip", {f"{IMAGES}/ISIC_{i:07d}.jpg": _jpeg(i) for i in range(3)})
    cut = tmp_path / "ISIC2018_Task1-2_Training_Input.zip"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="incomplete or corrupt") as info:
        safe_extract(cut, tmp_path / "out", progress=False)
    assert str(cut) in str(info.value) and "download it again" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_crc_error_leaves_no_file_in_place(tmp_path):
    payload = b"lesion-bytes-" * 100
    zip_path = _zip(tmp_path / "crc.zip", {f"{MASKS}/ISIC_0000000_segmentation.png": payload},
                    compression=zipfile.ZIP_STORED)
    raw = bytearray(zip_path.read_bytes())
    at = raw.index(payload) + 50
    raw[at] ^= 0xFF  # flip one stored byte: the CRC check fails on reading
    zip_path.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="incomplete or corrupt") as info:
        safe_extract(zip_path, tmp_path / "out", progress=False)
    assert str(zip_path) in str(info.value)
    assert _files(tmp_path / "out") == []


def test_missing_zip_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.zip"):
        safe_extract(tmp_path / "nothere.zip", tmp_path / "out", progress=False)
