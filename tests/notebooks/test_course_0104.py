"""Notebooks 01 and 04 as a student reads them: every number their text states is checked here, against the kit's
own computation or the executed notebooks and study that results/ publishes; their code-writing exercises; and
their Colab runtime (a CPU: they train nothing).

A number added to the text of 01 or 04 fails test_every_number_in_the_text_is_checked until it gets a claim below
(a sentence pattern and what it must agree with) or, if it only names something (a section, a licence version), a
place in NAMES.
"""
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import paths
from helpers.data import download, prep
from helpers.evaluation import exercises as result_exercises
from helpers.evaluation import stats
from helpers.profiles import PROFILES
from helpers.training import exercises, metrics

ROOT = Path(__file__).resolve().parents[2]
NB01, NB04 = ROOT / "notebooks" / "01_data_prep.ipynb", ROOT / "notebooks" / "04_results.ipynb"
STUDY = ROOT / "results" / "isic2018-task1-512_seed_cpu_cpu-2-cores"
NUMBER = re.compile(r"(?<![\w.−-])[−-]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _markdown(path: Path) -> str:
    return "\n\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")


def _prose(path: Path) -> str:
    """The markdown a student reads as sentences: without references, code, links and section numbers."""
    text = re.sub(r"```.*?```", " ", _markdown(path).split("## References")[0], flags=re.S)
    for pattern in (r"`[^`]*`", r"\[[^\]]*\]\([^)]*\)", r"^    .*$", r"^#+ \d+ ·", r"\bsections? \d+",
                    r"\bexercises? \d+", r"^ *\d+\. \*\*", r"(?i)\bnotebooks? 0\d(?:(?:,| to| and|/) ?0\d)*", r"\b0\d · "):
        text = re.sub(pattern, " ", text, flags=re.M)
    return text


def _number(token: str) -> float:
    return float(token.replace(",", "").replace("−", "-"))


def _claim(path: Path, pattern: str) -> re.Match:
    found = re.search(pattern, _prose(path), re.S)
    assert found, f"{path.name}: the sentence /{pattern}/ is gone; update its claim in {Path(__file__).name}"
    return found


def _published_output(notebook: Path, cell_id: str) -> str:
    cell = next(c for c in _cells(notebook) if c.get("id") == cell_id)
    texts = [o.get("text", "") for o in cell["outputs"]] + [o.get("data", {}).get("text/plain", "") for o in cell["outputs"]]
    return "".join("".join(t) for t in texts)


# ---- the claims: a sentence pattern, and what the numbers in it must agree with ---------------------------------
def claim_01_fraction_sizes():
    m = _claim(NB01, r"draws (\d+) of the ([\d,]+) images\. How many training images will its\s+10 % fraction hold\? .*?"
                     r"70 % of (\d+) is (\d+) training images, and 10 % of those is (\d+).*?(\d+) at 25 % \(([\d.]+), rounded "
                     r"to the even neighbour\), (\d+) at\s+50 %\. For all the data, 70 % of ([\d,]+) is ([\d,]+), so the 10 % "
                     r"run trains on (\d+) images")
    drawn, all_images, n, n_train, f10, f25, exact25, f50, real, real_train, real_f10 = map(_number, m.groups())
    assert drawn == n == PROFILES["demo"].data_subset and all_images == real
    assert exercises.kit_fraction_sizes(int(n), (0.1, 0.25, 0.5, 1.0)) == [f10, f25, f50, n_train]
    assert 0.25 * n_train == exact25
    assert exercises.kit_fraction_sizes(int(real), (0.1, 1.0)) == [real_f10, real_train]
    assert real == download.OFFICIAL_FILES["train_images"].count
    return m


def claim_01_profiles_sample_sizes():
    m = _claim(NB01, r"the\s+profile you ran:\s+(\d+) synthetic images,\s+(\d+) real ones,\s+and\s+all ([\d,]+)\)")
    assert PROFILES["smoke"].synthetic_count == _number(m[1]) and PROFILES["demo"].data_subset == _number(m[2])
    assert _number(m[3]) == download.OFFICIAL_FILES["train_images"].count  # cpu and class: the whole bundled archive
    assert PROFILES["cpu"].data_subset is None and PROFILES["class"].data_subset is None
    return m


