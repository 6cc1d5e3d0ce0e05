"""Preparation: resize + cache, splits, nested fractions, bad files, reuse, both protocols."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers.data import prep
from helpers.data.isic import DataError
from helpers.data.prep import fraction_size, load_prepared, prepare, seed_split
from tests.builders import make_dataset, write_pair


@pytest.fixture
def source(tmp_path):
    return make_dataset(tmp_path / "src", 40)


def test_arrays_have_the_promised_shapes_values_and_order(source, tmp_path):
    data = prepare(source, tmp_path / "out", 16, progress=False)
    assert data.images.shape == (40, 16, 16, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (40, 16, 16) and set(np.unique(data.masks)) == {0, 1}
    assert list(data.table["isic_id"]) == [f"ISIC_{k:07d}" for k in range(40)]
    assert (data.table[["orig_height", "orig_width"]].to_numpy() == (30, 40)).all()
    assert data.table["lesion_fraction"].iloc[0] == pytest.approx(0.25, abs=0.01)   # centred half-by-half box


def test_images_are_area_averaged_and_masks_nearest(tmp_path):
    write_pair(tmp_path / "src", "train", "ISIC_0000001", size=(64, 64))
    image_path = tmp_path / "src" / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000001.jpg"
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([checker] * 3, axis=-1)).save(image_path, format="PNG")   # lossless content
    data = prepare(tmp_path / "src", tmp_path / "out", 8, progress=False)
    assert np.abs(data.images[0].astype(int) - 127).max() <= 2      # area: a checkerboard averages to grey
    assert set(np.unique(data.masks[0])) == {0, 1}                   # nearest: still binary


def test_seed_split_is_70_15_15_of_2594_and_deterministic():
    ids = [f"ISIC_{k:07d}" for k in range(2594)]
    split = seed_split(ids, seed=42)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 1816, "val": 389, "test": 389}
    assert seed_split(ids, 42) == split and seed_split(ids, 43) != split
    assert seed_split(list(reversed(ids)), 42) == split               # order of discovery does not matter


def test_fractions_are_nested_and_sized(source, tmp_path):
    data = prepare(source, tmp_path / "out", 16, progress=False)
    train = set(data.indices("train"))
    assert len(train) == 28
    subsets = [set(data.indices("train", f)) for f in (0.1, 0.25, 0.5, 1.0)]
    assert [len(s) for s in subsets] == [fraction_size(28, f) for f in (0.1, 0.25, 0.5, 1.0)] == [3, 7, 14, 28]
    assert subsets[0] < subsets[1] < subsets[2] < subsets[3] == train
    assert [int(data.table[c].sum()) for c in ("in_10", "in_25", "in_50", "in_100")] == [3, 7, 14, 28]
    assert set(np.flatnonzero(data.table["in_25"].to_numpy())) == subsets[1]
    with pytest.raises(ValueError):
        fraction_size(28, 0)


def test_bad_files_raise_listing_each_and_write_nothing(source, tmp_path):
    images = source / "ISIC2018_Task1-2_Training_Input"
    masks = source / "ISIC2018_Task1_Training_GroundTruth"
    (images / "ISIC_0000003.jpg").write_bytes(b"\xff\xd8 broken")
    Image.new("L", (10, 10)).save(masks / "ISIC_0000004_segmentation.png")
    (masks / "ISIC_0000005_segmentation.png").unlink()
    with pytest.raises(DataError) as err:
        prepare(source, tmp_path / "out", 16, progress=False)
    text = str(err.value)
    assert "3 problem(s)" in text and "on_bad_file='skip'" in text
    assert "ISIC_0000003.jpg: corrupt" in text and "ISIC_0000004_segmentation.png: mask is 10x10" in text
    assert "ISIC_0000005.jpg: image has no mask" in text
    assert not (tmp_path / "out").exists()


def test_skip_leaves_bad_pairs_out_and_lists_them(source, tmp_path, capsys):
    (source / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000003.jpg").write_bytes(b"broken")
    data = prepare(source, tmp_path / "out", 16, on_bad_file="skip", progress=False)
    assert len(data.table) == 39 and "ISIC_0000003" not in set(data.table["isic_id"])
    assert any("ISIC_0000003.jpg" in s for s in data.manifest["skipped"])
    assert "Skipping 1 bad file(s)" in capsys.readouterr().out


def test_finished_preparation_is_reused_without_decoding(source, tmp_path, monkeypatch):
    first = prepare(source, tmp_path / "out", 16, progress=False)
    monkeypatch.setattr(prep, "load_pair", lambda pair: pytest.fail("decoded again"))
    again = prepare(source, tmp_path / "out", 16, progress=False)
    assert np.array_equal(first.images, again.images)
    with pytest.raises(pytest.fail.Exception):
        prepare(source, tmp_path / "out", 16, seed=7, progress=False)   # other settings: redone


def test_interrupted_preparation_is_not_trusted(source, tmp_path):
    prepare(source, tmp_path / "out", 16, progress=False)
    (tmp_path / "out" / "prepared.json").unlink()                      # as if killed before the end
    with pytest.raises(DataError, match="no finished preparation"):
        load_prepared(tmp_path / "out")
    assert prepare(source, tmp_path / "out", 16, progress=False).images.shape[0] == 40
    np.save(tmp_path / "out" / "masks.npy", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(DataError, match="disagree in length"):
        load_prepared(tmp_path / "out")


@pytest.mark.slow
def test_official_protocol_keeps_official_splits_and_counts(tmp_path):
    root = tmp_path / "official"
    make_dataset(root, 2594, "train", size=(8, 6))
    make_dataset(root, 100, "val", start=20000, size=(8, 6))
    make_dataset(root, 1000, "test", start=30000, size=(8, 6))
    data = prepare(root, tmp_path / "out", 4, protocol="official", progress=False)
    assert data.table["split"].value_counts().to_dict() == {"train": 2594, "test": 1000, "val": 100}
    assert set(data.table.loc[data.table["split"] == "val", "isic_id"]) == {f"ISIC_{k:07d}" for k in range(20000, 20100)}
    assert (data.table["protocol"] == "official").all()
    assert [len(data.indices("train", f)) for f in (0.1, 0.25, 0.5, 1.0)] == [259, 648, 1297, 2594]
    assert json.loads((tmp_path / "out" / "prepared.json").read_text())["protocol"] == "official"


def test_official_protocol_without_test_folder_says_what_to_do(source, tmp_path):
    with pytest.raises(DataError, match="no val images found.*protocol='seed'"):
        prepare(source, tmp_path / "out", 16, protocol="official", progress=False)
