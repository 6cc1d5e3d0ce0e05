"""Image factors, Dice by group, the threshold and calibration: known answers on synthetic data."""

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import profiles
from helpers.evaluation import calibration, image_factors, inference, shipped
from helpers.reporting import evidence

SIDE = 64


def skin(lab) -> np.ndarray:
    """uint8 (SIDE, SIDE, 3): a uniform sRGB image of one CIELAB colour (L*, a*, b*)."""
    pixel = cv2.cvtColor(np.array([[lab]], np.float32), cv2.COLOR_LAB2RGB)  # RGB in [0, 1]
    return np.broadcast_to(
        np.round(np.clip(pixel, 0, 1) * 255).astype(np.uint8), (SIDE, SIDE, 3)
    ).copy()


def lesion(top=24, left=24, size=16) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


@pytest.mark.parametrize(
    "lab, angle, group",
    [
        ((70, 10, 15), 53.13, "light"),
        ((80, 5, 10), 71.57, "very light"),
        ((45, 12, 20), -14.04, "brown"),
        ((30, 10, 20), -45.0, "dark"),
    ],
)
def test_a_uniform_skin_of_known_colour_gives_its_ita(lab, angle, group):
    image = skin(lab)
    image[lesion().astype(bool)] = skin((30, 20, 20))[0, 0]
    row = image_factors.image_factors(image[None], lesion()[None]).iloc[0]
    assert row["ita"] == pytest.approx(angle, abs=1.5) and row["ita_group"] == group
    assert row["skin_L"] == pytest.approx(lab[0], abs=1) and row["skin_b"] == pytest.approx(
        lab[2], abs=1
    )


def test_ita_formula_and_the_standard_groups():
    assert image_factors.ita(50, 10) == pytest.approx(0) and image_factors.ita(
        60, 10
    ) == pytest.approx(45)
    assert (
        image_factors.ita(70, -5) > 90
    )  # a bluish ring (b* < 0) reads as very light, not an error
    groups = image_factors.ita_group([56, 55, 41.5, 41, 28.5, 10.5, 10, -29, -30, -31, np.nan])
    assert list(groups[:-1]) == [
        "very light",
        "light",
        "light",
        "intermediate",
        "intermediate",
        "tan",
        "brown",
        "brown",
        "dark",
        "dark",
    ] and pd.isna(groups[-1])


def test_size_edge_contact_and_contrast():
    image = skin((70, 10, 15))
    image[lesion().astype(bool)] = skin((30, 10, 15))[0, 0]  # 40 L* darker, same hue
    inside, at_edge = lesion(), lesion(top=0)
    table = image_factors.image_factors(
        np.stack([image, image]), np.stack([inside, at_edge]), ids=["a", "b"]
    )
    assert table["isic_id"].tolist() == ["a", "b"]
    assert table["lesion_pct"].tolist() == pytest.approx([100 * 256 / SIDE**2] * 2)
    assert table["edge_contact"].tolist() == [False, True]
    assert table["contrast"][0] == pytest.approx(40, abs=1.5)


def test_dark_frame_is_a_dark_outer_tenth_and_is_left_out_of_the_skin():
    image = skin((70, 10, 15))
    framed = image.copy()
    framed[:, :8] = framed[:, -8:] = 0  # black left and right bands: half of the outer tenth
    rows = image_factors.image_factors(np.stack([image, framed]), np.stack([lesion(), lesion()]))
    assert rows["dark_frame"].tolist() == [False, True]
    assert rows["ita"][1] == pytest.approx(
        rows["ita"][0], abs=0.5
    )  # black pixels never count as skin


def test_hair_and_ink_on_the_skin():
    plain = skin((70, 10, 15))
    hairy = plain.copy()
    hairy[4:60:8, :] = 40  # thin dark lines across the skin
    inked = plain.copy()
    inked[4:12, 4:12] = (110, 40, 160)  # a purple marker dot
    rows = image_factors.image_factors(np.stack([plain, hairy, inked]), np.stack([lesion()] * 3))
    assert rows["hair"].tolist() == [False, True, False]
    assert rows["ink"].tolist() == [False, False, True]