def claim_01_round_half_to_even():
    m = _claim(NB01, r"with (\d+) images, (\d+) % of the (\d+) training images is ([\d.]+), which becomes (\d+)")
    n, percent, n_train, exact, rounded = map(_number, m.groups())
    assert exercises.kit_fraction_sizes(int(n), (percent / 100, 1.0)) == [rounded, n_train]
    assert percent / 100 * n_train == exact
    return m


def claim_01_split_and_fractions():
    found = [_claim(NB01, r"70 / 15 / 15"), _claim(NB01, r"70/15/15")]
    assert prep.SEED_RATIOS == (0.70, 0.15, 0.15)
    found.append(_claim(NB01, r"10, 25, 50 and 100 % of the training split"))
    found.append(_claim(NB01, r"nested 10 / 25 / 50 / 100 %"))
    assert PROFILES["t4"].fractions == (0.1, 0.25, 0.5, 1.0)
    found.append(_claim(NB01, r"first\s+10 % of that order, then the first 25 %"))
    return found


def claim_01_official_sets():
    m = _claim(NB01, r"official validation \((\d+)\)\s+and test \(([\d,]+)\) sets")
    assert (_number(m[1]), _number(m[2])) == (download.OFFICIAL_FILES["val_images"].count,
                                              download.OFFICIAL_FILES["test_images"].count)
    m2 = _claim(NB01, r"that is ([\d,]+) training and (\d+) validation JPEGs per epoch")  # what an epoch reads
    split = list(prep.seed_split([str(k) for k in range(download.OFFICIAL_FILES["train_images"].count)], 0).values())
    assert (_number(m2[1]), _number(m2[2])) == (split.count("train"), split.count("val"))
    assert "2594 pairs" in _published_output(STUDY / "notebooks" / NB01.name, "c06")  # the real data, as published
    return [m, m2]


def claim_01_mask_threshold_and_sizes():
    m = _claim(NB01, r"binary after thresholding at > (\d+)")
    assert "(values > 127)" in (ROOT / "helpers" / "data" / "isic.py").read_text() and m[1] == "127"
    m2 = _claim(NB01, r"downsampling to (\d+)–(\d+) px")
    assert (PROFILES["smoke"].image_size, PROFILES["t4"].image_size) == (_number(m2[1]), _number(m2[2]))
    return [m, m2]


def claim_01_original_study_and_bundled_archive():
    """The original study's headline Dice, the bundled archive's pixel size and megabytes, the ITA groups' ends."""
    from helpers.data import bundled
    from helpers.evaluation import image_factors
    from helpers.reporting import report

    study = _claim(NB01, r"reported a mean per-image test Dice of (0\.\d+) for UNet\+\+ on all\s+the data")
    assert round(report.REFERENCE_DICE["unetpp"][1.0], 3) == _number(study[1])
    archive = _claim(NB01, r"bundled with the kit at (\d+) × (\d+) pixels \(\s*, (\d+) MB\)")
    assert _number(archive[1]) == _number(archive[2]) == bundled.RESOLUTION == PROFILES["cpu"].image_size
    if bundled.archive_path().is_file():  # the archive, as committed
        assert round(bundled.archive_path().stat().st_size / 1e6) == _number(archive[3])
    rule = _claim(NB01, r"Rulers are not counted on their own: at (\d+) px")
    assert _number(rule[1]) == bundled.RESOLUTION
    ita = _claim(NB01, r"from\s+very light \(above (\d+)°\) to dark \(below (−\d+)°\)")
    assert (_number(ita[2]), _number(ita[1])) == (image_factors.ITA_EDGES[0], image_factors.ITA_EDGES[-1])
    return [study, archive, rule, ita]


def claim_04_dice_iou():
    m = _claim(NB04, r"Dice (0\.\d+) ≈ IoU (0\.\d+)")
    dice = _number(m[1])
    assert round(dice / (2 - dice), 2) == _number(m[2])  # IoU = Dice / (2 − Dice) for one image
    return m


