"""Predicting on your own images: odd inputs as people have them, outputs at the original size, the command line."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import cli
from helpers.evaluation import predict as predict_module
from helpers.evaluation.predict import collect_inputs, load_image, main, predict, run_settings
from tests.builders import Brightness, make_run


def _scene(width, height, box):
    """Dark skin (grey 40) with a bright box (grey 220) at ``box`` = (left, top, right, bottom): Brightness's lesion."""
    pixels = np.full((height, width, 3), 40, np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = 220
    return Image.fromarray(pixels)


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module.runs, "load_run_model", lambda run_dir, map_location=None: Brightness())
    return make_run(tmp_path / "results", "bright", "unet", 1.0, tmp_path / "data")


def test_masks_come_back_at_the_original_size_with_the_lesion_where_it_is(run, tmp_path):
    _scene(300, 200, (60, 50, 180, 150)).save(tmp_path / "lesion.png")
    table = predict(run, [tmp_path / "lesion.png"], tmp_path / "out", progress=False)
    mask = np.asarray(Image.open(tmp_path / "out" / "lesion_segmentation.png"))
    assert mask.shape == (200, 300) and set(np.unique(mask)) == {0, 255}
    assert abs(mask[50:150, 60:180].mean() / 255 - 1) < 0.05 and mask[:40].max() == 0
    row = table.iloc[0]
    assert (row["width"], row["height"]) == (300, 200) and row["lesion_fraction"] == pytest.approx(0.2, abs=0.02)
    assert 0.5 <= row["mean_confidence"] <= 1 and row["ms"] > 0
    assert (tmp_path / "out" / "lesion_overlay.jpg").is_file()
    assert list(pd.read_csv(tmp_path / "out" / "predictions.csv")["id"]) == ["lesion"]


def test_an_exif_rotated_photo_is_predicted_upright(run, tmp_path):
    image = _scene(300, 200, (0, 0, 100, 200))  # the left third is lesion, as stored
    exif = image.getexif()
    exif[0x0112] = 6  # "turn 90° clockwise to view"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    predict(run, [tmp_path / "phone.jpg"], tmp_path / "out", progress=False)
    mask = np.asarray(Image.open(tmp_path / "out" / "phone_segmentation.png"))
    assert mask.shape == (300, 200)  # upright: taller than wide
    assert mask[:90].mean() > 200 and mask[120:].max() == 0  # the stored left third is now the top


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    scene = _scene(64, 64, (16, 16, 48, 48))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(scene.convert("L")).astype(np.uint16) * 257)  # a 16-bit grayscale PNG
    elif mode == "RGBA":
        image = scene.convert("RGBA")
    else:
        image = scene.convert(mode)
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    loaded = load_image(path, 32)
    assert loaded.small.shape == (32, 32, 3) and loaded.small.dtype == np.uint8 and loaded.size == (64, 64)
    assert loaded.small[16, 16].mean() > 150 and loaded.small[2, 2].mean() < 90  # the box stays bright, skin dark


def test_a_6000_px_jpeg_is_decoded_reduced(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    _scene(6000, 4000, (1000, 1000, 3000, 3000)).save(tmp_path / "big.jpg", quality=80)
    decoded, draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size, *args):
        result = draft(self, mode, size, *args)
        decoded.append(self.size)  # the size it will decode at
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    loaded = load_image(tmp_path / "big.jpg", 64)
    assert loaded.size == (4000, 6000) and max(loaded.preview.shape[:2]) <= predict_module.OVERLAY_SIDE
    assert decoded == [(1500, 1000)]  # 1/4 scale: never 24 million pixels in memory


def test_transparent_images_go_on_white_and_16_bit_keeps_its_scale(tmp_path):
    pixels = np.zeros((32, 32, 4), np.uint8)
    pixels[8:24, 8:24] = (220, 220, 220, 255)  # an opaque bright box on a transparent background
    Image.fromarray(pixels).save(tmp_path / "cut.png")
    loaded = load_image(tmp_path / "cut.png", 32)
    assert loaded.small[0, 0].tolist() == [255, 255, 255] and loaded.small[16, 16].tolist() == [220, 220, 220]
    Image.fromarray(np.full((32, 32), 1000, np.uint16)).save(tmp_path / "dark16.png")  # 1000 of 65535: nearly black
    assert load_image(tmp_path / "dark16.png", 32).small.max() <= 4


def test_inputs_with_the_same_stem_do_not_overwrite_each_other(run, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "in" / folder / "x.png")
    first = predict(run, [tmp_path / "in"], tmp_path / "out", progress=False)
    assert sorted(first["id"]) == ["a_x_png", "b_x_png"] and len(list((tmp_path / "out").glob("*_segmentation.png"))) == 2


