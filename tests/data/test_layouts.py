"""Dataset layouts beside the ISIC one: plain image/mask folders (any suffix, format and mode), PH2's tree,
detection, the external protocol, and every error naming its file or folder. Fixtures are drawn with PIL."""
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from helpers.data import layouts, prep, sources
from helpers.data.isic import BadFile, DataError, Pair, load_pair
from tests.builders import make_dataset

SIZE = (40, 30)  # width, height


def _picture(index: int, size=SIZE) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


def _box(size=SIZE) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = 255
    return mask


def _disc(size=SIZE) -> np.ndarray:
    """A 0/255 disc: saved as JPEG its edge gets values between 0 and 255."""
    yy, xx = np.mgrid[:size[1], :size[0]]
    return (((yy - size[1] / 2) ** 2 + (xx - size[0] / 2) ** 2) < (size[1] / 3) ** 2).astype(np.uint8) * 255


def write_folder_pairs(images_dir, masks_dir, count, suffix="_mask", image_ext=".jpg", mask_ext=".png", start=0,
                       size=SIZE):
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    for k in range(start, start + count):
        Image.fromarray(_picture(k, size)).save(images_dir / f"case{k:03d}{image_ext}")
        Image.fromarray(_box(size)).save(masks_dir / f"case{k:03d}{suffix}{mask_ext}")
    return images_dir.parent


def write_ph2(top, count, missing_lesion=(), size=SIZE):
    """A PH2 tree: ``top/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp``, ``IMDxxx_lesion/IMDxxx_lesion.bmp``, a
    ``_roi`` folder to ignore; no lesion folder for the cases in ``missing_lesion``."""
    for k in range(count):
        case = f"IMD{k + 2:03d}"
        (top / case / f"{case}_Dermoscopic_Image").mkdir(parents=True)
        Image.fromarray(_picture(k, size)).save(top / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
        (top / case / f"{case}_roi").mkdir()
        Image.fromarray(_box(size)).save(top / case / f"{case}_roi" / f"{case}_R1_Label4.bmp")
        if k not in missing_lesion:
            (top / case / f"{case}_lesion").mkdir()
            Image.fromarray(_box(size)).save(top / case / f"{case}_lesion" / f"{case}_lesion.bmp")
    (top.parent / "PH2_dataset.txt").write_text("the clinical diagnosis of each image")
    return top


def _prepare(source, out, protocol="seed", **kw):
    return prep.prepare(source, out, 16, protocol=protocol, progress=False, **kw)


# ------------------------------------------------------------------------------------------------ folders layout

def test_two_folders_with_mask_suffix_and_png_masks_prepare_end_to_end(tmp_path):
    root = write_folder_pairs(tmp_path / "clinic" / "Images", tmp_path / "clinic" / "Ground Truth", 20)
    assert layouts.detect_layout(tmp_path / "clinic") == "folders"
    found = layouts.scan(tmp_path / "clinic", "seed")
    assert (found.layout, found.mask_suffix, found.problems) == ("folders", "_mask", [])
    assert found.entries[0] == ("train", Pair("case000", root / "Images" / "case000.jpg",
                                              root / "Ground Truth" / "case000_mask.png"))
    data = _prepare(tmp_path, tmp_path / "out")  # the folders are one level down
    assert data.images.shape == (20, 16, 16, 3) and data.masks.shape == (20, 16, 16)
    assert data.table["split"].value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    assert list(data.table["isic_id"])[:2] == ["case000", "case001"] and (data.table["note"] == "").all()
    assert data.manifest["layout"] == "auto" and data.manifest["layout_found"] == "folders"
    assert data.manifest["mask_suffix_found"] == "_mask"


def test_one_folder_with_segmentation_suffix(tmp_path):
    write_folder_pairs(tmp_path / "mine", tmp_path / "mine", 6, suffix="_segmentation", image_ext=".png")
    entries, problems = prep.collect_pairs(tmp_path, "seed")
    assert len(entries) == 6 and problems == []
    assert entries[0][1].mask_path.name == "case000_segmentation.png"
    with pytest.raises(DataError, match="images and masks are in one folder, so the masks need a suffix"):
        layouts.collect(tmp_path, "seed", mask_suffix="")


def test_masks_without_suffix_in_their_own_folder(tmp_path):
    write_folder_pairs(tmp_path / "imgs", tmp_path / "gt", 5, suffix="")
    found = layouts.scan(tmp_path, "external")
    assert found.mask_suffix == "" and len(found.entries) == 5 and {s for s, _ in found.entries} == {"test"}
    assert layouts.scan(tmp_path, "seed", mask_suffix=None).mask_suffix == ""


def test_jpeg_masks_are_binarised_with_a_count_of_the_ambiguous_pixels(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_folder_pairs(images, masks, 3, suffix="_lesion")
    for k in range(3):
        (masks / f"case{k:03d}_lesion.png").unlink()
        Image.fromarray(_disc()).save(masks / f"case{k:03d}_lesion.jpg", quality=75)
    decoded = np.asarray(Image.open(masks / "case000_lesion.jpg"))
    odd = int(((decoded > 0) & (decoded < 255)).sum())
    assert odd > 0
    data = _prepare(tmp_path, tmp_path / "out", protocol="external")
    assert data.table["note"].iloc[0] == f"mask binarised at >127: {odd:,} pixels were neither 0 nor 255"
    assert data.manifest["notes"] == 3 and set(np.unique(data.masks)) == {0, 1}
    with zipfile.ZipFile(tmp_path / "out" / prep.ORIGINALS) as zipped:  # JPEG masks stored as PNGs of the same values
        assert sorted(zipped.namelist()) == ["case000.png", "case001.png", "case002.png"]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(zipped.read("case000.png")))), decoded)
    assert np.array_equal(data.original_mask(0), decoded > 127)


