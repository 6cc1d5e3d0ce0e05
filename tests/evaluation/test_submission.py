"""Challenge export: file names, sizes and values, and the official scorer agreeing with the kit."""
import json
import zipfile

import numpy as np
import pytest
from isic_challenge_scoring import metrics as isic_metrics
from isic_challenge_scoring.confusion import create_binary_confusion_matrix
from isic_challenge_scoring.load_image import iter_image_pairs
from isic_challenge_scoring.segmentation import SegmentationScore
from PIL import Image

from helpers.evaluation import challenge, inference
from tests.builders import Brightness, make_run, shifted_prepared

# isic-challenge-scoring 5.6.0 itself calls a pandas method that pandas 3 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return shifted_prepared(tmp_path_factory.mktemp("submission"))


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "tta+post"])
def exported(request, prepared, tmp_path_factory):
    post = request.param
    out = tmp_path_factory.mktemp("export")
    kit = inference.evaluate(Brightness(), prepared, tta=post, post=post, with_hd95=False,
                            progress=False)
    challenge.export_predictions(Brightness(), prepared, out / "pred", tta=post, post=post,
                                  progress=False)
    challenge.export_truth(prepared, out / "truth")
    return kit.table.set_index("isic_id"), out


def test_files_are_named_sized_and_valued_as_the_challenge_expects(prepared, exported):
    _, out = exported
    rows = prepared.indices("test")
    files = sorted(p.name for p in (out / "pred").iterdir())
    assert files == sorted(f"{i}_segmentation.png" for i in prepared.table["isic_id"].iloc[rows])
    for row in rows:
        isic_id = prepared.table["isic_id"].iloc[row]
        with Image.open(out / "pred" / challenge.mask_filename(isic_id)) as png:
            assert png.mode == "L"
            assert png.size == (prepared.table["orig_width"].iloc[row], prepared.table["orig_height"].iloc[row])
            assert set(np.unique(np.asarray(png))) <= {0, 255}


def test_official_scorer_gives_the_kits_per_image_scores(exported):
    kit, out = exported
    pairs = list(iter_image_pairs(out / "truth", out / "pred"))
    assert len(pairs) == len(kit)
    for pair in pairs:
        cm = create_binary_confusion_matrix(pair.truth_image > 128, pair.prediction_image > 128)
        mine = kit.loc[pair.image_id]
        assert isic_metrics.binary_jaccard(cm) == pytest.approx(mine["iou_orig"], abs=1e-6)
        assert isic_metrics.binary_threshold_jaccard(cm) == pytest.approx(mine["jaccard_thresholded_orig"], abs=1e-6)
        assert isic_metrics.binary_dice(cm) == pytest.approx(mine["dice_orig"], abs=1e-6)
        assert isic_metrics.binary_accuracy(cm) == pytest.approx(mine["accuracy_orig"], abs=1e-6)
    score = SegmentationScore.from_dir(out / "truth", out / "pred")
    assert score.overall == pytest.approx(kit["jaccard_thresholded_orig"].mean(), abs=1e-6)
    assert score.macro_average["dice"] == pytest.approx(kit["dice_orig"].mean(), abs=1e-6)
    assert score.macro_average["jaccard"] == pytest.approx(kit["iou_orig"].mean(), abs=1e-6)


def test_zip_is_flat(exported, tmp_path):
    _, out = exported
    path = challenge.zip_folder(out / "pred", tmp_path / "sub.zip")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert len(names) == 6 and all("/" not in n and n.endswith("_segmentation.png") for n in names)


def test_export_run_uses_the_runs_evaluation_settings(prepared, tmp_path):
    run_dir = make_run(tmp_path, "unet_f100", "unet", 1.0, prepared.root)
    (run_dir / "eval.json").write_text(json.dumps({"tta": True, "postprocess": True, "threshold": 0.7}))
    seen = {}

    def load(path):
        seen["run"] = path
        return Brightness()

    path = challenge.export_run(run_dir, load_model=load, progress=False)
    assert path == run_dir / "submission.zip" and seen["run"] == run_dir
    assert len(list((run_dir / "submission").glob("ISIC_*_segmentation.png"))) == 6


def test_missing_truth_file_is_named(prepared, tmp_path):
    table = prepared.table.copy()
    table["mask_path"] = str(tmp_path / "gone.png")
    moved = type(prepared)(tmp_path, prepared.images, prepared.masks, table, prepared.manifest)  # no originals.zip
    with pytest.raises(FileNotFoundError, match=r"gone.png nor in .*originals.zip"):
        challenge.export_truth(moved, tmp_path / "truth")
