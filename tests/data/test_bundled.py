"""The bundled real data: the archive itself, the source that reads it, its refusals and its subset."""
from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from helpers import profiles, runtime
from helpers.data import bundled, sources, study
from helpers.data.isic import DataError
from helpers.profiles import resolve_config

SMALL = resolve_config("demo", data_subset=24, image_size=32)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data home: no study recorded, nothing prepared."""
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_the_archive_holds_every_training_pair_at_128_px():
    path = bundled.check_archive()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        images = [n for n in names if n.startswith("ISIC2018_Task1-2_Training_Input/") and n.endswith(".jpg")]
        masks = [n for n in names if n.endswith("_segmentation.png")]
        with archive.open(images[0]) as image, archive.open(masks[0]) as mask:
            assert Image.open(image).size == (128, 128) and Image.open(mask).mode == "L"
    assert len(images) == len(masks) == bundled.PAIRS == 2594
    assert path.stat().st_size < 14e6
    licence = path.with_name("isic2018_task1_128.LICENSE.md").read_text()
    for needed in ("CC BY-NC 4.0", "arXiv:1902.03368", "HAM10000", "non-commercial", "Centre-cropped", "Resized"):
        assert needed.lower() in licence.lower()


@pytest.mark.parametrize("profile, source", [("demo", "bundled"), ("cpu", "bundled"), ("class", "bundled"),
                                             ("t4", "isic2018"), ("smoke", "synthetic")])
def test_each_profile_takes_its_data_when_none_is_given(home, profile, source):
    assert profiles.default_data_source(profile) == source
    _, chosen, _ = study.choose(profile, {})
    assert chosen.data_source == source


def test_an_image_size_above_the_archive_s_is_refused_with_what_to_use(home):
    with pytest.raises(DataError, match=r"128-px images.*256 px.*upsampled.*isic2018"):
        study.choose("t4", {}, data_source="bundled")
    with pytest.raises(DataError, match="upsampled"):
        sources.ensure_prepared(resolve_config("cpu", image_size=160), "bundled")
    assert not study.record_path().exists()


@pytest.fixture
def archive_copy(tmp_path, monkeypatch):
    """A copy of the archive that a test may damage or change."""
    copy = tmp_path / "kit" / bundled.ARCHIVE
    copy.parent.mkdir()
    shutil.copy(bundled.archive_path(), copy)
    monkeypatch.setattr(bundled, "archive_path", lambda: copy)
    return copy


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_a_damaged_or_missing_archive_is_named_with_how_to_restore_it(home, archive_copy, damage):
    data = archive_copy.read_bytes()
    if damage == "missing":
        archive_copy.unlink()
    elif damage == "truncated":
        archive_copy.write_bytes(data[: len(data) // 2])
    else:  # one byte of a member's data changed: its checksum fails
        with zipfile.ZipFile(archive_copy) as archive:
            first = archive.infolist()[0]
        at = first.header_offset + 30 + len(first.filename) + 20
        archive_copy.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    with pytest.raises(DataError) as err:
        sources.ensure_prepared(SMALL, "bundled")
    message = str(err.value)
    assert str(archive_copy) in message and "git checkout -- data/isic2018_task1_128.zip" in message
    assert "\n" not in message


@pytest.mark.slow
def test_the_demo_subset_is_a_seeded_draw_across_the_archive(home):
    prepared = sources.ensure_prepared(SMALL)
    ids = prepared.table["isic_id"].tolist()
    assert len(ids) == 24 and prepared.images.shape == (24, 32, 32, 3)
    assert prepared.root.name == "isic2018-task1-128-n24_seed_32px_s42"
    with zipfile.ZipFile(bundled.archive_path()) as archive:
        every = sorted(n.split("/")[-1][:-4] for n in archive.namelist() if n.endswith(".jpg"))
    assert ids != every[:24] and ids == sorted(ids) and set(ids) <= set(every)
    assert max(every.index(i) for i in ids) > 1500  # from across the archive, not its first files
    again = sources.ensure_prepared(resolve_config("demo", data_subset=24, image_size=32, split_seed=7))
    assert again.table["isic_id"].tolist() != ids  # another split seed draws another subset


@pytest.mark.slow
def test_a_fresh_clone_is_not_prepared_again_but_a_changed_archive_is(home, archive_copy, capsys):
    first = sources.ensure_prepared(SMALL, "bundled")
    stamp = first.manifest["prepared_id"]
    archive_copy.touch()  # a fresh clone: new modification time, same bytes
    assert sources.ensure_prepared(SMALL, "bundled").manifest["prepared_id"] == stamp
    with zipfile.ZipFile(archive_copy) as archive:  # a changed archive: one pair fewer
        kept = [(i, archive.read(i)) for i in archive.infolist()[2:]]
    with zipfile.ZipFile(archive_copy, "w") as archive:
        for info, data in kept:
            archive.writestr(info, data)
    capsys.readouterr()
    changed = sources.ensure_prepared(SMALL, "bundled")
    assert changed.manifest["prepared_id"] != stamp and "changed since it was prepared" in capsys.readouterr().out
    assert np.asarray(changed.images).shape[1:] == (32, 32, 3)


def test_a_cpu_study_recorded_by_01_trains_on_a_colab_cpu_runtime(home, monkeypatch):
    monkeypatch.delenv("KIT_PROFILE", raising=False)
    study.choose("cpu", {})
    runtime.check_gpu("", colab=True, needs_gpu=True, cuda=False)  # no NoGPU: the study is made for a CPU
    study.choose("class", {})
    with pytest.raises(runtime.NoGPU, match=r"'class'.*T4 GPU.*notebook 01 with PROFILE = \"cpu\""):
        runtime.check_gpu("", colab=True, needs_gpu=True, cuda=False)