def test_bmp_and_tiff_files_and_a_chosen_suffix(tmp_path):
    write_folder_pairs(tmp_path / "input", tmp_path / "labels", 4, image_ext=".bmp", mask_ext=".tif")
    write_folder_pairs(tmp_path / "input", tmp_path / "labels", 2, image_ext=".tiff", mask_ext=".bmp", start=4)
    data = _prepare(tmp_path, tmp_path / "out", mask_suffix="_mask")
    assert len(data.table) == 6 and data.manifest["mask_suffix"] == "_mask"
    assert data.table["image_path"].str.endswith((".bmp", ".tiff")).all()


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "CMYK"])
def test_images_of_other_modes_are_converted_with_a_note(tmp_path, mode):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 1)
    path = tmp_path / "images" / "case000.jpg"
    path.unlink()
    picture = Image.fromarray(_picture(0))
    if mode == "I;16":
        picture = Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257)
    elif mode == "RGBA":
        picture = picture.convert("RGBA")
    else:
        picture = picture.convert(mode)
    picture.save(tmp_path / "images" / f"case000.{'jpg' if mode == 'CMYK' else 'png'}")
    (pair,) = [p for _, p in layouts.collect(tmp_path, "seed")[0]]
    image, mask, note = load_pair(pair, lenient=True)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8 and mask.sum() > 0
    assert note.startswith(f"image was {picture.mode}, converted to RGB")
    if mode in ("L", "I;16"):
        assert (image[..., 0] == image[..., 2]).all()
        assert abs(int(image.mean()) - int(np.asarray(Image.fromarray(_picture(0)).convert("L")).mean())) <= 1
    with pytest.raises(BadFile, match="expected RGB"):  # the ISIC layout stays strict
        load_pair(pair)


def test_rgb_masks_with_equal_channels_are_read_as_grayscale_colour_masks_are_not(tmp_path):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 1)
    (pair,) = [p for _, p in layouts.collect(tmp_path, "seed")[0]]
    Image.fromarray(np.stack([_box()] * 3, axis=-1)).save(pair.mask_path)
    _, mask, note = load_pair(pair, lenient=True)
    assert np.array_equal(mask, _box() > 127) and note == ""
    colour = np.stack([_box()] * 3, axis=-1)
    colour[..., 1] = 0
    Image.fromarray(colour).save(pair.mask_path)
    with pytest.raises(BadFile, match=r"case000_mask\.png: mask is a colour image"):
        load_pair(pair, lenient=True)


# ------------------------------------------------------------------------------------------------ PH2