def claim_04_pooled_vs_per_image():
    m = _claim(NB04, r"large lesion's (\d+)\s+missed and (\d+) extra pixels dominate it \((0\.\d+)\)\. Per image, the "
                     r"large lesion scores (0\.\d+) and the tiny one ([\d.]+),\s+a mean of (0\.\d+)")
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:56, 8:56], masks[1, 30:34, 30:34] = True, True  # the notebook's toy masks
    preds = masks.copy()
    preds[0] = np.roll(masks[0], 4, axis=1)
    tp, fp, fn, tn = (np.asarray(c, float) for c in metrics.confusion_counts(preds, masks))
    per_image = 2 * tp / (2 * tp + fp + fn)
    pooled = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    assert (_number(m[1]), _number(m[2])) == (fn[0], fp[0])
    assert [_number(m[k]) for k in (3, 4, 5, 6)] == [round(pooled, 3), round(per_image[0], 3), per_image[1],
                                                     round(per_image.mean(), 3)]
    return m


def claim_04_reading_an_interval():
    question = _claim(NB04, r"differ by (0\.\d+) and the 95 % CI of the paired difference runs from\s+(−\d\.\d+) to (\d\.\d+)")
    low, high = _number(question[2]), _number(question[3])
    inside = _claim(NB04, r"inside the interval fits them: (0) \(no difference\), (0\.\d+), (0\.\d+), and (−0\.\d+)")
    assert all(low <= _number(v) <= high for v in inside.groups()) and low <= _number(question[1]) <= high
    outside = _claim(NB04, r"(−0\.\d+) lies below (−0\.\d+), so B is not better by (0\.\d+), and A is not better by (0\.\d+)")
    assert _number(outside[1]) < low == _number(outside[2]) and -_number(outside[3]) < low < high < _number(outside[4])
    return [question, inside, outside]


def claim_04_overlapping_bands():
    """The real-data study's 100 % row: overlapping CIs, yet a paired difference; as its published 04 shows them."""
    m = _claim(NB04, r"UNet\+\+ scores a mean Dice of\s+(0\.\d+) \[(0\.\d+), (0\.\d+)\] and UNet (0\.\d+) "
                     r"\[(0\.\d+), (0\.\d+)\]: "
                     r"the bands overlap, yet the paired difference UNet − UNet\+\+ is\s+(−0\.\d+) \[(−0\.\d+), (−0\.\d+)\] "
                     r"with a Holm-adjusted p of (0\.\d+)")
    values = [_number(v) for v in m.groups()]
    summary = pd.read_csv(STUDY / "summary.csv").set_index(["model", "fraction"])
    for model, (mean, low, high) in (("unetpp", values[0:3]), ("unet", values[3:6])):
        row = summary.loc[(model, 1.0)]
        assert [round(row[c], 3) for c in ("dice_mean", "dice_ci_low", "dice_ci_high")] == [mean, low, high]
    assert values[4] < values[2] and values[1] < values[5]  # the two bands overlap
    table = _published_output(STUDY / "notebooks" / NB04.name, "c10")
    assert f"[{values[1]:.3f}, {values[2]:.3f}]" in table and f"[{values[4]:.3f}, {values[5]:.3f}]" in table
    paired = _published_output(STUDY / "notebooks" / NB04.name, "c14")
    row = next(line for line in paired.splitlines() if re.search(r"100 %\s+unet vs unetpp", line))
    assert f"{values[6]:.3f} [{values[7]:.3f}, {values[8]:.3f}]" in row, row
    holm = next(line for line in paired.splitlines() if line.startswith("11 ") and "unetpp better" in line)
    assert f"{round(float(holm.split()[-3]), 4)}" == f"{values[9]}", holm
    return m


def _gap_and_failures(run_prefix: str) -> tuple[float, float, float]:
    """A committed-study run's mean IoU − mean thresholded Jaccard, share of failed images, their mean IoU."""
    scores = pd.read_csv(next((STUDY / "runs").glob(f"{run_prefix}_*")) / "test_metrics.csv")
    failed = scores["jaccard_thresholded"] == 0
    return scores["iou"].mean() - scores["jaccard_thresholded"].mean(), failed.mean(), scores.loc[failed, "iou"].mean()