def test_a_lesion_that_fills_the_image_has_no_skin():
    row = image_factors.image_factors(
        skin((60, 10, 15))[None], np.ones((1, SIDE, SIDE), np.uint8)
    ).iloc[0]
    assert (
        row["lesion_pct"] == 100
        and row["edge_contact"]
        and np.isnan(row["ita"])
        and np.isnan(row["contrast"])
    )


def test_one_mask_per_image():
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        image_factors.image_factors(np.stack([skin((70, 0, 10))] * 2), lesion()[None])


def test_quartiles_and_dice_by_group_with_bootstrap_intervals():
    values = np.arange(20.0)
    labels = image_factors.quartiles(values, "contrast")
    assert pd.Series(labels).value_counts().tolist() == [5, 5, 5, 5]
    assert labels[0] == "Q1 (lowest contrast)" and labels[-1] == "Q4 (highest contrast)"
    table = pd.DataFrame({"q": labels, "dice": np.r_[np.full(5, 0.5), np.full(15, 0.9)]})
    groups = image_factors.by_group(table, "q")
    assert groups["n"].tolist() == [5, 5, 5, 5] and groups["mean"].tolist() == pytest.approx(
        [0.5, 0.9, 0.9, 0.9]
    )
    assert groups[["ci_low", "ci_high"]].iloc[0].tolist() == pytest.approx(
        [0.5, 0.5]
    )  # no spread, no width
    spread = image_factors.by_group(
        pd.DataFrame({"g": ["x"] * 40, "dice": np.linspace(0, 1, 40)}), "g"
    )
    assert spread["ci_low"][0] < 0.5 < spread["ci_high"][0]


def test_dice_by_threshold_and_the_best_threshold():
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    probs = np.where(
        masks, 0.7, 0.2
    )  # lesion at 0.7, skin at 0.2: any threshold in (0.2, 0.7] is perfect
    curve = calibration.dice_by_threshold(probs, masks, [0.1, 0.5, 0.8])
    assert curve["dice"].tolist() == pytest.approx([2 * 16 / (16 + 64), 1.0, 0.0])
    assert calibration.best_threshold(curve) == (0.5, 1.0)


def test_reliability_of_a_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(50, 32, 32))
    masks = rng.uniform(size=probs.shape) < probs  # lesion with exactly the predicted probability
    table = calibration.reliability(probs, masks)
    assert table["pixels"].sum() == probs.size and len(table) == 10
    assert calibration.calibration_error(table) < 0.01
    sure = calibration.reliability(np.full((1, 10, 10), 0.95), np.zeros((1, 10, 10), bool))
    assert calibration.calibration_error(sure) == pytest.approx(0.95)
    assert sure["pixels"].tolist() == [0] * 9 + [100] and np.isnan(sure["observed"][0])


def test_the_shipped_models_are_the_bundled_seed_split():
    """The committed study's test images are the bundled archive's test split under the cpu
    profile's settings."""
    found = shipped.shipped_runs()
    assert list(found) == ["UNet", "UNet++", "TransUNet"]
    cpu = profiles.resolve_config("cpu")
    for run in found.values():
        config = shipped.runs.load_run_config(run)
        assert (config["image_size"], config["split_seed"], config["protocol"]) == (
            cpu.image_size,
            cpu.split_seed,
            "seed",
        )
        scores = pd.read_csv(run / inference.METRICS_FILE)
        assert (
            len(scores) == 389 and scores["isic_id"].is_unique and shipped.runs.has_checkpoint(run)
        )