def test_ph2_tree_nested_with_roi_folders_and_a_case_without_lesion(tmp_path):
    write_ph2(tmp_path / "downloads" / "PH2Dataset" / "PH2 Dataset images", 21, missing_lesion=(3,))
    assert layouts.detect_layout(tmp_path) == "ph2"
    found = layouts.scan(tmp_path, "seed")
    assert found.layout == "ph2" and len(found.entries) == 20
    (problem,) = found.problems
    assert problem.path.name == "IMD005" and "PH2 case has no lesion mask (IMD005_lesion/IMD005_lesion.bmp" in str(problem)
    assert found.entries[0][1].mask_path.name == "IMD002_lesion.bmp"
    with pytest.raises(DataError, match=r"(?s)1 problem\(s\).*IMD005: PH2 case has no lesion mask"):
        _prepare(tmp_path, tmp_path / "out")
    seed = _prepare(tmp_path, tmp_path / "out", on_bad_file="skip")
    assert seed.table["split"].value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    assert seed.images.shape == (20, 16, 16, 3) and seed.manifest["skipped"] == [str(problem)]
    assert seed.manifest["layout_found"] == "ph2" and seed.manifest["mask_suffix_found"] is None
    external = _prepare(tmp_path, tmp_path / "external", protocol="external", on_bad_file="skip")
    table = external.table
    assert set(table["split"]) == {"test"} and (table["train_rank"] == -1).all() and len(external.indices("test")) == 20
    assert not table[["in_10", "in_25", "in_50", "in_100"]].to_numpy().any()
    assert len(external.indices("train")) == 0 and external.manifest["splits"] == {"test": 20}
    assert external.has_originals(range(20)) and external.original_mask(0).shape == (30, 40)
    assert external.original_mask_png(0).startswith(b"\x89PNG")  # a BMP mask, stored as PNG for the export


def test_ph2_case_folder_without_its_image_folder_is_named(tmp_path):
    write_ph2(tmp_path / "PH2", 3)
    (tmp_path / "PH2" / "IMD099").mkdir()
    found = layouts.scan(tmp_path, "external")
    assert len(found.entries) == 3 and [p.path.name for p in found.problems] == ["IMD099"]
    assert "has no IMD099_Dermoscopic_Image folder" in found.problems[0].problem


# ------------------------------------------------------------------------------------------------ detection, ISIC

def test_detection(tmp_path):
    assert layouts.detect_layout(make_dataset(tmp_path / "isic" / "nested", 2)) == "isic"
    assert layouts.detect_layout(tmp_path / "isic") == "isic"
    assert layouts.detect_layout(write_ph2(tmp_path / "ph2" / "a" / "b", 1).parent) == "ph2"
    assert layouts.detect_layout(write_folder_pairs(tmp_path / "own" / "images", tmp_path / "own" / "masks", 1)) == "folders"
    with pytest.raises(DataError, match="is not a folder"):
        layouts.detect_layout(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="layout must be"):
        layouts.scan(tmp_path / "own", "seed", layout="kaggle")


def test_isic_layout_with_the_external_protocol_uses_every_split_found(tmp_path):
    make_dataset(tmp_path, 5)
    make_dataset(tmp_path, 3, split="val", start=100)
    data = _prepare(tmp_path, tmp_path / "out", protocol="external")
    assert len(data.table) == 8 and set(data.table["split"]) == {"test"} and data.manifest["layout_found"] == "isic"
    assert (data.table["protocol"] == "external").all() and data.has_originals(range(8))


def test_official_protocol_is_isic_only(tmp_path):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 2)
    with pytest.raises(DataError, match="protocol='official' needs the official ISIC 2018 folders.*'folders'"):
        layouts.collect(tmp_path, "official")
    with pytest.raises(ValueError, match="protocol must be one of"):
        layouts.collect(tmp_path, "kfold")


def test_protocol_list_accepts_external_and_both_stays_seed_and_official():
    assert sources.protocol_list("external") == ["external"]
    assert sources.protocol_list("both") == ["seed", "official"]
    with pytest.raises(DataError, match="is not one of"):
        sources.protocol_list("all")


def test_settings_remember_layout_and_suffix(tmp_path):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 4, suffix="")
    first = _prepare(tmp_path, tmp_path / "out", protocol="external")
    wanted = prep.settings(tmp_path, 16, "external", 42, "raise")
    assert wanted["layout"] == "auto" and wanted["mask_suffix"] == "auto" and prep.is_prepared(tmp_path / "out", wanted)
    assert _prepare(tmp_path, tmp_path / "out", protocol="external").manifest["prepared_id"] == first.manifest["prepared_id"]
    again = _prepare(tmp_path, tmp_path / "out", protocol="external", mask_suffix="")  # other settings: redone
    assert again.manifest["prepared_id"] != first.manifest["prepared_id"] and again.manifest["mask_suffix"] == ""
    for same in (None, "none", ""):  # one setting, however it is written
        assert prep.is_prepared(tmp_path / "out", prep.settings(tmp_path, 16, "external", 42, "raise", mask_suffix=same))
    assert not prep.is_prepared(tmp_path / "out", prep.settings(tmp_path, 16, "external", 42, "raise", mask_suffix="_mask"))
    manifest = json.loads((tmp_path / "out" / "prepared.json").read_text())
    old = {k: v for k, v in manifest.items() if k not in ("layout", "mask_suffix", "layout_found", "mask_suffix_found")}
    (tmp_path / "out" / "prepared.json").write_text(json.dumps(old))  # an ISIC preparation made before these settings
    assert prep.is_prepared(tmp_path / "out", prep.settings(tmp_path, 16, "external", 42, "raise"))  # reused, not redone
    assert prep.is_prepared(tmp_path / "out", prep.settings(tmp_path, 16, "external", 42, "raise", mask_suffix="_x"))
    assert not prep.is_prepared(tmp_path / "out", prep.settings(tmp_path, 16, "external", 42, "raise", layout="ph2"))


