"""The helpers behind the notebooks' teaching cells: shapes, predictions, pruning, and the shared set-up of 02/03."""
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from helpers.evaluation import inference
from helpers.models import build_model
from helpers.models.summary import layer_shapes
from helpers.profiles import resolve_config
from helpers.reporting import figures
from helpers.training import grid, live, runs
from tests.builders import Brightness


def test_layer_shapes_follow_the_unet_down_and_up():
    table = layer_shapes(build_model("unet", "tiny"), 64)
    assert list(table["block"]) == ["inc", "downs.0", "downs.1", "downs.2", "downs.3", "ups.0", "ups.1", "ups.2",
                                    "ups.3", "head"]
    sides = [shape[-1] for shape in table["output shape"]]
    assert sides == [64, 32, 16, 8, 4, 8, 16, 32, 64, 64]
    assert table["params"].sum() == sum(p.numel() for p in build_model("unet", "tiny").parameters())


def test_layer_shapes_list_unetpp_nodes_in_computation_order_and_transunet_tokens():
    nodes = layer_shapes(build_model("unetpp", "tiny", deep_supervision=True), 64)
    order = [b for b in nodes["block"] if b.startswith("x_")]
    assert order[:6] == ["x_0_0", "x_1_0", "x_0_1", "x_2_0", "x_1_1", "x_0_2"] and len(order) == 15
    tokens = layer_shapes(build_model("transunet", "tiny"), 64).set_index("block").loc["transformer", "output shape"]
    assert tokens[:2] == (1, (64 // 16) ** 2)  # one token per position of the 1/16 map
    with pytest.raises(ValueError, match="multiples of 16"):
        layer_shapes(build_model("unet", "tiny"), 100)


def test_prediction_grid_has_a_row_per_model_and_each_images_dice(tiny):
    fig = figures.prediction_grid({"a": Brightness(), "b": Brightness(scale=1.0)}, tiny, split="val", count=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert all(ax.get_title().startswith("Dice ") for ax in fig.axes)
    assert [fig.axes[0].get_ylabel(), fig.axes[3].get_ylabel()] == ["a", "b"]


def test_pruned_copies_cut_unetpp_at_every_depth_and_leave_the_model_whole():
    torch.manual_seed(0)
    model = build_model("unetpp", "tiny", deep_supervision=True).eval()
    model.prune_depth = 2
    copies = inference.pruned_copies(model)
    assert list(copies) == ["L1", "L2", "L3", "L4"] and model.prune_depth == 2  # the model is left as it was
    assert [c.prune_depth for c in copies.values()] == [1, 2, 3, None] and all(c is not model for c in copies.values())
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outs = {name: net(images) for name, net in copies.items()}
    assert all(o.shape == (2, 1, 32, 32) for o in outs.values())
    assert not torch.equal(outs["L1"], outs["L4"])


def test_pruning_table_scores_every_depth(tiny):
    model = build_model("unetpp", "tiny", deep_supervision=True).eval()
    table = inference.pruning_table(model, tiny, "val")
    assert list(table["depth"]) == ["L1", "L2", "L3", "L4"]
    assert table["val_dice"].between(0, 1).all() and (table["ms_per_image"] > 0).all()


def test_the_shared_training_cell_trains_with_live_curves_and_describes_itself(tiny, results):
    config = resolve_config("smoke", image_size=32, split_seed=0, models="unet", fractions="1.0", batch_size=4)
    text = grid.describe(config)
    assert "profile smoke" in text and "unet 'tiny'" in text and "32 px" in text and "fractions [1.0]" in text
    table = live.train(config, tiny)
    assert list(table["status"]) == ["trained"] and runs.has_checkpoint(table["run_dir"].iloc[0])
    assert np.isfinite(table["best_val_dice"].iloc[0])


def test_transunet_attention_rows_sum_to_one_and_the_map_marks_the_lesion_token(tiny):
    torch.manual_seed(0)
    model = build_model("transunet", "tiny").eval()
    row = tiny.indices("val")[0]
    weights = figures.attention_weights(model, tiny.images[row])
    assert weights.shape == (4, 4) and np.allclose(weights.sum(1), 1, atol=1e-5)  # 32 px: a 2 × 2 token grid
    mask = np.zeros((32, 32), np.uint8)
    mask[20:28, 4:12] = 1  # a lesion in the lower-left token of the 2 × 2 grid (16 px each)
    fig = figures.attention_map(model, tiny.images[row], mask)
    assert len(fig.axes) == 3 and "query token" in fig.axes[0].get_title()  # image, attention, colour bar
    assert fig.axes[0].patches[0].get_xy() == (0.0, 16.0) and "layer 2" in fig.axes[1].get_title()


def test_the_unet_diagram_has_a_box_per_block_and_a_skip_per_level():
    fig = figures.unet_diagram(build_model("unet", "tiny"), 64)
    ax = fig.axes[0]
    assert len(ax.patches) == 9  # inc + 4 downs + 4 ups
    labels = [t.get_text() for t in ax.texts]
    assert "64 ch\n4×4" in labels and labels.count("4 ch\n64×64") == 2  # the bottleneck; the top level twice
    assert sum(1 for child in ax.get_children() if type(child).__name__ == "Annotation") == 4  # four skips


def test_prediction_grid_without_models_says_so(tiny):
    assert "No trained model" in figures.prediction_grid({}, tiny)