def test_the_evidence_figures_draw():
    table = image_factors.by_group(
        pd.DataFrame({"g": ["a", "a", "b"], "dice": [0.8, 0.9, 0.7]}), "g"
    )
    assert evidence.dice_by_groups({"factor": table}).axes
    factors = pd.DataFrame({"ita": [60.0, 20.0, np.nan]})
    factors["ita_group"] = image_factors.ita_group(factors["ita"])
    assert len(evidence.ita_histogram(factors).axes) == 2
    probs = np.random.default_rng(1).uniform(size=(3, 8, 8))
    masks = probs > 0.5
    fig = evidence.threshold_and_reliability(
        calibration.dice_by_threshold(probs, masks), calibration.reliability(probs, masks)
    )
    assert len(fig.axes) == 2
    worst = pd.DataFrame(
        {
            "isic_id": ["x"],
            "dice": [0.1],
            "lesion_pct": [5.0],
            "contrast": [3.0],
            "ita_group": ["tan"],
        }
    )
    image = skin((70, 10, 15))[None]
    fig = evidence.worst_cases(image, lesion()[None], lesion(top=0)[None], worst)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["truth (annotator's mask)", "prediction"]


@pytest.mark.slow
def test_the_model_cards_skin_tone_figures_are_the_bundled_archives(tmp_path, monkeypatch):
    """The ITA counts a model card states are what image_factors measures on all 2,594 bundled images."""
    import re

    from helpers.evaluation import model_card, shipped

    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    every = shipped.bundled_data()
    factors = image_factors.image_factors(np.asarray(every.images), np.asarray(every.masks))
    counts = factors["ita_group"].value_counts()
    stated = {name: int(n.replace(",", "")) for name, n in
              re.findall(r"(very light|light|intermediate|tan|brown|dark) ([\d,]+) \(", model_card.SKIN_TONE_MEASURED)}
    assert stated == {name: int(counts[name]) for name in image_factors.ITA_GROUPS}
    assert f"{int(factors['ita'].isna().sum())} without skin" in model_card.SKIN_TONE_MEASURED


def test_the_test_factors_are_measured_once_per_preparation(tmp_path, monkeypatch):
    """Kept beside the preparation, read back equal (ITA groups a category again); a file written by other
    measuring code (another hash in its name) is not read."""
    from types import SimpleNamespace

    images = np.stack([skin((70, 10, 15)), skin((40, 15, 30)), skin((60, 5, 10))])
    masks = np.stack([lesion(), lesion(top=0), lesion(size=30)])
    table = pd.DataFrame({"isic_id": ["a", "b", "c"], "split": ["test", "train", "test"]})
    prepared = SimpleNamespace(root=tmp_path, images=images, masks=masks, table=table)
    (tmp_path / "test_factors_0123456789ab.csv").write_text("isic_id,ita\nzzz,1.0\n")  # other code's file
    first = shipped.test_factors(prepared)
    assert first["isic_id"].tolist() == ["a", "c"]
    kept = [p for p in tmp_path.glob("test_factors_*.csv") if "0123456789ab" not in p.name]
    assert len(kept) == 1

    def measured_again(*_args, **_kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(image_factors, "image_factors", measured_again)
    again = shipped.test_factors(prepared)
    pd.testing.assert_frame_equal(again, first)
    assert isinstance(again["ita_group"].dtype, pd.CategoricalDtype)


def test_data_prepared_again_in_the_same_folder_has_its_factors_measured_again(tmp_path):
    from types import SimpleNamespace

    table = pd.DataFrame({"isic_id": ["a"], "split": ["test"]})
    (tmp_path / "source_stamp.json").write_text('{"hash": "first"}')
    before = shipped.test_factors(SimpleNamespace(root=tmp_path, images=skin((70, 10, 15))[None],
                                                  masks=lesion()[None], table=table))
    (tmp_path / "source_stamp.json").write_text('{"hash": "second"}')  # the archive changed: prepared again
    after = shipped.test_factors(SimpleNamespace(root=tmp_path, images=skin((40, 15, 30))[None],
                                                 masks=lesion()[None], table=table))
    assert after["ita"][0] != before["ita"][0] and len(list(tmp_path.glob("test_factors_*.csv"))) == 2