# ------------------------------------------------------------------------------------------------ errors

def test_empty_folder_and_folder_matching_no_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty is empty; put the images and masks there"):
        layouts.collect(tmp_path / "empty", "seed")
    (tmp_path / "notes" / "sub").mkdir(parents=True)
    (tmp_path / "notes" / "sub" / "readme.md").write_text("nothing")
    with pytest.raises(DataError, match=r"notes matches no dataset layout.*Put the images in images/"):
        layouts.collect(tmp_path / "notes", "seed")
    (tmp_path / "only" / "images").mkdir(parents=True)
    (tmp_path / "only" / "masks").mkdir()
    with pytest.raises(DataError, match=r"only/images: no image files here"):
        layouts.collect(tmp_path / "only", "seed")


def test_suffix_tie_and_nothing_paired_name_the_folder(tmp_path):
    write_folder_pairs(tmp_path / "a" / "images", tmp_path / "a" / "masks", 1, suffix="_mask")
    write_folder_pairs(tmp_path / "a" / "images", tmp_path / "a" / "masks", 1, suffix="_lesion", start=1)
    with pytest.raises(DataError, match=r"a/masks: mask suffixes '_lesion' and '_mask' pair equally many files \(1\)"):
        layouts.collect(tmp_path / "a", "seed")
    entries, problems = layouts.collect(tmp_path / "a", "seed", mask_suffix="_mask")  # chosen: the other is odd
    assert len(entries) == 1 and {p.path.name for p in problems} == {"case001_lesion.png", "case001.jpg"}
    write_folder_pairs(tmp_path / "b" / "images", tmp_path / "b" / "masks", 2, suffix="-seg")
    with pytest.raises(DataError, match=r"b/masks: no image pairs with a mask.*mask_suffix"):
        layouts.collect(tmp_path / "b", "seed")
    assert len(layouts.collect(tmp_path / "b", "seed", mask_suffix="-seg")[0]) == 2  # any suffix can be given


def test_duplicate_ids_orphans_and_odd_files_are_problems_by_name(tmp_path):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 4)
    Image.fromarray(_picture(0)).save(tmp_path / "images" / "case000.png")           # same id, two formats
    (tmp_path / "masks" / "case003_mask.png").unlink()                               # image without mask
    Image.fromarray(_box()).save(tmp_path / "masks" / "case009_mask.png")            # mask without image
    (tmp_path / "images" / "metadata.csv").write_text("id,age")
    entries, problems = layouts.collect(tmp_path, "seed")
    assert [p.isic_id for _, p in entries] == ["case001", "case002"]
    text = "\n".join(map(str, problems))
    assert "case000.jpg: image id found in 2 files (case000.jpg, case000.png); ids must be unique" in text
    assert "case003.jpg: image has no mask (case003_mask.png" in text
    assert "case009_mask.png: mask has no image (case009.jpg" in text
    assert "metadata.csv: not an image or mask file" in text
    data = _prepare(tmp_path, tmp_path / "out", on_bad_file="skip")
    assert len(data.table) == 2 and len(data.manifest["skipped"]) == 4


def test_size_mismatch_and_unreadable_files_name_the_file(tmp_path):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 4)
    Image.new("L", (41, 30)).save(tmp_path / "masks" / "case001_mask.png")
    (tmp_path / "images" / "case002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, tmp_path / "out")
    assert "case001_mask.png: mask is 41x30 but its image case001.jpg is 40x30" in str(err.value)
    assert "case002.jpg: corrupt or unreadable image" in str(err.value) and "on_bad_file='skip'" in str(err.value)
    assert not (tmp_path / "out" / "prepared.json").exists()
    data = _prepare(tmp_path, tmp_path / "out", on_bad_file="skip")
    assert list(data.table["isic_id"]) == ["case000", "case003"]


def test_two_image_folders_in_one_place_are_ambiguous(tmp_path):
    write_folder_pairs(tmp_path / "images", tmp_path / "masks", 1)
    (tmp_path / "imgs").mkdir()
    with pytest.raises(DataError, match=r"several image folders \(images, imgs\)"):
        layouts.collect(tmp_path, "seed")