def claim_04_gap_is_not_the_failed_share():
    m = _claim(NB04, r"the best\s+run \(UNet\+\+, 100 %\) has a gap of (0\.\d+) while ([\d.]+) % of its images failed, with a "
                     r"mean IoU of (0\.\d+) among them:\s+(0\.\d+) × (0\.\d+) ≈ (0\.\d+)\. UNet at 100 %: a gap of (0\.\d+), "
                     r"with ([\d.]+) % failed")
    gap, percent, failed_iou, share, failed_iou_again, product, unet_gap, unet_percent = map(_number, m.groups())
    summary = pd.read_csv(STUDY / "summary.csv")
    assert summary.loc[summary["dice_mean"].idxmax(), "run_id"].startswith("unetpp-cpu+deep_supervision_f100")
    real_gap, real_share, real_iou = _gap_and_failures("unetpp-cpu+deep_supervision_f100")
    assert round(real_gap, 3) == gap == product and round(100 * real_share, 1) == percent
    assert round(real_share, 3) == share and round(real_iou, 3) == failed_iou == failed_iou_again
    assert abs(share * failed_iou - product) < 0.0005
    real_gap, real_share, _ = _gap_and_failures("unet-cpu_f100")
    assert (round(real_gap, 3), round(100 * real_share, 1)) == (unet_gap, unet_percent)
    return m


def claim_04_prediction_costs_on_a_cpu():
    """What 04's predictions cost on a CPU runtime, as results/benchmarks/predict-sizes-cpu-1thread.csv measured."""
    bench = pd.read_csv(ROOT / "results" / "benchmarks" / "predict-sizes-cpu-1thread.csv").set_index(["profile", "model"])
    models = ["unet", "unetpp", "transunet"]
    t4_ms, cpu_ms = (bench.loc[profile].loc[models, "cpu_ms_per_image_batch4"] for profile in ("t4", "cpu"))
    m = _claim(NB04, r"one thread of a shared (\d)-core machine .*?one (\d+)-px test image costs UNet (\d\.\d) s, UNet\+\+ "
                     r"(\d\.\d) s and TransUNet (\d\.\d) s at\s+sizes, so the (\d+) test images of\s+the real data's seed split "
                     r"take about (\d+) CPU-minutes for the (\d+)\s+runs \(roughly an hour on Colab's (\d) cores, an\s+"
                     r"estimate\)\. "
                     r"The\s+runs \((\d+) px\) cost (\d+) to (\d+) ms per image, about (\d+) CPU-minutes for all (\d+)\.")
    cores, size, unet, unetpp, transunet, n_test, t4_total, runs, colab_cores, cpu_size, low, high, cpu_total, runs_again = \
        map(_number, m.groups())
    assert bench["cpu_count"].eq(cores).all() and bench["threads"].eq(1).all() and colab_cores == 2
    assert (size, cpu_size) == (PROFILES["t4"].image_size, PROFILES["cpu"].image_size) == (bench.loc["t4", "image_size"].iloc[0],
                                                                                          bench.loc["cpu", "image_size"].iloc[0])
    assert [unet, unetpp, transunet] == [round(ms / 1000, 1) for ms in t4_ms]
    assert list(prep.seed_split([str(k) for k in range(2594)], 0).values()).count("test") == n_test
    assert "389" in _published_output(STUDY / "notebooks" / NB04.name, "c10")  # n test, as published
    assert runs == runs_again == len(models) * len(PROFILES["t4"].fractions)
    per_model = n_test * len(PROFILES["t4"].fractions) / 60_000  # ms per image → minutes for one model's four runs
    assert round(t4_ms.sum() * per_model) == t4_total and round(cpu_ms.sum() * per_model) == cpu_total
    assert (low, high) == (cpu_ms.min(), cpu_ms.max())
    viewer = _claim(NB04, r"(\d+) to (\d+) ms for the\s+models, and\s+(\d\.\d) to (\d\.\d) s at\s+sizes")
    one = bench["cpu_ms_one_image"]
    assert [_number(v) for v in viewer.groups()] == [one.loc["cpu"].min(), one.loc["cpu"].max(),
                                                     round(one.loc["t4"].min() / 1000, 1), round(one.loc["t4"].max() / 1000, 1)]
    return [m, viewer]


