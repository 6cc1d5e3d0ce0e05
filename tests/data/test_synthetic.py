"""The offline sample: official layout and names, determinism, binary masks, variety, reuse."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from helpers.data import synthetic
from helpers.data.isic import find_split_dirs, pair_files


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return synthetic.generate_sample(tmp_path_factory.mktemp("sample"), count=40, seed=3, progress=False)


def test_official_layout_and_names(sample):
    images = sorted((sample / "ISIC2018_Task1-2_Training_Input").iterdir())
    masks = sorted((sample / "ISIC2018_Task1_Training_GroundTruth").iterdir())
    assert len(images) == len(masks) == 40
    assert all(re.fullmatch(r"ISIC_9\d{6}\.jpg", p.name) for p in images)
    assert all(re.fullmatch(r"ISIC_9\d{6}_segmentation\.png", p.name) for p in masks)
    pairs, problems = pair_files(*find_split_dirs(sample))
    assert len(pairs) == 40 and problems == []


def test_images_rgb_masks_binary_and_same_size(sample):
    for image_path in sorted((sample / "ISIC2018_Task1-2_Training_Input").iterdir())[:10]:
        mask_path = sample / "ISIC2018_Task1_Training_GroundTruth" / f"{image_path.stem}_segmentation.png"
        image, mask = Image.open(image_path), Image.open(mask_path)
        assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert 0 < (np.asarray(mask) > 0).mean() < 1


def test_deterministic_per_seed_and_index():
    a_image, a_mask = synthetic.make_case(7, 5)
    b_image, b_mask = synthetic.make_case(7, 5)
    assert np.array_equal(a_image, b_image) and np.array_equal(a_mask, b_mask)
    c_image, _ = synthetic.make_case(8, 5)
    assert a_image.shape != c_image.shape or not np.array_equal(a_image, c_image)


def test_variety_of_sizes_lesion_areas_borders_and_hair():
    cases = [synthetic.make_case(0, i) for i in range(60)]
    shapes = {img.shape[:2] for img, _ in cases}
    assert len(shapes) >= 10 and all(h != w for h, w in shapes)            # varied, non-square
    areas = np.array([(m > 0).mean() for _, m in cases])
    assert areas.min() < 0.06 and areas.max() > 0.3                         # small and large lesions
    touching = sum(bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()) for _, m in cases)
    assert 1 <= touching < 30                                                # some lesions cut by the edge
    dark_corners = sum(img[:8, :8].mean() < 0.6 * img[img.shape[0] // 2 - 4:img.shape[0] // 2 + 4].mean()
                       for img, _ in cases)
    assert dark_corners >= 10                                                # vignettes
    tones = np.array([img[m == 0].mean(axis=0) for img, m in cases])
    assert np.ptp(tones[:, 0]) > 30                                          # skin tones vary


def test_hairs_are_drawn_over_the_lesion_and_leave_the_mask_alone():
    rng = np.random.default_rng(0)
    base = np.full((100, 120, 3), 200, np.float32)
    haired = synthetic.draw_hairs(rng, base, 10)
    assert (haired.mean(axis=2) < 120).sum() > 200                           # dark thin lines appeared
    assert np.array_equal(synthetic.draw_hairs(rng, base, 0), base)


def test_finished_sample_is_reused_and_other_settings_replace_it(tmp_path):
    root = synthetic.generate_sample(tmp_path, count=6, seed=1, progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    synthetic.generate_sample(tmp_path, count=6, seed=1, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == stamp
    first = np.asarray(Image.open(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9100000.jpg"))  # seed 1's ids
    synthetic.generate_sample(tmp_path, count=4, seed=2, progress=False)
    assert sorted(p.stem for p in root.rglob("ISIC_9*.jpg")) == [f"ISIC_920000{k}" for k in range(4)]  # seed 1's: gone
    second = np.asarray(Image.open(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9200000.jpg"))
    assert first.shape != second.shape or not np.array_equal(first, second)
    assert json.loads((root / "sample.json").read_text())["seed"] == 2


def test_interrupted_sample_is_completed(tmp_path):
    root = synthetic.generate_sample(tmp_path, count=5, seed=1, progress=False)
    (root / "sample.json").rename(root / "sample.partial.json")              # as if killed mid-way
    (root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9100004.jpg").unlink()
    kept = (root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9100000.jpg").stat().st_mtime_ns
    synthetic.generate_sample(tmp_path, count=5, seed=1, progress=False)
    assert (root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9100004.jpg").exists()
    assert (root / "ISIC2018_Task1-2_Training_Input" / "ISIC_9100000.jpg").stat().st_mtime_ns == kept
    assert (root / "sample.json").exists() and not (root / "sample.partial.json").exists()


@pytest.mark.slow
def test_a_few_hundred_images_generate(tmp_path):
    root = synthetic.generate_sample(tmp_path, count=200, seed=0, progress=False)
    assert len(list((root / "ISIC2018_Task1_Training_GroundTruth").glob("*.png"))) == 200
