"""A resized copy of an ISIC folder: same layout, same split, same masks as preparing the original."""
import numpy as np
import pytest
from PIL import Image

from helpers.data.isic import DataError, find_split_dirs
from helpers.data.prep import prepare
from helpers.tools.shrink import main, shrink_folder
from tests.builders import make_dataset


def test_copy_keeps_layout_and_prepares_like_the_original(tmp_path):
    make_dataset(tmp_path / "src", 12, size=(40, 30))
    for k, path in enumerate(sorted(find_split_dirs(tmp_path / "src")[0].glob("*.jpg"))):  # smooth, like skin
        y, x = np.mgrid[0:30, 0:40]
        Image.fromarray(np.stack([100 + 3 * x, 80 + 2 * y + k, 60 + x + y], -1).astype(np.uint8)).save(path)
    done = shrink_folder(tmp_path / "src", tmp_path / "copy", 16)
    assert done["pairs"] == 12 and done["written"] == 24 and done["bytes"] > 0
    images, masks = find_split_dirs(tmp_path / "copy")
    assert len(list(images.glob("*.jpg"))) == 12
    mask = np.asarray(Image.open(masks / "ISIC_0000003_segmentation.png"))
    assert mask.shape == (16, 16) and set(np.unique(mask)) == {0, 255}
    assert Image.open(images / "ISIC_0000003.jpg").size == (16, 16)
    original = prepare(tmp_path / "src", tmp_path / "p1", 16, progress=False)
    copied = prepare(tmp_path / "copy", tmp_path / "p2", 16, progress=False)
    assert np.array_equal(original.masks, copied.masks)
    assert original.table["split"].tolist() == copied.table["split"].tolist()
    assert np.abs(original.images.astype(int) - copied.images.astype(int)).mean() < 8  # JPEG at the default quality 90


def test_resumes_without_rewriting(tmp_path):
    make_dataset(tmp_path / "src", 3)
    shrink_folder(tmp_path / "src", tmp_path / "copy", 16)
    (tmp_path / "copy" / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000001.jpg").unlink()  # an interrupted copy
    assert shrink_folder(tmp_path / "src", tmp_path / "copy", 16)["written"] == 1


def test_a_bad_pair_is_named_and_nothing_is_written(tmp_path, capsys):
    make_dataset(tmp_path / "src", 3)
    images, _ = find_split_dirs(tmp_path / "src")
    (images / "ISIC_0000002.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DataError, match="ISIC_0000002.jpg"):
        shrink_folder(tmp_path / "src", tmp_path / "copy", 16)
    assert not (tmp_path / "copy").exists()
    assert main([str(tmp_path / "src"), str(tmp_path / "copy"), "--size", "16"]) == 1
    assert "ISIC_0000002.jpg" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 16"):
        shrink_folder(tmp_path / "src", tmp_path / "copy", 8)