def claim_04_definitions():
    found = [_claim(NB04, r"IoU, but 0 when IoU < (0\.65)"), _claim(NB04, r"IoU under (0\.65)"),
             _claim(NB04, r"unless that is under (0\.65)"), _claim(NB04, r"adjusted p is below (0\.05)"),
             _claim(NB04, r"p-values are Holm-adjusted"), _claim(NB04, r"values (0) and (255)")]
    assert inspect.signature(metrics.jaccard_thresholded).parameters["threshold"].default == 0.65
    assert inspect.signature(stats.verdict).parameters["alpha"].default == 0.05
    return found


def claim_04_threshold_on_a_sample_of_validation_images():
    found = _claim(NB04, r"predicts (160) validation images")
    code = "".join(next(c for c in _cells(NB04) if c.get("id") == "ev08")["source"])
    assert f'"val", count={found.group(1)})' in code
    return found


CLAIMS = {NB01: [claim_01_fraction_sizes, claim_01_profiles_sample_sizes, claim_01_round_half_to_even,
                 claim_01_split_and_fractions, claim_01_official_sets, claim_01_mask_threshold_and_sizes,
                 claim_01_original_study_and_bundled_archive],
          NB04: [claim_04_dice_iou, claim_04_pooled_vs_per_image, claim_04_reading_an_interval,
                 claim_04_overlapping_bands, claim_04_gap_is_not_the_failed_share, claim_04_prediction_costs_on_a_cpu,
                 claim_04_definitions, claim_04_threshold_on_a_sample_of_validation_images]}
# Numbers that name or define rather than claim: what they are
NAMES = {NB01: {"1": "Task 1 of ISIC 2018", "2018": "ISIC 2018", "2019": "a year", "4.0": "the licence's version",
                "5": "a journal volume", "180161": "an article number", "3": "the challenge's Task 3"},
         NB04: {"1": "Dice 1 is perfect", "2018": "ISIC 2018", "512": "the name of the 512-px copy of ISIC 2018"}}


@pytest.mark.parametrize("claim", [c for claims in CLAIMS.values() for c in claims], ids=lambda c: c.__name__)
def test_claim(claim):
    claim()


@pytest.mark.parametrize("path", [NB01, NB04], ids=lambda p: p.name)
def test_every_number_in_the_text_is_checked(path):
    checked = set()
    for claim in CLAIMS[path]:
        found = claim()
        for match in found if isinstance(found, list) else [found]:
            checked |= set(NUMBER.findall(match.group(0)))
    unchecked = sorted(set(NUMBER.findall(_prose(path))) - checked - set(NAMES[path]))
    assert not unchecked, f"{path.name}: numbers no test checks: {unchecked}"


def test_the_number_check_can_fail(monkeypatch):
    prose = _prose(NB04)
    monkeypatch.setattr(sys.modules[__name__], "_prose", lambda path: prose + " The gap is 0.123.")
    with pytest.raises(AssertionError, match="0.123"):
        test_every_number_in_the_text_is_checked(NB04)


def test_a_claim_that_disagrees_with_the_published_outputs_fails(monkeypatch):
    wrong = _prose(NB04).replace("Holm-adjusted p of 0.0035", "Holm-adjusted p of 0.35")
    monkeypatch.setattr(sys.modules[__name__], "_prose", lambda path: wrong)
    with pytest.raises(AssertionError):
        claim_04_overlapping_bands()


def test_the_zips_stay_on_the_runtime_not_on_drive(tmp_path, monkeypatch):
    """01 says the official zips go to the runtime's disk on Colab (not Drive) unless DATA_DIR is a Drive folder."""
    home, local = tmp_path / "drive" / "MyDrive" / "skin-lesion-kit", tmp_path / "content" / "kit-local"
    monkeypatch.setenv("KIT_HOME", str(home))
    monkeypatch.setenv("KIT_LOCAL_DIR", str(local))
    assert paths.downloads_dir().is_relative_to(local) and not paths.downloads_dir().is_relative_to(home)
    text = _markdown(NB01)
    assert "**not to Drive**" in text and "kept in the kit's home on Drive" not in text


