"""Every image mode Pillow opens is read as the same 8-bit RGB picture as its plain version, or
refused in one line naming the file and its mode; a named pipe among the images is refused by name,
never read."""
import os

import numpy as np
import pytest
from PIL import Image

from helpers.data.isic import BadFile, Pair, load_pair
from helpers.evaluation.predict import load_image

SIDE = (40, 24)  # width, height: small enough to be read at its own size


def _picture() -> Image.Image:
    """A colour picture with gradients, every grey level and a saturated corner."""
    y, x = np.mgrid[0:SIDE[1], 0:SIDE[0]]
    rgb = np.stack([x * 255 // (SIDE[0] - 1), y * 255 // (SIDE[1] - 1), (x * y) % 256], -1)
    rgb = rgb.astype(np.uint8)
    rgb[:4, :4] = (255, 0, 0)
    return Image.fromarray(rgb)


def _grey() -> np.ndarray:
    return np.asarray(_picture().convert("L"))


def _saved(folder, name, image, **options):
    path = folder / name
    image.save(path, **options)
    return path


def _variants(folder) -> dict:
    """{file: its plain 8-bit RGB picture}: one picture saved in every mode Pillow opens."""
    picture, grey = _picture(), _grey()
    plain_grey = np.asarray(Image.fromarray(grey).convert("RGB"))
    opaque = picture.copy()
    opaque.putalpha(255)
    grey_alpha = Image.fromarray(grey).convert("LA")
    palette = picture.quantize(64)
    one_bit = picture.convert("1")
    wide = Image.fromarray(grey.astype(np.uint16) * 257)  # I;16: 0 to 65,535
    return {
        _saved(folder, "rgb.png", picture): np.asarray(picture),
        _saved(folder, "rgb.tif", picture): np.asarray(picture),
        _saved(folder, "rgba.png", opaque): np.asarray(picture),
        _saved(folder, "cmyk.tif", picture.convert("CMYK")):
            np.asarray(picture.convert("CMYK").convert("RGB")),
        _saved(folder, "p.png", palette): np.asarray(palette.convert("RGB")),
        _saved(folder, "1.png", one_bit): np.asarray(one_bit.convert("RGB")),
        _saved(folder, "l.png", Image.fromarray(grey)): plain_grey,
        _saved(folder, "l.tif", Image.fromarray(grey)): plain_grey,
        _saved(folder, "la.png", grey_alpha): plain_grey,
        _saved(folder, "i16.png", wide): plain_grey,                    # a 16-bit PNG
        _saved(folder, "i16.tif", wide): plain_grey,                    # a 16-bit TIFF
        _saved(folder, "i32-255.tif", Image.fromarray(grey.astype(np.int32))): plain_grey,
        _saved(folder, "i32-65535.tif", Image.fromarray(grey.astype(np.int32) * 257)): plain_grey,
        _saved(folder, "f-0-1.tif", Image.fromarray(grey.astype(np.float32) / 255)): plain_grey,
        _saved(folder, "f-0-255.tif", Image.fromarray(grey.astype(np.float32))): plain_grey,
    }


def test_one_picture_saved_in_every_mode_is_read_as_the_same_rgb_picture(tmp_path):
    cases = _variants(tmp_path)
    modes = {Image.open(path).mode for path in cases}
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "F"} <= modes and modes & {"I", "I;16"}
    for path, plain in cases.items():
        read = load_image(path, 32).preview
        assert read.dtype == np.uint8 and read.shape == plain.shape, path.name
        mode = Image.open(path).mode
        assert np.array_equal(read, plain), f"{path.name} ({mode}) is read as another picture"


def test_datasets_read_every_mode_as_the_same_picture_too(tmp_path):
    mask = _saved(tmp_path, "mask.png", Image.fromarray(np.full(SIDE[::-1], 255, np.uint8)))
    for path, plain in _variants(tmp_path).items():
        image, _, _ = load_pair(Pair(path.stem, path, mask), lenient=True)
        assert np.array_equal(image, plain), path.name


@pytest.mark.parametrize(("values", "mode"), [(np.full((8, 8), 1000.0, np.float32), "F"),
                                              (np.full((8, 8), -5, np.int32), "I"),
                                              (np.full((8, 8), np.nan, np.float32), "F")])
def test_values_that_are_no_picture_are_refused_in_one_line_naming_the_file_and_mode(tmp_path,
                                                                                     values, mode):
    path = _saved(tmp_path, "odd.tif", Image.fromarray(values))
    with pytest.raises(ValueError) as refused:
        load_image(path, 32)
    message = str(refused.value)
    assert str(path) in message and f"mode {mode}" in message and "\n" not in message
    mask = _saved(tmp_path, "mask.png", Image.fromarray(np.full((8, 8), 255, np.uint8)))
    with pytest.raises(BadFile, match=f"odd.tif: image mode {mode} holds values"):
        load_pair(Pair("odd", path, mask), lenient=True)


def test_a_named_pipe_called_like_an_image_is_refused_by_name_without_blocking(tmp_path):
    pipe = tmp_path / "x.jpg"
    os.mkfifo(pipe)
    with pytest.raises(ValueError, match="x.jpg: is a named pipe, not a regular image file"):
        load_image(pipe, 32)
    with pytest.raises(BadFile, match="is a named pipe"):
        load_pair(Pair("x", pipe, pipe), lenient=True)
