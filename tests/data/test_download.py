"""Tests for helpers/download.py against a local HTTP server on 127.0.0.1 (no internet)."""
from __future__ import annotations

import hashlib
import io
import logging
import socket
import time
import zipfile

import pytest

from helpers.data.download import (
    OFFICIAL_FILES,
    DownloadError,
    OfflineError,
    SizeMismatchError,
    download,
    fetch_official,
    official_files,
)

FAST = {"backoff": 0.001, "timeout": 5, "chunk_size": 4096, "progress": False}


def _payload(n: int = 100_000) -> bytes:
    return bytes((i * 7 + i // 256) % 256 for i in range(n))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_interrupted_download_resumes_within_one_call(server, tmp_path):
    data = _payload()
    server.files["/f.zip"] = data
    server.script, server.drop_after = ["drop", "drop"], 30_000
    dest = download(f"{server.url}/f.zip", tmp_path / "f.zip", retries=1, **FAST)
    assert _sha(dest.read_bytes()) == _sha(data)
    assert [r for _, r in server.requests] == [None, "bytes=30000-", "bytes=60000-"]
    assert not (tmp_path / "f.zip.part").exists()


def test_part_left_by_failing_call_is_resumed(server, tmp_path):
    data = _payload()
    server.files["/f.zip"] = data
    server.script, server.drop_after = ["drop", "503", "503"], 40_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(f"{server.url}/f.zip", tmp_path / "f.zip", retries=1, **FAST)
    assert (tmp_path / "f.zip.part").stat().st_size == 40_000
    assert not (tmp_path / "f.zip").exists()
    dest = download(f"{server.url}/f.zip", tmp_path / "f.zip", len(data), **FAST)
    assert server.requests[-1][1] == "bytes=40000-"
    assert _sha(dest.read_bytes()) == _sha(data)


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = _payload()
    server.files["/f.zip"] = data
    server.default = "ignore_range"
    (tmp_path / "f.zip.part").write_bytes(b"x" * 5000)  # wrong bytes: must not be kept
    dest = download(f"{server.url}/f.zip", tmp_path / "f.zip", **FAST)
    assert server.requests == [("/f.zip", "bytes=5000-")]
    assert _sha(dest.read_bytes()) == _sha(data)


def test_complete_part_gets_416_and_is_renamed(server, tmp_path):
    data = _payload(10_000)
    server.files["/f.zip"] = data
    (tmp_path / "f.zip.part").write_bytes(data)
    dest = download(f"{server.url}/f.zip", tmp_path / "f.zip", **FAST)
    assert server.requests == [("/f.zip", "bytes=10000-")]
    assert dest.read_bytes() == data


def test_server_error_5xx_is_retried(server, tmp_path):
    data = _payload(10_000)
    server.files["/f.zip"] = data
    server.script = ["503", "503"]
    dest = download(f"{server.url}/f.zip", tmp_path / "f.zip", retries=2, **FAST)
    assert len(server.requests) == 3
    assert dest.read_bytes() == data


def test_wrong_size_on_server_is_refused(server, tmp_path):
    server.files["/f.zip"] = _payload(10_000)
    with pytest.raises(SizeMismatchError) as info:
        download(f"{server.url}/f.zip", tmp_path / "f.zip", 12_345, **FAST)
    message = str(info.value)
    assert "f.zip" in message and "10,000" in message and "12,345" in message
    assert "expected_size=None" in message
    assert not (tmp_path / "f.zip").exists()


def test_too_large_download_is_deleted_not_renamed(server, tmp_path):
    server.files["/f.zip"] = _payload(10_000)
    server.no_length = True  # the size is only known once the body has arrived
    with pytest.raises(SizeMismatchError, match=r"10,000 bytes but expected 9,000.*deleted"):
        download(f"{server.url}/f.zip", tmp_path / "f.zip", 9_000, **FAST)
    assert not (tmp_path / "f.zip").exists()
    assert not (tmp_path / "f.zip.part").exists()


def test_unreachable_host_fails_fast_with_offline_message(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/f.zip"
    start = time.monotonic()
    with pytest.raises(OfflineError) as info:
        download(url, tmp_path / "f.zip", progress=False)  # default retries and backoff
    assert time.monotonic() - start < 5
    assert "offline" in str(info.value) and "DATA_SOURCE" in str(info.value)
    assert url in str(info.value)


def test_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(f"{server.url}/missing.zip", tmp_path / "m.zip", retries=5, **FAST)
    assert f"{server.url}/missing.zip" in str(info.value)
    assert len(server.requests) == 1


def test_complete_file_is_skipped_without_request(server, tmp_path, caplog):
    dest = tmp_path / "f.zip"
    dest.write_bytes(b"z" * 1234)
    with caplog.at_level(logging.INFO, logger="helpers.data.download"):
        assert download(f"{server.url}/f.zip", dest, 1234, **FAST) == dest
    assert server.requests == []
    assert "skipped" in caplog.text


def test_official_table_lists_the_six_task1_zips():
    assert len(OFFICIAL_FILES) == 6
    counts = {k: f.count for k, f in OFFICIAL_FILES.items()}
    assert counts == {"train_images": 2594, "train_masks": 2594, "val_images": 100,
                      "val_masks": 100, "test_images": 1000, "test_masks": 1000}
    train = OFFICIAL_FILES["train_images"]
    assert train.file_name == "ISIC2018_Task1-2_Training_Input.zip"
    assert train.url == ("https://isic-challenge-data.s3.amazonaws.com/2018/"
                         "ISIC2018_Task1-2_Training_Input.zip")
    assert OFFICIAL_FILES["test_masks"].folder == "ISIC2018_Task1_Test_GroundTruth"
    assert [f.key for f in official_files(("val",))] == ["val_images", "val_masks"]
    with pytest.raises(ValueError, match="valid"):
        official_files(("valid",))


def _serve_fixture_zips(server, splits) -> dict[str, bytes]:
    blobs = {}
    for entry in official_files(splits):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr(f"{entry.folder}/ISIC_0000000.jpg", entry.key.encode() * 50)
        blobs[entry.file_name] = server.files[f"/{entry.file_name}"] = buffer.getvalue()
    return blobs


def test_fetch_official_downloads_from_base_url(server, tmp_path):
    blobs = _serve_fixture_zips(server, ("val", "test"))
    paths = fetch_official(tmp_path / "zips", ("val", "test"), base_url=server.url + "/",
                           progress=False)
    assert [p.name for p in paths] == [
        "ISIC2018_Task1-2_Validation_Input.zip", "ISIC2018_Task1_Validation_GroundTruth.zip",
        "ISIC2018_Task1-2_Test_Input.zip", "ISIC2018_Task1_Test_GroundTruth.zip"]
    assert all(p.read_bytes() == blobs[p.name] for p in paths)
    assert all(p.parent == tmp_path / "zips" for p in paths)


def test_fetch_official_reuses_zips_on_drive(server, tmp_path):
    blobs = _serve_fixture_zips(server, ("val",))
    drive = tmp_path / "drive"
    first = fetch_official(tmp_path / "run1", ("val",), server.url, drive, progress=False)
    assert [p.parent for p in first] == [drive, drive] and len(server.requests) == 2
    (drive / "ISIC2018_Task1_Validation_GroundTruth.zip").write_bytes(b"PK truncated")
    second = fetch_official(tmp_path / "run2", ("val",), server.url, drive, progress=False)
    assert second == first
    assert [p for p, _ in server.requests[2:]] == ["/ISIC2018_Task1_Validation_GroundTruth.zip"]
    assert all(p.read_bytes() == blobs[p.name] for p in second)
