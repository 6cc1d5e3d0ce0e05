"""Photos are read upright: the EXIF orientation a phone writes is applied before pairing, size checks and the cache.

A phone stores a portrait photo as landscape pixels with EXIF orientation 6 (or 8), and a mask drawn on the photo as
a viewer shows it is portrait. Each test writes such a photo with Pillow and checks that the prepared image and mask
line up: the bright "lesion" of the image sits where the mask says.
"""
import numpy as np
import pytest
from PIL import Image

from helpers.data import isic, prep
from helpers.data.isic import BadFile, Pair

HEIGHT, WIDTH = 48, 32  # upright: a portrait photo
TO_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def upright_scene(height=HEIGHT, width=WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """A dark photo with a bright lesion near its top-left corner (no symmetry hides a wrong turn), and its mask."""
    image = np.full((height, width, 3), 30, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    image[4:20, 4:14] = 230
    mask[4:20, 4:14] = 255
    return image, mask


def save_turned(array: np.ndarray, path, orientation: int) -> None:
    """Save ``array`` (upright) as a phone does: pixels stored turned, EXIF orientation saying how to turn them back."""
    exif = Image.Exif()
    exif[isic.ORIENTATION] = orientation
    stored = Image.fromarray(array).transpose(TO_STORED[orientation])
    stored.save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))


def write_photo(root, name: str, orientation: int, size=(HEIGHT, WIDTH), mask_suffix=".png", mask_turned=False):
    """A phone photo (stored turned, EXIF ``orientation``) and its mask drawn upright (or stored turned as well)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    image, mask = upright_scene(*size)
    image_path, mask_path = root / "images" / f"{name}.jpg", root / "masks" / f"{name}_mask{mask_suffix}"
    save_turned(image, image_path, orientation)
    if mask_turned:
        save_turned(mask, mask_path, orientation)
    else:
        Image.fromarray(mask).save(mask_path)
    return Pair(name, image_path, mask_path)


def lined_up(image: np.ndarray, mask: np.ndarray) -> bool:
    """True when the image is bright where the mask marks the lesion and dark elsewhere."""
    grey, lesion = image.mean(axis=-1), mask > 0
    return lesion.any() and grey[lesion].mean() > 180 and grey[~lesion].mean() < 80


def test_the_scene_tells_a_wrong_turn_apart():
    image, mask = upright_scene(40, 40)
    assert lined_up(image, mask)
    assert not lined_up(np.rot90(image), mask)  # what an unturned read of a square phone photo gives


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_a_turned_photo_pairs_with_its_upright_mask(tmp_path, orientation):
    pair = write_photo(tmp_path, "photo", orientation)
    assert Image.open(pair.image_path).size != Image.open(pair.mask_path).size or orientation == 3
    image, mask, note = isic.load_pair(pair, lenient=True)
    assert image.shape == (HEIGHT, WIDTH, 3) and mask.shape == (HEIGHT, WIDTH)  # no wrong-size error
    assert lined_up(image, mask) and note == ""


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_square_photo_is_turned_too(tmp_path, orientation):
    """Sizes cannot tell here: only the content shows whether the photo was turned."""
    pair = write_photo(tmp_path, "square", orientation, size=(40, 40))
    image, mask, _ = isic.load_pair(pair, lenient=True)
    assert lined_up(image, mask)


@pytest.mark.parametrize("protocol", ["external", "seed"])
def test_the_prepared_cache_holds_turned_photos_lined_up(tmp_path, protocol):
    for k, orientation in enumerate([6, 8, 1, 6, 8, 3, 1, 6]):
        if orientation == 1:
            (tmp_path / "photos" / "images").mkdir(parents=True, exist_ok=True)
            (tmp_path / "photos" / "masks").mkdir(parents=True, exist_ok=True)
            image, mask = upright_scene()
            Image.fromarray(image).save(tmp_path / "photos" / "images" / f"p{k}.jpg", quality=95)
            Image.fromarray(mask).save(tmp_path / "photos" / "masks" / f"p{k}_mask.png")
        else:
            write_photo(tmp_path / "photos", f"p{k}", orientation)
    data = prep.prepare(tmp_path / "photos", tmp_path / "out", 16, protocol=protocol, progress=False)
    assert len(data.table) == 8 and set(data.table["orig_height"]) == {HEIGHT} and set(data.table["orig_width"]) == {WIDTH}
    assert all(lined_up(np.asarray(data.images[k]), np.asarray(data.masks[k])) for k in range(8))
    assert data.manifest["version"] == prep.PREP_VERSION >= 3  # caches made before photos were turned are made again


@pytest.mark.parametrize("mask_suffix", [".jpg", ".png"])
def test_a_mask_with_its_own_orientation_is_turned_and_kept_upright_for_scoring(tmp_path, mask_suffix):
    """Masks rarely carry EXIF, but where one does (a JPEG from a phone app) it is turned like its photo, in the
    cache and in the original masks the test split is scored against."""
    write_photo(tmp_path / "photos", "p0", 6, mask_suffix=mask_suffix, mask_turned=True)
    data = prep.prepare(tmp_path / "photos", tmp_path / "out", 16, protocol="external", progress=False)
    assert lined_up(np.asarray(data.images[0]), np.asarray(data.masks[0]))
    original = data.original_mask(0)
    assert original.shape == (HEIGHT, WIDTH)
    assert np.array_equal(original, upright_scene()[1] > 127)


def test_a_mask_drawn_on_the_stored_pixels_is_used_as_stored_with_a_note(tmp_path):
    """A tool that ignores EXIF draws on the landscape pixels: the upright sizes differ, the stored ones match."""
    pair = write_photo(tmp_path, "raw", 6)
    stored_mask = Image.open(pair.mask_path).transpose(TO_STORED[6])
    stored_mask.save(pair.mask_path)
    image, mask, note = isic.load_pair(pair, lenient=True)
    assert image.shape[:2] == (WIDTH, HEIGHT) and lined_up(image, mask)
    assert "EXIF orientation 6 not applied" in note


def test_a_mask_of_another_size_is_still_refused_after_turning(tmp_path):
    pair = write_photo(tmp_path, "wrong", 6)
    Image.fromarray(np.zeros((HEIGHT + 5, WIDTH), np.uint8)).save(pair.mask_path)
    with pytest.raises(BadFile, match=f"is {WIDTH}x{HEIGHT} .*upright.*they must match"):
        isic.load_pair(pair, lenient=True)


def test_an_upright_image_is_left_as_it_is():
    image = Image.new("RGB", (4, 3))
    assert isic.orientation(image) == 1 and isic.upright(image) is image
