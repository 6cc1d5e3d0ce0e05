"""Notebooks 02 and 03: the helpers behind their new teaching cells and exercises, and their claims.

Every number the markdown of 02 and 03 states is checked here: against the models themselves (sizes, FLOPs), against
the kit's loss (the answers' numbers), or against the executed notebooks and study tables that ``results/`` publishes.
"""
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers.evaluation import inference
from helpers.models import build_model
from helpers.models.summary import images_within, layer_shapes, model_table
from helpers.reporting import diagrams
from helpers.training import model_exercises
from helpers.training.losses import DiceBCELoss, soft_dice_loss

ROOT = Path(__file__).resolve().parents[2]
NB02, NB03 = ROOT / "notebooks" / "02_unet.ipynb", ROOT / "notebooks" / "03_unetpp_transunet.ipynb"
DEMO = ROOT / "results" / "demo_notebooks"
REAL = ROOT / "results" / "isic2018-task1-512_seed_cpu_cpu-2-cores"


def _markdown(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")


def _output(path: Path, cell_id: str) -> str:
    """The text of one executed cell's outputs (streams and text/plain); empty if the notebook has no such cell."""
    cell = next((c for c in json.loads(path.read_text())["cells"] if c.get("id") == cell_id), {})
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


def _table_rows(text: str, first: str) -> dict[str, list[float]]:
    """Rows of a printed DataFrame whose label (after the index) matches ``first``: label → its numbers."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if words and re.fullmatch(first, words[1] if words[0].isdigit() and len(words) > 1 else words[0]):
            label = words[1] if words[0].isdigit() else words[0]
            rows[label] = [float(w) for w in words[words.index(label) + 1:]]
    return rows


# ---- helpers ------------------------------------------------------------------------------------------------------
def test_head_losses_are_each_heads_dice_bce_and_their_mean_is_the_loss():
    torch.manual_seed(0)
    heads = [torch.randn(2, 1, 8, 8) for _ in range(4)]
    masks = (torch.rand(2, 1, 8, 8) > 0.5).float()
    by_hand = torch.stack([0.5 * soft_dice_loss(h, masks) + 0.5 * F.binary_cross_entropy_with_logits(h, masks)
                           for h in heads])
    loss = DiceBCELoss()
    assert torch.allclose(loss.head_losses(heads, masks), by_hand)
    assert torch.allclose(loss(heads, masks), by_hand.mean())
    assert loss.head_losses(heads[0], masks).shape == (1,) and torch.allclose(loss(heads[0], masks), by_hand[0])


def test_layer_shapes_show_every_stage_of_an_encoder():
    model = build_model("unetpp", "r34")
    table = layer_shapes(model, 64)
    stages = table[table["block"].str.startswith("encoder")]
    assert list(stages["block"]) == [f"encoder[{k}]" for k in range(6)]
    assert [shape[-1] for shape in stages["output shape"]] == [64, 32, 16, 8, 4, 2]  # not only the first map
    assert [shape[1] for shape in stages["output shape"]][1:] == [64, 64, 128, 256, 512]  # ResNet-34's stages
    assert stages["params"].iloc[0] == sum(p.numel() for p in model.encoder.parameters())
    assert stages["params"].iloc[1:].eq(0).all()


def test_unetpp_grid_draws_every_node_skip_and_head_from_the_model():
    fig = diagrams.unetpp_grid(build_model("unetpp", "tiny", deep_supervision=True), 64)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    nodes = [t for t in texts if t.startswith("x_")]
    assert len(nodes) == 15 and "x_4_0\n64 ch · 4 px" in nodes and "x_0_4\n4 ch · 64 px" in nodes
    assert sum(t.startswith("head L") for t in texts) == 4 and len(ax.patches) == 15 + 4
    arrows = sum(type(a).__name__ == "Annotation" for a in ax.get_children())
    assert arrows == 4 + 10 + 20 + 4  # pooling, up-sampling, dense skips (Σ j over the nodes), heads
    plain = diagrams.unetpp_grid(build_model("unetpp", "tiny"), 64).axes[0]
    assert not any(t.get_text().startswith("head") for t in plain.texts)


def test_unetpp_grid_reads_an_encoders_stages_as_the_first_column():
    shapes = diagrams.node_shapes(layer_shapes(build_model("unetpp", "r34"), 64))
    assert shapes[(5, 0)] == (1, 512, 2, 2) and shapes[(0, 5)][-1] == 64 and len(shapes) == 21


def test_attention_shares_of_even_and_of_corner_attention():
    side, mask = 4, np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1  # the four centre tokens are lesion
    even = diagrams.attention_shares(np.full((16, 16), 1 / 16), mask)
    assert np.allclose(even["times_even"], 1) and list(even["tokens"]) == [1, 4, 12, 4]
    corners = np.zeros((16, 16))
    corners[:, [0, 3, 12, 15]] = 0.25  # every query looks only at the four corners
    shares = diagrams.attention_shares(corners, mask)
    assert shares.loc["corner tokens", "share of attention"] == pytest.approx(1.0)
    assert shares.loc["lesion tokens", "share of attention"] == 0 and shares.loc["corner tokens", "times_even"] == 4
    assert diagrams.query_token(mask, side) == (1, 1)  # the lesion centre, 31.5 px: token 1 of 16 px each


def test_images_within_sizes_work_by_device_and_model():
    small, big = build_model("unetpp", "tiny", deep_supervision=True), build_model("unetpp", "small", deep_supervision=True)
    assert images_within(big, 128, 10, "cuda") > images_within(big, 128, 10, "cpu") >= 4
    assert images_within(small, 128, 10, "cpu") > images_within(big, 128, 10, "cpu")
    assert images_within(big, 128, 10, "cpu", passes=2) < images_within(big, 128, 10, "cpu")
    assert images_within(build_model("unetpp", "paper"), 256, 10, "cpu", passes=2) == 4  # t4 sizes on a CPU: a few
    assert next(big.parameters()).device.type == "cpu"  # the model itself stays where it was


def test_pruning_table_scores_a_subset_and_says_how_many(tiny):
    model = build_model("unetpp", "tiny", deep_supervision=True).eval()
    table = inference.pruning_table(model, tiny, "val", count=2)
    assert list(table["images"]) == [2] * 4 and list(table["depth"]) == ["L1", "L2", "L3", "L4"]
    assert inference.pruning_table(model, tiny, "val")["images"].iloc[0] == len(tiny.indices("val"))


# ---- exercises that write code ------------------------------------------------------------------------------------
def _dice_blank(pred, mask):
    ...


def _dice_iou(pred, mask):
    tp, fp, fn = (pred & mask).sum(), (pred & ~mask).sum(), (~pred & mask).sum()
    return tp / max(tp + fp + fn, 1)


def _dice_no_empty(pred, mask):
    tp, fp, fn = (pred & mask).sum(), (pred & ~mask).sum(), (~pred & mask).sum()
    return 2 * tp / (2 * tp + fp + fn)


def _dice_right(pred, mask):
    tp, fp, fn = (pred & mask).sum(), (pred & ~mask).sum(), (~pred & mask).sum()
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def test_dice_exercise_blank_wrong_and_right():
    assert model_exercises.check_dice_from_counts(_dice_blank).status == "not done yet"
    raising = model_exercises.check_dice_from_counts(lambda p, m: (_ for _ in ()).throw(NotImplementedError))
    assert raising.status == "not done yet"
    iou = model_exercises.check_dice_from_counts(_dice_iou)
    assert iou.status == "not yet" and "IoU" in iou.text
    with np.errstate(invalid="ignore"):
        empty = model_exercises.check_dice_from_counts(_dice_no_empty)
    assert empty.status == "not yet" and "perfect 1" in empty.text
    assert model_exercises.check_dice_from_counts(_dice_right).status == "right"


def _pruned_right(model, images, depth):
    nodes = {}
    for diagonal in range(depth + 1):
        for i in range(diagonal, -1, -1):
            j = diagonal - i
            if j == 0:
                inputs = images if i == 0 else model.pool(nodes[i - 1, 0])
            else:
                inputs = torch.cat([*(nodes[i, k] for k in range(j)), model.up(nodes[i + 1, j - 1])], dim=1)
            nodes[i, j] = getattr(model, f"x_{i}_{j}")(inputs)
    return model.heads[depth - 1](nodes[0, depth])


def test_pruned_forward_exercise_blank_wrong_and_right():
    def blank(model, images, depth):
        raise NotImplementedError

    assert model_exercises.check_pruned_forward(blank).status == "not done yet"
    assert model_exercises.check_pruned_forward(lambda m, x, d: None).status == "not done yet"
    whole = model_exercises.check_pruned_forward(lambda m, x, d: m(x))  # right at L4, but computes every node
    assert whole.status == "not yet" and "does not need" in whole.text
    shifted = model_exercises.check_pruned_forward(lambda m, x, d: _pruned_right(m, x, d) + 1)
    assert shifted.status == "not yet" and "Hint" in shifted.text
    assert model_exercises.check_pruned_forward(_pruned_right).status == "right"


def test_the_answers_in_the_notebooks_pass_their_checks():
    for path, name, check in ((NB02, "dice_from_counts", model_exercises.check_dice_from_counts),
                              (NB03, "pruned_forward", model_exercises.check_pruned_forward)):
        answer = re.search(r"```python\n( *def " + name + r".*?)```", _markdown(path), re.S).group(1)
        namespace = {"torch": torch}
        exec(textwrap.dedent(answer), namespace)  # noqa: S102 (our own notebook's answer)
        assert check(namespace[name]).status == "right", path.name


# ---- claims: every number in 02's and 03's markdown ---------------------------------------------------------------
def _number(text: str, pattern: str) -> float:
    found = re.search(pattern, text, re.S)
    assert found, pattern
    return float(found.group(1))


def test_02_model_sizes_are_the_models():
    text, sizes = _markdown(NB02), model_table([("unet", n) for n in ("paper", "small")], 256).set_index("config")
    assert _number(text, r"\*\*([\d.]+) M parameters\*\*") == round(sizes.loc["paper", "params_M"], 1)
    assert _number(text, r"\*\*(\d+) GFLOPs\*\* for one 256") == round(sizes.loc["paper", "GFLOPs"])
    assert sizes.loc["small", "GFLOPs"] / sizes.loc["paper", "GFLOPs"] == pytest.approx(0.25, abs=0.01)  # a quarter
    channels = [s[1] for s in layer_shapes(build_model("unet", "paper"), 32)["output shape"]][:5]
    assert " → ".join(map(str, channels)) in text  # 64 → 128 → 256 → 512 → 1024


def _loss_numbers(lesion: slice, shift: slice, logit: float = 3.0):
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., lesion, lesion] = 1
    logits = torch.full((1, 1, 8, 8), -3.0)
    logits[..., shift, shift] = logit
    dice = 1 - soft_dice_loss(logits, masks)
    return dice.item(), F.binary_cross_entropy_with_logits(logits, masks).item()


def test_02_exercise_1_answer_is_what_the_loss_gives():
    text = _markdown(NB02)
    one, two = _loss_numbers(slice(2, 6), slice(3, 7)), _loss_numbers(slice(2, 6), slice(4, 8))
    assert f"soft Dice drops\n   from {one[0]:.2f} to {two[0]:.2f} (Dice loss {1 - one[0]:.2f} → {1 - two[0]:.2f})" in text
    assert f"BCE rises from {one[1]:.2f} to {two[1]:.2f}" in text
    growth = (1 - two[0]) / (1 - one[0]) - 1, two[1] / one[1] - 1
    assert all(abs(g - 0.6) < 0.08 for g in growth) and "Both grow by about 60 %" in text
    assert "from 9 to 4 of the 16 lesion pixels" in text and "10 more pixels" in text  # 7 + 7 - 2 wrong: 14 → 24
    dot_dice, dot_bce = _loss_numbers(slice(3, 4), slice(0, 0))
    assert f"BCE is {dot_bce:.3f}" in text and f"the Dice loss is {1 - dot_dice:.2f}" in text


def test_02_exercise_2_bottleneck_and_time_estimate():
    text = _markdown(NB02)
    assert layer_shapes(build_model("unet", "tiny"), 96)["output shape"].iloc[4][-1] == 6 and "96 → 48 → 24 → 12 → 6" in text
    assert 8 + 15 + 25 + 45 == 93 and "about\n90 minutes (an estimate" in text


def test_03_model_sizes_are_the_models():
    text = _markdown(NB03)
    sizes = model_table([(m, n) for m in ("unet", "unetpp", "transunet") for n in ("paper", "small", "cpu")], 256)
    size = sizes.set_index(["model", "config"])
    assert f"**{size.loc[('unetpp', 'paper'), 'params_M']:.1f} M parameters** and " \
           f"**{size.loc[('unetpp', 'paper'), 'GFLOPs']:.0f} GFLOPs**" in text
    assert f"than UNet ({size.loc[('unet', 'paper'), 'params_M']:.1f} M)" in text
    assert 2 / 3 < size.loc[("unetpp", "paper"), "GFLOPs"] / size.loc[("unet", "paper"), "GFLOPs"] < 1  # two thirds
    assert f"**{size.loc[('transunet', 'paper'), 'params_M']:.1f} M parameters** and " \
           f"**{size.loc[('transunet', 'paper'), 'GFLOPs']:.0f} GFLOPs**" in text
    assert f"`small` ({size.loc[('transunet', 'small'), 'params_M']:.1f} M, " \
           f"{size.loc[('transunet', 'small'), 'GFLOPs']:.0f} GFLOPs)" in text
    assert f"`cpu` ({size.loc[('transunet', 'cpu'), 'params_M']:.1f} M," in text
    needed = [(i, j) for i in range(5) for j in range(5 - i) if i + j <= 2]
    assert len(needed) == 6 and "six of the fifteen" in text


@pytest.mark.skipif(not (DEMO / "03_unetpp_transunet.ipynb").is_file(), reason="no published demo notebooks")
def test_03_exercise_2_answer_matches_the_published_runs():
    text = _markdown(NB03)
    printed = _output(DEMO / "03_unetpp_transunet.ipynb", "c18")
    columns = printed.splitlines()[0].split()[1:]  # model  transunet  unet  unetpp
    demo = {fraction: dict(zip(columns, values)) for fraction, values in _table_rows(printed, r"[01]\.\d+").items()}
    at_10, at_100 = demo["0.1"], demo["1.0"]
    assert max(at_10, key=at_10.get) == "transunet" and max(at_100.values()) - min(at_100.values()) <= 0.02
    assert (f"TransUNet leads at 10 % ({at_10['transunet']:.2f} validation\n   Dice, UNet {at_10['unet']:.2f}, "
            f"UNet++ {at_10['unetpp']:.2f})") in text
    real = pd.read_csv(REAL / "summary.csv").set_index(["model", "fraction"])["dice_mean"]
    assert real.xs(0.1, level="fraction").idxmax() == "unet" and real.xs(1.0, level="fraction").idxmax() == "unetpp"
    others = {round(real["unetpp", 0.1], 3), round(real["transunet", 0.1], 3)}
    assert f"(test Dice {real['unet', 0.1]:.3f} against {others.pop():.3f} for both others)" in text and not others
    assert f"UNet++ at 100 % ({real['unetpp', 1.0]:.3f})" in text
    verdicts = pd.read_csv(REAL / "comparisons.csv").query("metric == 'dice' and fraction == 0.1")
    verdict = verdicts.set_index(["model_a", "model_b"])["verdict"]
    assert verdict["unet", "unetpp"] == "unet better" and verdict["transunet", "unet"] == "no clear difference"
    assert "UNet's over UNet++ at 10 % is; its lead over TransUNet there is not clear" in " ".join(text.split())


@pytest.mark.skipif(not (DEMO / "03_unetpp_transunet.ipynb").is_file(), reason="no published demo notebooks")
def test_03_attention_reading_matches_the_published_demo():
    """'most of it went to the border and corner tokens': the published demo's attention table says so."""
    text = " ".join(_markdown(NB03).split())
    assert "in the published demo run (`results/demo_notebooks/`) most of it went to the **border and corner tokens**" in text
    printed = _output(DEMO / "03_unetpp_transunet.ipynb", "c20b")  # a wide table, printed in two blocks
    rows = {}
    for line in printed.splitlines():
        if line.startswith(("border tokens", "corner tokens")):
            rows.setdefault(line[:13], []).extend(float(w) for w in line[13:].split() if w != "\\")
    (_, _, border_share, _), (_, _, _, corner_times_even) = rows["border tokens"], rows["corner tokens"]
    assert border_share > 0.5 and corner_times_even > 1  # most of the attention; corners above their even share


@pytest.mark.skipif(not (REAL / "notebooks").is_dir(), reason="no published real-data notebooks")
def test_03_exercise_4_answer_matches_the_published_pruning_tables():
    text = _markdown(NB03)
    demo_pattern = r"demo run `L2` lost ([\d.]+) \(([\d.]+) against ([\d.]+)\) at (\d+) %"
    for path, pattern in ((DEMO, demo_pattern),
                          (REAL / "notebooks", r"128 px it lost ([\d.]+) \(([\d.]+) against ([\d.]+)\) at (\d+) %")):
        published = _output(path / "03_unetpp_transunet.ipynb", "c22") + _output(path / "03_unetpp_transunet.ipynb", "c22t")
        rows = _table_rows(published, r"L\d")
        l2, l4 = rows["L2"], rows["L4"]
        numbers = [float(x) for x in re.search(pattern, text).groups()]
        digits = 3 if path == DEMO else 2  # the loss: 0.036 on the demo run, 0.07 on the real data
        assert numbers == [round(l4[0] - l2[0], digits), round(l2[0], 3), round(l4[0], 3),
                           round(100 * l2[1] / l4[1])]


@pytest.mark.skipif(not (REAL / "notebooks").is_dir(), reason="no published real-data notebooks")
def test_time_claims_are_estimates_or_printed():
    """No measured minutes in 02's or 03's text (the training cell prints them); what is left is labelled an estimate."""
    for path in (NB02, NB03):
        for paragraph in _markdown(path).split("\n\n"):
            for found in re.finditer(r"\d+ (?:min|minutes|hours?)\b", paragraph):
                assert "estimate" in paragraph, f"{path.name}: {found.group(0)!r} is neither printed nor an estimate"
    training = next(c for c in json.loads(NB02.read_text())["cells"] if "live.train(" in "".join(c["source"]))
    assert "train_seconds'].sum() / 60" in "".join(training["source"])  # the published 59 min would print as such
    published = _output(REAL / "notebooks" / "02_unet.ipynb", "c20")
    seconds = [float(line.split()[-2]) for line in published.splitlines()[-4:]]
    assert round(sum(seconds) / 60) == 59  # what the old text called 33 min


def test_references_cite_what_each_notebook_uses():
    wanted = {NB02: ("1505.04597", "1711.05101", "1902.03368", "1803.10417"),
              NB03: ("1505.04597", "1807.10165", "2102.04306", "1512.03385", "2010.11929", "1711.05101",
                     "1902.03368", "1803.10417")}
    for path, ids in wanted.items():
        last = "".join(json.loads(path.read_text())["cells"][-1]["source"])
        assert "## References" in last and "## Summary" in last
        assert not [i for i in ids if f"https://arxiv.org/abs/{i}" not in last], path.name


def test_overlay_colours_named_in_the_text_are_the_palettes():
    for path in (NB02, NB03):
        text = _markdown(path)
        assert "green" not in text and "magenta" not in text, path.name
    assert inference.PALETTE["truth"][2] > inference.PALETTE["truth"][0] and inference.PALETTE["prediction"] == (230, 159, 0)


def test_02_augmentation_and_profile_numbers_are_the_kits():
    text, loaders = _markdown(NB02), (ROOT / "helpers" / "data" / "loaders.py").read_text()
    assert "(±6 % shift, ±10 % scale, ±15°)" in text
    assert "A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-15, 15)" in loaders
    from helpers.profiles import FRACTIONS, PROFILES

    assert FRACTIONS == (0.1, 0.25, 0.5, 1.0) and "10, 25, 50 and 100 %" in text
    assert {p.image_size for p in PROFILES.values()} == {64, 128, 256} and "the 64, 128 and 256 px of the profiles" in text
    sizes = model_table([("unet", n) for n in ("small", "cpu")], 256).set_index("config")["GFLOPs"]
    assert sizes["cpu"] / sizes["small"] == pytest.approx(0.25, abs=0.01) and "`cpu` quarters it again" in text


def test_03_transunet_numbers_are_its_configs():
    from helpers.models.transunet import TRANSUNET_CONFIGS

    text, paper, cpu = _markdown(NB03), TRANSUNET_CONFIGS["paper"], TRANSUNET_CONFIGS["cpu"]
    assert (paper.hidden_size, paper.num_layers, paper.num_heads, paper.mlp_dim) == (768, 12, 12, 3072)
    assert "embedded to 768 numbers" in text and "**12 Transformer layers** (12 heads, MLP 3072)" in text
    assert paper.decoder_channels == (256, 128, 64, 16) and "(256 → 128 → 64 → 16 channels)" in text
    assert (cpu.num_layers, cpu.hidden_size) == (4, 128) and "4-layer, 128-wide Transformer" in text
    tokens = layer_shapes(build_model("transunet", "tiny"), 64).set_index("block").loc["transformer", "output shape"]
    assert tokens[1] == 4 * 4 and "4 × 4 at 64 px, 16 × 16\nat 256 px" in text


def test_03_the_resnet34_download_size():
    from torchvision.models import resnet34

    megabytes = sum(p.numel() for p in resnet34().parameters()) * 4 / 2 ** 20  # fp32 weights, in MB of 2**20 bytes
    assert round(megabytes) in (83, 84) and "about 83 MB" in _markdown(NB03)