# ---- the code-writing exercises ---------------------------------------------------------------------------------
def _answer_code(path: Path, name: str) -> str:
    """The python block of the answer that defines ``name``."""
    blocks = re.findall(r"```python\n(.*?)```", _markdown(path), re.S)
    return next(b for b in blocks if f"def {name}(" in b)


def _defined(code: str, name: str):
    namespace = {"np": np}
    exec(compile(textwrap.dedent(code), name, "exec"), namespace)  # the notebook's own answer
    return namespace[name]


def test_the_answers_in_the_notebooks_are_right():
    assert exercises.check_fraction_sizes(_defined(_answer_code(NB01, "fraction_sizes"), "fraction_sizes")).status == "right"
    assert result_exercises.check_bootstrap_ci(_defined(_answer_code(NB04, "bootstrap_ci"), "bootstrap_ci")).status == "right"


@pytest.mark.parametrize("path, name", [(NB01, "fraction_sizes"), (NB04, "bootstrap_ci")])
def test_the_blank_exercise_in_the_notebook_is_not_done_yet(path, name):
    cell = next("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code" and f"def {name}(" in "".join(c["source"]))
    blank = _defined(cell, name)
    check = {"fraction_sizes": exercises.check_fraction_sizes, "bootstrap_ci": result_exercises.check_bootstrap_ci}[name]
    verdict = check(blank)
    assert verdict.status == "not done yet" and "complete the function" in repr(verdict)
    assert any(f"exercises.check_{name}({name})" in "".join(c["source"]) for c in _cells(path))


def test_fraction_sizes_wrong_answers_get_a_hint():
    def half_up(n_images, fractions):
        n_train = int(0.7 * n_images + 0.5)
        return [int(f * n_train + 0.5) for f in fractions]

    def of_all_images(n_images, fractions):
        return [round(f * n_images) for f in fractions]

    for wrong in (half_up, of_all_images, lambda n, f: "ten", lambda n, f: 1 / 0):
        verdict = exercises.check_fraction_sizes(wrong)
        assert verdict.status == "not yet", wrong
    assert "round(10.5) is 10" in repr(exercises.check_fraction_sizes(half_up))
    assert "ZeroDivisionError" in repr(exercises.check_fraction_sizes(lambda n, f: 1 / 0))


def test_bootstrap_ci_right_and_wrong_answers():
    def kit(values, n_boot=2000, seed=0):
        return stats.bootstrap_ci(values, n_boot, 0.95, seed)

    def ninety(values, n_boot=2000, seed=0):
        return stats.bootstrap_ci(values, n_boot, 0.90, seed)

    def spread_of_values(values, n_boot=2000, seed=0):
        return tuple(np.percentile(values, [2.5, 97.5]))

    def raises(values, n_boot=2000, seed=0):
        raise NotImplementedError

    def normal(values, n_boot=2000, seed=0):  # mean ± 1.96·sd/√n: right for symmetric scores only
        half = 1.96 * np.std(values) / np.sqrt(len(values))
        return np.mean(values) - half, np.mean(values) + half

    assert result_exercises.check_bootstrap_ci(kit).status == "right"
    for wrong in (ninety, spread_of_values, lambda v, n, s: 0.5):
        assert result_exercises.check_bootstrap_ci(wrong).status == "not yet", wrong
    assert "Hint" in repr(result_exercises.check_bootstrap_ci(ninety))
    assert result_exercises.check_bootstrap_ci(raises).status == "not done yet"
    verdict = result_exercises.check_bootstrap_ci(normal)
    assert verdict.status == "not yet" and "normal approximation" in repr(verdict)


# ---- a CPU runtime for the notebooks that train nothing ---------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_only_the_training_notebooks_ask_colab_for_a_gpu(path):
    metadata = json.loads(path.read_text())["metadata"]
    if path.name.startswith(("02", "03")):
        assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4"
    else:
        assert "accelerator" not in metadata and "gpuType" not in metadata.get("colab", {}), \
            f"{path.name} trains nothing: its Colab badge should open a CPU runtime"
