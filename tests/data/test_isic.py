"""Finding official folders, pairing by id, and validating every kind of bad input."""
import numpy as np
import pytest
from PIL import Image

from helpers.data.isic import (
    BadFile,
    DataError,
    Pair,
    find_split_dirs,
    format_problems,
    load_pair,
    pair_files,
)
from tests.builders import make_dataset, write_pair


def test_pairs_by_id_and_ignores_licence_files(tmp_path):
    make_dataset(tmp_path, 3)
    (tmp_path / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("licence")
    (tmp_path / "ISIC2018_Task1-2_Training_Input" / "ATTRIBUTION.txt").write_text("who")
    pairs, problems = pair_files(*find_split_dirs(tmp_path))
    assert [p.isic_id for p in pairs] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    assert problems == []
    assert pairs[1].mask_path.name == "ISIC_0000001_segmentation.png"


def test_orphans_and_odd_names_are_reported_by_name(tmp_path):
    make_dataset(tmp_path, 3)
    images, masks = find_split_dirs(tmp_path)
    (masks / "ISIC_0000001_segmentation.png").unlink()
    (images / "ISIC_0000002.jpg").unlink()
    (masks / "lesion_7.png").write_bytes(b"x")
    pairs, problems = pair_files(images, masks)
    assert [p.isic_id for p in pairs] == ["ISIC_0000000"]
    text = format_problems(problems)
    assert "ISIC_0000001.jpg: image has no mask" in text
    assert "ISIC_0000002_segmentation.png: mask has no image" in text
    assert "lesion_7.png: unrecognised mask file name" in text


def test_finds_a_nested_top_folder_and_other_splits(tmp_path):
    make_dataset(tmp_path / "download" / "unzipped", 2, split="val")
    images, masks = find_split_dirs(tmp_path, "val")
    assert images.name == "ISIC2018_Task1-2_Validation_Input" and masks.parent == images.parent
    assert find_split_dirs(tmp_path, "train") is None


def test_missing_ground_truth_folder_is_a_clear_error(tmp_path):
    make_dataset(tmp_path, 1)
    for f in (tmp_path / "ISIC2018_Task1_Training_GroundTruth").iterdir():
        f.unlink()
    (tmp_path / "ISIC2018_Task1_Training_GroundTruth").rmdir()
    with pytest.raises(DataError, match="ISIC2018_Task1_Training_GroundTruth is missing"):
        find_split_dirs(tmp_path)


def _pair(tmp_path, **kw):
    image_path, mask_path = write_pair(tmp_path, "train", "ISIC_0000005", **kw)
    return Pair("ISIC_0000005", image_path, mask_path)


def test_clean_pair_loads_as_rgb_and_binary(tmp_path):
    image, mask, note = load_pair(_pair(tmp_path))
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert mask.shape == (30, 40) and set(np.unique(mask)) == {0, 1} and note == ""


def test_truncated_jpeg_names_the_file(tmp_path):
    pair = _pair(tmp_path, size=(200, 150))
    data = pair.image_path.read_bytes()
    pair.image_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadFile, match=r"ISIC_0000005\.jpg: corrupt or unreadable image") as err:
        load_pair(pair)
    assert err.value.path == pair.image_path


def test_corrupt_mask_names_the_file(tmp_path):
    pair = _pair(tmp_path)
    pair.mask_path.write_bytes(b"not a png at all")
    with pytest.raises(BadFile, match=r"_segmentation\.png: corrupt or unreadable mask"):
        load_pair(pair)


def test_rgb_mask_and_grayscale_image_are_refused(tmp_path):
    pair = _pair(tmp_path)
    Image.open(pair.mask_path).convert("RGB").save(pair.mask_path)
    with pytest.raises(BadFile, match="mask mode is RGB, expected a single-channel"):
        load_pair(pair)
    pair = _pair(tmp_path)
    Image.open(pair.image_path).convert("L").save(pair.image_path)
    with pytest.raises(BadFile, match="image mode is L, expected RGB"):
        load_pair(pair)


def test_size_mismatch_is_refused(tmp_path):
    pair = _pair(tmp_path)
    Image.new("L", (41, 30)).save(pair.mask_path)
    with pytest.raises(BadFile, match="mask is 41x30 but its image ISIC_0000005.jpg is 40x30"):
        load_pair(pair)


def test_zero_one_mask_is_refused_not_emptied(tmp_path):
    pair = _pair(tmp_path)
    Image.fromarray((np.asarray(Image.open(pair.mask_path)) > 0).astype(np.uint8)).save(pair.mask_path)
    with pytest.raises(BadFile, match="only reach 1.*0/1 mask"):
        load_pair(pair)


def test_soft_mask_is_binarised_above_127_with_a_note(tmp_path):
    pair = _pair(tmp_path)
    soft = np.array([[0, 100, 127, 128, 200, 255]] * 30, np.uint8).repeat(7, axis=1)[:, :40]
    Image.fromarray(soft).save(pair.mask_path)
    _, mask, note = load_pair(pair)
    assert np.array_equal(mask, (soft > 127).astype(np.uint8))
    assert "binarised" in note


def test_empty_mask_is_kept_with_a_note(tmp_path):
    _, mask, note = load_pair(_pair(tmp_path, lesion=False))
    assert mask.sum() == 0 and "empty" in note
