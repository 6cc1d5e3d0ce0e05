"""The shipped models' cards are ones a model hub reads: YAML front matter with the licence, tags, dataset and the
test metrics' values (true to the committed per-image scores), then intended use, out-of-scope use and limitations."""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.evaluation import model_card

ROOT = Path(__file__).resolve().parents[2]
CARDS = sorted(ROOT.glob("results/*/runs/*/MODEL_CARD.md"))


def _front(text: str) -> dict:
    assert text.startswith("---\n"), "a model card starts with YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_there_are_shipped_cards():
    assert len(CARDS) >= 3


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name.split("_")[0])
def test_a_shipped_card_has_hub_metadata_with_the_committed_values(card):
    text = card.read_text()
    front = _front(text)
    assert front["license"] == "cc-by-nc-4.0" and front["pipeline_tag"] == "image-segmentation"
    assert {"dermoscopy", "skin-lesion", "image-segmentation"} <= set(front["tags"])
    assert front["datasets"] == ["the official ISIC 2018 Task 1 training set, 512-px centre-cropped copy"]
    scores = pd.read_csv(card.parent / "test_metrics.csv")
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"dice": round(scores["dice"].mean(), 4), "iou": round(scores["iou"].mean(), 4),
                       "jaccard": round(scores["jaccard_thresholded"].mean(), 4)}
    summary = pd.read_csv(card.parents[2] / "summary.csv").set_index("run_id")
    assert metrics["dice"] == round(summary.loc[card.parent.name, "dice_mean"], 4)
    for section in ("## Intended use", "## Out-of-scope use", "## Limitations"):
        assert section in text, f"{card}: no {section}"
    assert "Not for diagnosis" in text and "not dermoscopy" in text and "Dermoscopy only" in text
    assert "most training images show light skin" in text and model_card.SKIN_TONE_MEASURED in text
    assert "../shared" not in text


def test_the_hub_licence_follows_the_data():
    assert model_card.hub_licence("isic2018_task1_512") == "cc-by-nc-4.0"
    assert model_card.hub_licence("isic2018-task1-128") == "cc-by-nc-4.0"
    assert model_card.hub_licence("synthetic-200-s0") == "mit" and model_card.hub_licence("my-photos") == "other"
    assert "bundled 128-px archive" in model_card.data_description("isic2018-task1-128")