def test_same_named_files_in_same_named_subfolders_keep_their_relative_paths(run, tmp_path):
    for study in ("s1", "s2"):
        (tmp_path / study / "images").mkdir(parents=True)
        _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / study / "images" / "IMG_0001.png")
    table = predict(run, [tmp_path / "s1" / "images", tmp_path / "s2" / "images"], tmp_path / "out", progress=False)
    assert sorted(table["id"]) == ["s1_images_IMG_0001_png", "s2_images_IMG_0001_png"]
    assert len(list((tmp_path / "out").glob("*_segmentation.png"))) == 2  # 2 rows, 2 masks


def test_output_names_stay_unique_when_a_file_has_the_joined_name_already(tmp_path):
    files = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "c" / "a_x_png.png"]
    names = predict_module.output_names(files)
    assert len(set(names.values())) == 3 and names[files[0]] == "a_x_png"


@pytest.mark.parametrize("where", ["in", "in/sub/out"])
def test_an_output_folder_that_is_or_lies_inside_an_input_folder_is_refused(run, tmp_path, where, capsys):
    (tmp_path / "in").mkdir()
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "in" / "x.png")
    with pytest.raises(cli.BadValue, match="the output folder (is the input folder|lies inside the input folder)"):
        predict(run, [tmp_path / "in"], tmp_path / where, progress=False)
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == ["x.png"]  # nothing written
    assert main([str(run), str(tmp_path / "in"), str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("✗ ") and "Traceback" not in err


def _ground_truth(folder: Path) -> tuple[Path, Path]:
    """An ISIC-layout image folder and a mask folder holding its ground truth."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    _scene(64, 64, (16, 16, 48, 48)).save(folder / "images" / "ISIC_0000001.jpg")
    truth = np.zeros((64, 64), np.uint8)
    truth[20:40, 20:40] = 255
    Image.fromarray(truth).save(folder / "masks" / "ISIC_0000001_segmentation.png")
    return folder / "images", folder / "masks"


def test_files_predict_did_not_write_are_never_overwritten_unless_asked(run, tmp_path, capsys):
    images, masks = _ground_truth(tmp_path / "X")
    before = (masks / "ISIC_0000001_segmentation.png").read_bytes()
    with pytest.raises(predict_module.OutputClash, match="ISIC_0000001_segmentation.png"):
        predict(run, [images], masks, progress=False)
    assert (masks / "ISIC_0000001_segmentation.png").read_bytes() == before
    assert sorted(p.name for p in masks.iterdir()) == ["ISIC_0000001_segmentation.png"]  # nothing written at all
    assert main([str(run), str(images), str(masks)]) == 1
    assert "not written by predict" in capsys.readouterr().err
    assert (masks / "ISIC_0000001_segmentation.png").read_bytes() == before
    predict(run, [images], masks, progress=False, overwrite=True)  # asked for: replaced
    assert (masks / "ISIC_0000001_segmentation.png").read_bytes() != before


def test_its_own_outputs_are_overwritten_and_never_read_as_inputs(run, tmp_path, capsys):
    (tmp_path / "in" / "photos").mkdir(parents=True)
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "in" / "photos" / "x.png")
    out = tmp_path / "in" / "predictions"  # beside the photos: allowed (not inside the input folder given)
    predict(run, [tmp_path / "in" / "photos"], out, progress=False)
    again = predict(run, [tmp_path / "in" / "photos"], out, progress=False)  # its own files: replaced
    assert list(again["id"]) == ["x"]
    manifest = predict_module.read_manifest(out)
    assert {"x_segmentation.png", "x_overlay.jpg", "predictions.csv"} <= manifest
    later = predict(run, [tmp_path / "in"], tmp_path / "elsewhere", progress=False)  # the parent folder, later
    assert list(later["id"]) == ["x"]  # the earlier overlay and mask are not inputs
    assert "earlier predictions" in capsys.readouterr().out


def test_an_output_folder_of_an_earlier_version_without_a_manifest_is_recognised(run, tmp_path):
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    predict(run, [tmp_path / "x.png"], tmp_path / "out", progress=False)
    (tmp_path / "out" / predict_module.MANIFEST).unlink()  # as an earlier version left it: predictions.csv only
    assert "x_segmentation.png" in predict_module.read_manifest(tmp_path / "out")
    assert len(predict(run, [tmp_path / "x.png"], tmp_path / "out", progress=False)) == 1


@pytest.mark.parametrize("option", [["--threshold", "1.5"], ["--threshold", "nan"], ["--threshold", "-0.1"],
                                    ["--batch-size", "-3"], ["--batch-size", "0"]])
def test_bad_values_are_refused_where_they_enter(run, tmp_path, option, capsys):
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    assert main([str(run), str(tmp_path / "x.png"), str(tmp_path / "out"), *option]) == 2
    err = capsys.readouterr().err
    assert option[0] in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_missing_gpu_is_named_as_such_not_blamed_on_the_checkpoint(run, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    assert main([str(run), str(tmp_path / "x.png"), str(tmp_path / "out"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is available" in err and "corrupt" not in err and "best.pt" not in err


def test_no_images_at_all_is_an_error_not_zero_images(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(run), str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "no image files" in capsys.readouterr().err


def test_debug_shows_the_traceback(run, tmp_path):
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    with pytest.raises(cli.BadValue):
        main([str(run), str(tmp_path / "x.png"), str(tmp_path / "out"), "--threshold", "2", "--debug"])


def test_unreadable_and_non_image_files_are_named_and_the_rest_goes_on(run, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _scene(64, 48, (10, 10, 30, 30)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("visit 3")
    files, notes = collect_inputs([folder, tmp_path / "missing.png"])
    assert [p.name for p in files] == ["broken.jpg", "good.png"]
    assert any("notes.txt: not an image file" in n for n in notes) and any("missing.png: no such" in n for n in notes)
    table = predict(run, [folder], tmp_path / "out", progress=False)
    out = capsys.readouterr().out
    assert list(table["id"]) == ["good"] and "broken.jpg: cannot be read as an image" in out and "Skipped." in out


def test_the_runs_own_settings_are_used_unless_overridden(run, tmp_path):
    assert run_settings(run) == {"threshold": 0.5, "tta": False, "post": False}
    (run / "eval.json").write_text('{"threshold": 0.99, "tta": true, "postprocess": true}')
    assert run_settings(run) == {"threshold": 0.99, "tta": True, "post": True}
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    strict = predict(run, [tmp_path / "x.png"], tmp_path / "a", progress=False)  # 0.99: Brightness is not that sure
    loose = predict(run, [tmp_path / "x.png"], tmp_path / "b", threshold=0.5, progress=False)
    assert strict["lesion_fraction"].iloc[0] < loose["lesion_fraction"].iloc[0]


def test_command_line(run, tmp_path, capsys):
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    assert main([str(run), str(tmp_path / "x.png"), str(tmp_path / "out"), "--threshold", "0.5", "--no-tta"]) == 0
    assert "1 image(s)" in capsys.readouterr().out and (tmp_path / "out" / "x_segmentation.png").is_file()
    with pytest.raises(SystemExit):
        main([str(run), str(tmp_path / "out")])  # an input and an output are needed


def test_example_inputs_are_the_original_files_else_the_prepared_arrays(shifted, tmp_path):
    from helpers.reporting.figures import image_files

    files = predict_module.example_inputs(shifted, tmp_path / "yours", count=3)
    rows = shifted.indices("test")[:3]
    assert [f.stem for f in files] == shifted.table["isic_id"].iloc[rows].tolist()
    assert all(f.suffix == ".jpg" for f in files)  # the raw files are on disk: copied as they are
    assert files[0].read_bytes() == Path(shifted.table["image_path"].iloc[rows[0]]).read_bytes()
    moved = type(shifted)(shifted.root, shifted.images, shifted.masks,
                          shifted.table.assign(image_path="/nowhere/x.jpg"), shifted.manifest)
    arrays = predict_module.example_inputs(moved, tmp_path / "fresh-runtime", count=2)
    assert [f.suffix for f in arrays] == [".png", ".png"]
    assert np.array_equal(np.asarray(Image.open(arrays[1])), shifted.images[rows[1]])
    figure = image_files(files, ncols=2)
    assert len(figure.axes) == 4 and [ax.get_title() for ax in figure.axes[:3]] == [f.stem for f in files]


def test_an_unreadable_manifest_is_named_and_overwrite_starts_a_new_one(run, tmp_path, capsys):
    _scene(64, 64, (16, 16, 48, 48)).save(tmp_path / "x.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / predict_module.MANIFEST).write_text('{"files": ["x_seg')
    assert main([str(run), str(tmp_path / "x.png"), str(tmp_path / "out")]) == 1
    assert f"{predict_module.MANIFEST} is unreadable" in capsys.readouterr().err
    predict(run, [tmp_path / "x.png"], tmp_path / "out", progress=False, overwrite=True)
    assert "x_segmentation.png" in predict_module.read_manifest(tmp_path / "out")
